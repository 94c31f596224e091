// The GPU bench's rows: each op checked against the contract on every rank
// driven here, then timed in graph replays against its baseline.
#pragma once

#include "tools/bench/gpu_job.hpp"
#include "tools/bench/options.hpp"

#include <cstdint>
#include <vector>

namespace tpcoll::bench::gpu {

enum class GatherBaseline { kRoofline, kFlatGatherThenConcat };

// The all-reduce, checked bit for bit against the contract (rank order,
// fp32 accumulation) by one-shot and two-shot on every rank, then timed
// against the copy roofline of the bytes it moves; with --all-algos every
// candidate forced too.
Row run_all_reduce(GpuJob& job, const Options& o, DType dtype, std::size_t count, double copy_bw);

// The all-gather of `shape` along `dim`, checked byte for byte against the
// concatenation of every rank's input, then timed against either the copy
// roofline or what a framework does after a flat gather: our gather of the
// flat input into a scratch buffer, then one 2-D copy per rank into the
// concatenated layout, timed in the same way.
Row run_all_gather(GpuJob& job, DType dtype, const std::vector<std::int64_t>& shape, int dim, GatherBaseline baseline,
                   double copy_bw);

// The reduce-scatter, checked bit for bit against the contract on the host
// and against the same elements of our all-reduce on every rank, then timed
// against that all-reduce in the same run (the target: no slower).
Row run_reduce_scatter(GpuJob& job, DType dtype, std::size_t count);

// The fused op, checked bit for bit against the CPU kernels (all-reduce in
// rank order, then add + RMSNorm) on every rank, its deviation from fp64
// reported, then timed. One rank: against the copy roofline of the bytes it
// must move (x and residual read, out and residual_out written); more:
// against our all-reduce followed by our separate add + RMSNorm.
Row run_fused(GpuJob& job, DType dtype, std::size_t tokens, std::size_t hidden, double copy_bw,
              bool all_algos);

// The FP8 op, checked bit for bit against the CPU kernels (all-reduce, add +
// RMSNorm, quantisation) on every rank, with and without out, then timed
// without out (as it replaces the fused op in a model: the next GEMM reads
// the codes) beside the fused op without quantisation in the same run:
// speedup = fused / fused_fp8.
Row run_fused_fp8(GpuJob& job, DType dtype, std::size_t tokens, std::size_t hidden, Fp8Scaling scaling);

// The fused reduce-scatter, checked bit for bit against the CPU kernels'
// full fused op (rank r's rows) on every rank, then timed against our full
// fused op in the same run.
Row run_fused_reduce_scatter(GpuJob& job, DType dtype, std::size_t tokens, std::size_t hidden);

}  // namespace tpcoll::bench::gpu
