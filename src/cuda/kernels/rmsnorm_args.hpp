// What the add + RMSNorm kernels get (host and device code).
#pragma once

#include <cstddef>

namespace tpcoll::cuda {

// The most bytes of a row the add + RMSNorm kernels hold in shared memory.
inline constexpr std::size_t kMaxNormRowBytes = 160 * 1024;
// Threads per block of the row kernels (add + RMSNorm, fused).
inline constexpr int kNormMaxThreads = 512;

struct RmsNormArgs {
  const void* x;          // [rows, hidden]
  const void* residual;   // nullable
  const void* weight;     // [hidden]
  void* out;              // may alias x
  void* residual_out;     // may alias residual; unused without residual
  std::size_t rows;
  std::size_t hidden;
  float eps;
};

}  // namespace tpcoll::cuda
