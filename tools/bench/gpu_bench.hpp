// `tpcoll bench` on the CUDA backend: ranks as streams of one process on one
// or more GPUs; every configuration is checked bit for bit against the
// numeric contract, then timed as CUDA-graph replays of back-to-back ops.
#pragma once

#include "tools/bench/options.hpp"

namespace tpcoll::bench {

// True when a CUDA device is visible.
bool gpu_available();

// Runs the GPU bench in this process; returns the exit code.
int run_gpu(const Options& options);

}  // namespace tpcoll::bench
