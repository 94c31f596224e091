// Reduce-scatter: the first half of the two-shot all-reduce. Rank r owns
// share r of the input (elements [r * share, (r + 1) * share)); every rank
// pushes share p of its input to rank p, which reduces it in rank order into
// its output. A step takes the same piece of every share, so a rank's
// staging for one sender holds one piece. In place, out is this rank's own
// share of the input, which only this rank reads (each element before it
// is written).
//
// Small shares travel in low-latency units instead (low_latency.cuh), in one
// step, as the small all-reduce does; the smallest on the all-reduce's grid.
#pragma once

#include "cuda/kernels/all_reduce.cuh"
#include "cuda/kernels/low_latency.cuh"

namespace tpcoll::cuda {

// One step: Chunk's in and out point at the step's piece of share 0 of the
// input and at its place in the output; share p's piece lies a.share
// elements further per rank. Pieces are whole vectors: the 16-byte kernel
// runs only where a share is (so its last piece is too), and full pieces are
// 64-byte multiples.
template <typename E, int kBytes, typename Protocol>
__device__ bool reduce_scatter_step(const ReduceScatterArgs& a, Protocol& proto, const Chunk& c) {
  using V = Vec<E, kBytes>;
  const Range mine = split_clipped(c.full_vectors, c.count / V::kLanes, gridDim.x, blockIdx.x);
  const auto piece = [&](int owner) {
    return reinterpret_cast<const V*>(static_cast<const typename E::Storage*>(c.in) + owner * a.share);
  };

  for (int p = 0; p < a.world; ++p) {
    if (p == a.rank) continue;
    const V* src = piece(p);
    V* dst = buffer_at<V>(a, p, a.layout.recv(proto.slot(), a.rank));
    pipelined(mine, [&](std::size_t i) { return src[i]; }, [&](std::size_t i, const V& v) { dst[i] = v; });
  }
  proto.raise(&Signals::arrived);
  if (!proto.await(&Signals::arrived)) return false;

  const auto source = [&](int r) {
    return r == a.rank ? piece(a.rank) : buffer_at<const V>(a, a.rank, a.layout.recv(proto.slot(), r));
  };
  V* out = static_cast<V*>(c.out);
  pipelined(
      mine, [&](std::size_t i) { return reduce_ranks<E, kBytes>(source, a.world, i); },
      [&](std::size_t i, const V& v) { out[i] = v; });
  return true;
}

template <typename E, int kBytes, Scope kScope>
__global__ void __launch_bounds__(kThreads) reduce_scatter_kernel(const ReduceScatterArgs a) {
  using S = typename E::Storage;
  wait_for_previous_kernel();
  Protocol<kScope> proto(a);
  if (blockIdx.x == 0 && threadIdx.x == 0) proto.publish_call();
  const std::size_t steps = (a.share + a.piece_count - 1) / a.piece_count;
  for (std::size_t step = 0; step < steps; ++step) {
    proto.begin_step(step);
    const std::size_t first = step * a.piece_count;
    const Chunk c{static_cast<const S*>(a.in) + first, static_cast<S*>(a.out) + first,
                  min(a.piece_count, a.share - first), a.piece_count / Vec<E, kBytes>::kLanes, /*has_tail=*/false};
    if (!reduce_scatter_step<E, kBytes>(a, proto, c)) break;  // reported; the communicator is unusable from here
  }
  allow_next_kernel();
  proto.finish(steps);
}

// The whole op in one step of low-latency units, for inputs of up to a unit
// per thread of the all-reduce's grid (the latency regime), laid out as the
// small all-reduce: thread j holds unit j of the whole input, loads it
// before the sequence number, and sends it to the share's owner or, in this
// rank's own share, reduces it from every peer's copy. Each thread's path is
// the all-reduce's with one store instead of n - 1. (Shares are whole 16-byte
// vectors and both buffers 16-byte aligned, so units never straddle two
// shares.) On an H100 this took 1 KiB at 2 ranks from 2.40 to 1.76 us; at
// 256 KiB, 4 units a thread, it was 0.7 us slower than the kernel below
// (h100-s7-reduce-scatter-ab.txt).
template <typename E, Scope kScope>
__global__ void __launch_bounds__(kThreads) low_latency_reduce_scatter_by_input_unit(const ReduceScatterArgs a) {
  using S = typename E::Storage;
  wait_for_previous_kernel();
  const std::size_t share_bytes = a.share * sizeof(S), share_units = share_bytes / 8;
  const Range mine = split(share_units * a.world, gridDim.x, blockIdx.x);
  const auto owner = [&](std::size_t j) { return static_cast<int>(j / share_units); };
  const auto unit = [&](std::size_t j) { return static_cast<const uint2*>(a.in)[j]; };
  const std::size_t first = mine.lo + threadIdx.x;
  const uint2 first_unit = first < mine.hi ? unit(first) : uint2{0, 0};
  const auto held = [&](std::size_t j) { return j == first ? first_unit : unit(j); };
  const std::size_t own_first = static_cast<std::size_t>(a.rank) * share_units;
  Protocol<kScope> proto(a);
  // The kernel's first thread may only send; the one that reduces this
  // rank's first unit waits whenever any thread does.
  proto.announce_from_here(first == own_first);
  proto.begin_step(0);
  const std::uint32_t flag = low_latency_flag(proto.seq(), proto.call_tag());

  for (std::size_t j = first; j < mine.hi; j += blockDim.x) {
    const int p = owner(j);
    if (p == a.rank) continue;
    uint4* dst = buffer_at<uint4>(a, p, a.layout.low_latency(proto.slot(), a.rank));
    store_unit(dst + (j - p * share_units), held(j), flag);
  }
  std::uint32_t failure = 0;
  const auto own_unit = [&](std::size_t i) { return held(own_first + i); };
  for (std::size_t j = first; j < mine.hi; j += blockDim.x)
    if (owner(j) == a.rank && !reduce_unit<E>(a, proto, j - own_first, flag, own_unit, a.out, share_bytes, failure))
      break;
  if (failure) proto.report(failure);
  allow_next_kernel();
  proto.finish(1);
}

// The same for larger inputs, a thread per unit of a share: thread i sends
// unit i of every peer's share to that peer and reduces unit i of its own,
// so every thread reduces and the grid covers a share, not the input.
template <typename E, Scope kScope>
__global__ void __launch_bounds__(kThreads) low_latency_reduce_scatter_by_share_unit(const ReduceScatterArgs a) {
  using S = typename E::Storage;
  wait_for_previous_kernel();
  const std::size_t bytes = a.share * sizeof(S);
  const Range mine = split(bytes / 8, gridDim.x, blockIdx.x);
  const auto share = [&](int owner) { return static_cast<const uint2*>(a.in) + owner * (bytes / 8); };
  Protocol<kScope> proto(a);
  proto.begin_step(0);
  const std::uint32_t flag = low_latency_flag(proto.seq(), proto.call_tag());

  for (int p = 0; p < a.world; ++p) {
    if (p == a.rank) continue;
    uint4* dst = buffer_at<uint4>(a, p, a.layout.low_latency(proto.slot(), a.rank));
    for (std::size_t i = mine.lo + threadIdx.x; i < mine.hi; i += blockDim.x) store_unit(dst + i, share(p)[i], flag);
  }
  // (Loading every share's first unit before the sequence number, as the
  // all-reduce loads its own, measured slower here at 2 ranks on an H100 and
  // faster at 4: h100-s6-reduce-scatter-preload-ab.txt.)
  std::uint32_t failure = 0;
  const auto own_unit = [&](std::size_t i) { return share(a.rank)[i]; };
  for (std::size_t i = mine.lo + threadIdx.x; i < mine.hi; i += blockDim.x)
    if (!reduce_unit<E>(a, proto, i, flag, own_unit, a.out, bytes, failure)) break;
  if (failure) proto.report(failure);
  allow_next_kernel();
  proto.finish(1);
}

}  // namespace tpcoll::cuda
