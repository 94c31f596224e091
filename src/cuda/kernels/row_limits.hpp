// Limits of the row kernels (add + RMSNorm, fused), for host and device code.
#pragma once

#include "common/rmsnorm_rows.hpp"

#include <cstddef>

namespace tpcoll::cuda {

// The most bytes of a row the add + RMSNorm kernels hold in shared memory.
inline constexpr std::size_t kMaxNormRowBytes = 160 * 1024;
// Threads per block of the row kernels (add + RMSNorm, fused).
inline constexpr int kNormMaxThreads = 512;

}  // namespace tpcoll::cuda
