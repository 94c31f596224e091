// Limits of the row kernels (add + RMSNorm, fused), for host and device code.
#pragma once

#include "common/numerics.hpp"
#include "common/rmsnorm_rows.hpp"

#include <cstddef>

namespace tpcoll::cuda {

// The most bytes of a row the add + RMSNorm kernels hold in shared memory.
inline constexpr std::size_t kMaxNormRowBytes = 160 * 1024;
// Threads per block of the row kernels (add + RMSNorm, fused).
inline constexpr int kNormMaxThreads = 512;

// The held-row kernels (add + RMSNorm and the fused one-shot) keep a row in
// registers: a block of kHeldThreads threads, each with up to kMaxHeldGroups
// 8-element groups (kernels/rmsnorm.cuh says why kHeldThreads is the number
// of partials).
inline constexpr int kHeldThreads = numerics::kNormPartials;
inline constexpr int kMaxHeldGroups = 8;
inline constexpr std::size_t kMaxHeldHidden = std::size_t{kHeldThreads} * kMaxHeldGroups * numerics::kNormGroup;

// Groups a thread of the one-shot fused kernel holds (rows of up to 4096
// elements). Measured on an H100 (2 ranks sharing it, bf16, 2026-11-25): with
// 2 the kernel beats our all-reduce + add + RMSNorm by 1.22-1.52x at 1-32
// tokens; with 4 (hidden 5120-8192) it lost at 1 token (0.93-0.95x), so those
// rows take the unfused path.
inline constexpr int kFusedGroupsPerThread = 2;

// Groups a thread of the held-row kernels holds for a row of `hidden`
// elements: the instantiations are 2, 4 and 8.
constexpr int held_groups_per_thread(std::size_t hidden) {
  const std::size_t groups = hidden / numerics::kNormGroup;
  return groups <= 2 * std::size_t{kHeldThreads} ? 2 : groups <= 4 * std::size_t{kHeldThreads} ? 4 : kMaxHeldGroups;
}

}  // namespace tpcoll::cuda
