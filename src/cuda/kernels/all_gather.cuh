// All-gather kernels: every rank pushes its input to every peer's staging
// (one protocol step per chunk, as the one-shot all-reduce does) and writes
// its own part of the output; then it copies each peer's staged part
// straight into its place in the output, [outer, world, inner] bytes, so a
// gather along any dim needs no permute afterwards. Small messages travel in
// low-latency units instead, written into place as they arrive.
#pragma once

#include "cuda/kernels/all_reduce.cuh"
#include "cuda/kernels/low_latency.cuh"

#include <type_traits>

namespace tpcoll::cuda {

// The access word of a gather: 16, 4 or 1 bytes, as alignment allows.
template <int kWidth>
using GatherWord = std::conditional_t<kWidth == 16, uint4, std::conditional_t<kWidth == 4, std::uint32_t, unsigned char>>;

// Where byte j of rank r's input lands in the output. Row and column come
// from a 32-bit division whenever the input allows it (a 64-bit one costs
// several times more per word).
__device__ __forceinline__ std::size_t gathered_offset(const AllGatherArgs& a, int r, std::size_t j) {
  std::size_t row, col;
  if (a.bytes <= 0xffffffffu) {
    const auto j32 = static_cast<std::uint32_t>(j), inner32 = static_cast<std::uint32_t>(a.inner);
    row = j32 / inner32;
    col = j32 - static_cast<std::uint32_t>(row) * inner32;
  } else {
    row = j / a.inner;
    col = j % a.inner;
  }
  return (row * a.world + r) * a.inner + col;
}

template <typename T>
__device__ __forceinline__ T& gathered(const AllGatherArgs& a, int r, std::size_t j) {
  return *reinterpret_cast<T*>(static_cast<std::byte*>(a.out) + gathered_offset(a, r, j));
}

// kWidth divides inner, the chunk size and the buffers' alignment, so a word
// never straddles two rows.
template <int kWidth, Scope kScope>
__global__ void __launch_bounds__(kThreads) all_gather_kernel(const AllGatherArgs a) {
  using T = GatherWord<kWidth>;
  wait_for_previous_kernel();
  Protocol<kScope> proto(a);
  if (blockIdx.x == 0 && threadIdx.x == 0) proto.publish_call();
  const std::size_t steps = (a.bytes + a.chunk_bytes - 1) / a.chunk_bytes;
  const std::size_t full = a.chunk_bytes / kWidth;
  for (std::size_t step = 0; step < steps; ++step) {
    proto.begin_step(step);
    const std::size_t first = step * a.chunk_bytes;
    const std::size_t words = min(a.chunk_bytes, a.bytes - first) / kWidth;
    const Range mine = split_clipped(full, words, gridDim.x, blockIdx.x);
    const T* in = reinterpret_cast<const T*>(static_cast<const std::byte*>(a.in) + first);
    // Each input word is read once and stored to every peer and into place.
    pipelined(
        mine, [&](std::size_t i) { return in[i]; },
        [&](std::size_t i, const T& v) {
          for (int p = 0; p < a.world; ++p)
            if (p != a.rank) buffer_at<T>(a, p, a.layout.recv(proto.slot(), a.rank))[i] = v;
          gathered<T>(a, a.rank, first + i * kWidth) = v;
        });
    proto.raise(&Signals::arrived);
    if (!proto.await(&Signals::arrived)) break;  // reported; the communicator is unusable from here

    for (int r = 0; r < a.world; ++r) {
      if (r == a.rank) continue;
      const T* src = buffer_at<const T>(a, a.rank, a.layout.recv(proto.slot(), r));
      pipelined(
          mine, [&](std::size_t i) { return src[i]; },
          [&](std::size_t i, const T& v) { gathered<T>(a, r, first + i * kWidth) = v; });
    }
  }
  allow_next_kernel();
  proto.finish(steps);
}

// One step of 8-byte units; needs the input, the output and inner 8-byte
// aligned (so no unit straddles a row and the input has no partial unit).
template <Scope kScope>
__global__ void __launch_bounds__(kThreads) low_latency_all_gather(const AllGatherArgs a) {
  wait_for_previous_kernel();
  const Range mine = split(a.bytes / 8, gridDim.x, blockIdx.x);
  const auto* in = static_cast<const uint2*>(a.in);
  const std::size_t first = mine.lo + threadIdx.x;
  const uint2 first_unit = first < mine.hi ? in[first] : uint2{0, 0};  // issued before the sequence number's load
  const auto own_unit = [&](std::size_t i) { return i == first ? first_unit : in[i]; };
  Protocol<kScope> proto(a);
  proto.begin_step(0);
  const std::uint32_t flag = low_latency_flag(proto.seq(), proto.call_tag());

  push_units(a, proto, first, mine.hi, flag, own_unit);
  for (std::size_t i = first; i < mine.hi; i += blockDim.x) gathered<uint2>(a, a.rank, i * 8) = own_unit(i);

  std::uint32_t failure = 0;
  for (int r = 0; r < a.world && failure == 0; ++r) {
    if (r == a.rank) continue;
    for (std::size_t i = first; i < mine.hi && failure == 0; i += blockDim.x) {
      const uint2 data = receive_unit(a, proto, r, i, flag, failure);
      if (failure == 0) gathered<uint2>(a, r, i * 8) = data;
    }
  }
  if (failure) proto.report(failure);
  allow_next_kernel();
  proto.finish(1);
}

}  // namespace tpcoll::cuda
