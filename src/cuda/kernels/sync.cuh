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
// one has said so (or ended); that kernel still waits in
// wait_for_previous_kernel for this one to end before it reads anything.
// Every thread of a block calls it, last, once the block's outputs are
// written: the instruction counts for the whole block as soon as one thread
// runs it, hence the barrier. So a kernel launched early never runs beside a
// block of ours that still waits for peers (parked on the GPU, it could keep
// a peer's block off a GPU they share: before the barrier, one idle thread
// of the low-latency kernels let the next kernel launch at once, and ranks
// sharing a GPU waited for each other until the timeout), nor beside one
// that still writes its output.
__device__ __forceinline__ void allow_next_kernel() {
  __syncthreads();
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
