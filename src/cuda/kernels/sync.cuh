// Signalling between ranks: release stores and acquire loads, and waits
// bounded by the global timer. The scope is the narrowest that covers every
// rank: the GPU when all ranks share one (processes included: scopes are
// about the device, not the process), else the system.
#pragma once

#include <cstdint>

namespace tpcoll::cuda {

enum class Scope { kGpu, kSystem };

template <Scope kScope>
__device__ __forceinline__ void store_release(std::uint64_t* addr, std::uint64_t value) {
  if constexpr (kScope == Scope::kGpu)
    asm volatile("st.release.gpu.global.u64 [%0], %1;" ::"l"(addr), "l"(value) : "memory");
  else
    asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(addr), "l"(value) : "memory");
}

template <Scope kScope>
__device__ __forceinline__ std::uint64_t load_acquire(const std::uint64_t* addr) {
  std::uint64_t value;
  if constexpr (kScope == Scope::kGpu)
    asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(value) : "l"(addr) : "memory");
  else
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
template <Scope kScope>
__device__ __forceinline__ std::uint64_t wait_at_least(const std::uint64_t* flag, std::uint64_t target,
                                                       std::uint64_t timeout_ns) {
  std::uint64_t seen = load_acquire<kScope>(flag);
  if (seen >= target) return seen;
  const std::uint64_t start = global_time_ns();
  while ((seen = load_acquire<kScope>(flag)) < target) {
    if (global_time_ns() - start > timeout_ns) return 0;
  }
  return seen;
}

}  // namespace tpcoll::cuda
