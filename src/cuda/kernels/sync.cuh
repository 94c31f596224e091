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

// Programmatic dependent launch (sm_90): a kernel launched with programmatic
// stream serialization may start while the previous kernel of its stream
// finishes; it must wait here before reading anything that kernel wrote
// (our inputs, our sequence number). Without that launch attribute the wait
// returns at once.
__device__ __forceinline__ void wait_for_previous_kernel() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Lets the next kernel of the stream start launching once every block of this
// one has said so (or ended). The first thread of a block to run it speaks
// for the whole block, so a kernel that waits for peers calls it only where
// every thread of the block has every peer's data for the op (after a
// barrier): then all peers' blocks of the op have been resident, and no
// kernel launched early, parked on the GPU until this one ends, can keep
// one of them off it. (Called by one idle thread sooner, it let a stream's
// next kernel fill the GPU while a peer sharing it had blocks still to
// start: both ranks then waited for each other until the timeout.)
__device__ __forceinline__ void allow_next_kernel() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ std::uint64_t global_time_ns() {
  std::uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Spins until *flag >= target (> 0) and returns the value seen; 0 if
// timeout_ns passed first or *stop became non-zero.
template <Scope kScope>
__device__ __forceinline__ std::uint64_t wait_at_least(const std::uint64_t* flag, std::uint64_t target,
                                                       std::uint64_t timeout_ns, const std::uint64_t* stop) {
  std::uint64_t seen = load_acquire<kScope>(flag);
  if (seen >= target) return seen;
  const std::uint64_t start = global_time_ns();
  while ((seen = load_acquire<kScope>(flag)) < target) {
    if (global_time_ns() - start > timeout_ns || *reinterpret_cast<const volatile std::uint64_t*>(stop) != 0) return 0;
  }
  return seen;
}

}  // namespace tpcoll::cuda
