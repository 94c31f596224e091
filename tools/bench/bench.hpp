// `tpcoll bench`: check, then time, every op x dtype x size on N ranks.
#pragma once

#include "tools/bench/options.hpp"

namespace tpcoll::bench {

// Launches the ranks (ourselves, or mpirun for --baseline mpi) when called
// from a shell, or runs this rank's share when started as one. argv is the
// original command line, replayed for the ranks. Returns the exit code.
int run(const Options& options, int argc, char** argv);

}  // namespace tpcoll::bench
