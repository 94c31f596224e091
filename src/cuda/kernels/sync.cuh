// Cross-GPU (and cross-process) signalling: release stores and acquire loads
// at system scope, and waits bounded by the global timer.
#pragma once

#include <cstdint>

namespace tpcoll::cuda {

__device__ __forceinline__ void store_release_sys(std::uint64_t* addr, std::uint64_t value) {
  asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(addr), "l"(value) : "memory");
}

__device__ __forceinline__ std::uint64_t load_acquire_sys(const std::uint64_t* addr) {
  std::uint64_t value;
  asm volatile("ld.acquire.sys.global.u64 %0, [%1];" : "=l"(value) : "l"(addr) : "memory");
  return value;
}

__device__ __forceinline__ std::uint64_t global_time_ns() {
  std::uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Spins until *flag >= target (> 0) and returns the value seen; 0 if
// timeout_ns passed first.
__device__ __forceinline__ std::uint64_t wait_at_least(const std::uint64_t* flag, std::uint64_t target,
                                                       std::uint64_t timeout_ns) {
  std::uint64_t seen = load_acquire_sys(flag);
  if (seen >= target) return seen;
  const std::uint64_t start = global_time_ns();
  while ((seen = load_acquire_sys(flag)) < target) {
    if (global_time_ns() - start > timeout_ns) return 0;
  }
  return seen;
}

}  // namespace tpcoll::cuda
