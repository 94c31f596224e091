// Host-side entry points into the kernels (compiled by nvcc in *.cu files).
#pragma once

#include "common/fp8_quantise.hpp"
#include "cuda/kernels/layout.cuh"
#include "cuda/kernels/row_limits.hpp"
#include "cuda/norm_launch.hpp"

#include <cuda_runtime.h>

#include <vector>

namespace tpcoll::cuda {

// Which all-reduce kernel runs, and how wide.
struct KernelChoice {
  tpcoll_algo_t algo;
  tpcoll_dtype_t dtype;
  bool vectorized;   // in and out are 16-byte aligned (chunks keep it)
  bool one_gpu;      // every rank is on this GPU: GPU-scope signals suffice
  bool low_latency;  // one-shot of at most kLowLatencyBytes, in flagged units
  int blocks;
  int threads = kThreads;
  bool early_launch = false;  // programmatic dependent launch (TPCOLL_CUDA_EARLY_LAUNCH)
  bool by_input_unit = false;  // low-latency reduce-scatter: a thread per unit of the input, not of a share
};

cudaError_t launch_all_reduce(const KernelChoice& choice, const AllReduceArgs& args, cudaStream_t stream);

// The reduce-scatter picks its kernel as the one-shot all-reduce does (algo unused).
cudaError_t launch_reduce_scatter(const KernelChoice& choice, const ReduceScatterArgs& args, cudaStream_t stream);

// Which all-gather kernel runs, and how wide.
struct GatherChoice {
  int width;         // bytes per access: 16, 4 or 1 (divides inner and both buffers' alignment)
  bool one_gpu;      // every rank is on this GPU: GPU-scope signals suffice
  bool low_latency;  // at most kLowLatencyBytes, 8-byte aligned, in flagged units
  int blocks;
  int threads;
  bool early_launch;  // programmatic dependent launch (TPCOLL_CUDA_EARLY_LAUNCH)
};

cudaError_t launch_all_gather(const GatherChoice& choice, const AllGatherArgs& args, cudaStream_t stream);

// The FP8 output of the fused op's out rows (common/fp8_quantise.hpp).
struct QuantiseRows {
  const void* out;  // [rows, hidden] of the op's dtype
  std::size_t rows;
  std::size_t hidden;
  fp8::Fp8Output fp8;
};
cudaError_t launch_quantise_fp8(tpcoll_dtype_t dtype, const QuantiseRows& args, bool early_launch,
                                cudaStream_t stream);

}  // namespace tpcoll::cuda

namespace tpcoll::cuda {

// Every kernel each launcher may pick, for load_kernels().
void list_all_reduce_kernels(std::vector<const void*>& kernels);
void list_reduce_scatter_kernels(std::vector<const void*>& kernels);
void list_all_gather_kernels(std::vector<const void*>& kernels);
void list_add_rmsnorm_kernels(std::vector<const void*>& kernels);
void list_fused_kernels(std::vector<const void*>& kernels);
void list_quantise_kernels(std::vector<const void*>& kernels);

// Loads every tpcoll kernel on the current device now. CUDA loads kernels
// lazily by default, and loading one waits for the kernels already running:
// had it happened at a first launch, that launch would wait for a rank's
// spinning kernel, whose peer the same host thread launches next (ranks as
// streams of one process), and neither would ever finish.
cudaError_t load_kernels();

// Which fused kernel runs, and how.
struct FusedChoice {
  bool two_shot;  // else the low-latency one-shot
  bool one_gpu;
  int blocks;
  int threads;               // two-shot (the one-shot's are kHeldThreads)
  std::size_t shared_bytes;  // two-shot: one row
  bool early_launch;
};

cudaError_t launch_fused(tpcoll_dtype_t dtype, const FusedChoice& choice, const FusedArgs& args, cudaStream_t stream);

// s = x + residual -> residual_out; out = s * rsqrt(mean(s^2) + eps) * weight.
cudaError_t launch_add_rmsnorm(tpcoll_dtype_t dtype, const RmsNormRows& args, const NormLaunch& launch,
                               cudaStream_t stream);

}  // namespace tpcoll::cuda
