// Low-latency units, and the one-shot all-reduce for small messages built on
// them (the all-gather and the fused kernel use them too). Every 16-byte
// store into a peer carries 8 data bytes and the step's 32-bit flag twice
// ({data, flag, data, flag}, each 8-byte half written at once), so a reader
// polls the data itself: no flag after the data, no fence, no reset.
//
// The flag mixes the step number and the call tag. A peer at the same step
// but another call therefore never produces our flag, so its data is never
// taken. One thread of a rank (its first, or one the kernel names that
// waits whenever any does), once it has waited a while for its data (a peer
// at another call never sends our flag, so that thread waits too),
// publishes its call record and announces its call in the peers' arrival
// words (step and tag), and every waiting reader checks the peer's
// word now and then, so two ranks at different calls both report the
// mismatch, naming both calls, instead of timing out; the fast path, and a
// wait for a peer that is merely late, pay for none of it. Stale data (from
// step s-2 or older, the last use of this slot) could pass only if two
// steps' mixed flags collide in 32 bits.
#pragma once

#include "cuda/kernels/all_reduce.cuh"

namespace tpcoll::cuda {

__device__ __forceinline__ std::uint32_t low_latency_flag(std::uint64_t step, std::uint32_t tag) {
  std::uint64_t x = step * 0x9e3779b97f4a7c15ull;  // splitmix64's finaliser: a bijection
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  x ^= x >> 31;
  return static_cast<std::uint32_t>(x) ^ tag;
}

__device__ __forceinline__ void store_unit(uint4* addr, uint2 data, std::uint32_t flag) {
  asm volatile("st.volatile.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(addr), "r"(data.x), "r"(flag), "r"(data.y),
               "r"(flag)
               : "memory");
}

__device__ __forceinline__ uint4 load_unit(const uint4* addr) {
  uint4 v;
  asm volatile("ld.volatile.global.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(addr)
               : "memory");
  return v;
}

// Unit i (8 bytes) of a message of `bytes` bytes; zero past the end.
__device__ __forceinline__ uint2 read_unit(const void* base, std::size_t i, std::size_t bytes) {
  if ((i + 1) * 8 <= bytes) return static_cast<const uint2*>(base)[i];
  uint2 v{0, 0};
  for (std::size_t b = i * 8; b < bytes; ++b)
    reinterpret_cast<unsigned char*>(&v)[b - i * 8] = static_cast<const unsigned char*>(base)[b];
  return v;
}

__device__ __forceinline__ void write_unit(void* base, std::size_t i, std::size_t bytes, uint2 v) {
  if ((i + 1) * 8 <= bytes) {
    static_cast<uint2*>(base)[i] = v;
    return;
  }
  for (std::size_t b = i * 8; b < bytes; ++b)
    static_cast<unsigned char*>(base)[b] = reinterpret_cast<const unsigned char*>(&v)[b - i * 8];
}

// Writes this rank's (step, call tag) into every peer's arrival word for it,
// after its call record: only ranks that wait need them, so the fast path
// writes neither.
template <typename Protocol>
__device__ __forceinline__ void announce_call(const PeerArgs& a, const Protocol& proto) {
  proto.publish_call();
  __threadfence();  // the record before the announcement
  for (int p = 0; p < a.world; ++p)
    if (p != a.rank)
      *reinterpret_cast<volatile std::uint64_t*>(&proto.signals(p)->arrived[0][a.rank]) = proto.flag();
}

__device__ __forceinline__ bool carries(const uint4& u, std::uint32_t flag) { return u.y == flag && u.w == flag; }

// Polls the units src[0], src[stride], ... until each carries `flag`; 0, or
// kFail* | peer if the peer runs another call at this step or does not arrive
// in time, or kFailAborted | rank if a rank aborted the communicator. Each
// poll reloads every unit still missing at once (the peer's stores land
// together, so one round trip a poll, not one a unit); the abort word, the
// peer's arrival word and the clock are read every kCheckEvery polls, so that
// a poll is not a chain of two round trips, and the rank's first thread
// announces its call at the first of those checks (announce_call's fence
// would delay a wait that ends sooner).
template <int kCount, typename Protocol>
__device__ __forceinline__ std::uint32_t await_units(const PeerArgs& a, const Protocol& proto, const uint4* src,
                                                     std::size_t stride, std::uint32_t flag, int peer,
                                                     uint4 (&u)[kCount]) {
  constexpr unsigned kCheckEvery = 32;
  // The arrival word orders nothing here: a relaxed read suffices.
  const volatile std::uint64_t* arrival = &proto.signals(a.rank)->arrived[0][peer];
  std::uint64_t start = 0;  // the clock starts at the first check, off the fast path
  for (unsigned polls = 1;; ++polls) {
#pragma unroll
    for (int k = 0; k < kCount; ++k)
      if (!carries(u[k], flag)) u[k] = load_unit(src + k * stride);
    bool all = true;
#pragma unroll
    for (int k = 0; k < kCount; ++k) all = all && carries(u[k], flag);
    if (all) return 0;
    if (polls % kCheckEvery != 0) continue;
    if (polls == kCheckEvery && proto.announces()) announce_call(a, proto);
    if (const std::uint32_t aborted = proto.aborted()) return aborted;
    const std::uint64_t seen = *arrival;
    if ((seen >> kCallBits) == proto.seq() && (seen & ((1u << kCallBits) - 1)) != proto.call_tag())
      return kFailMismatch | peer;
    const std::uint64_t now = global_time_ns();
    if (start == 0) start = now;
    if (now - start > a.timeout_ns) return kFailTimeout | peer;
  }
}

// Sends units [first, hi) (this thread's: first, first + blockDim.x, ...) of
// this rank's message to every peer, each with the step's flag.
template <typename Protocol, typename Unit>
__device__ __forceinline__ void push_units(const PeerArgs& a, const Protocol& proto, std::size_t first, std::size_t hi,
                                           std::uint32_t flag, Unit&& unit) {
  for (int p = 0; p < a.world; ++p) {
    if (p == a.rank) continue;
    uint4* dst = buffer_at<uint4>(a, p, a.layout.low_latency(proto.slot(), a.rank));
    for (std::size_t i = first; i < hi; i += blockDim.x) store_unit(dst + i, unit(i), flag);
  }
}

// Sends units i, i + stride, ..., i + (kCount - 1) * stride of this rank's
// message, held by this thread, to every peer, each with the step's flag.
template <int kCount, typename Protocol>
__device__ __forceinline__ void push_held_units(const PeerArgs& a, const Protocol& proto, std::size_t i,
                                                std::size_t stride, const uint2 (&units)[kCount], std::uint32_t flag) {
  for (int p = 0; p < a.world; ++p) {
    if (p == a.rank) continue;
    uint4* dst = buffer_at<uint4>(a, p, a.layout.low_latency(proto.slot(), a.rank)) + i;
#pragma unroll
    for (int k = 0; k < kCount; ++k) store_unit(dst + k * stride, units[k], flag);
  }
}

// Units i, i + stride, ..., i + (kCount - 1) * stride of peer `peer`'s
// message once they carry `flag`: all loads are issued before any is
// checked; if one is not there at the first look, the thread waits for the
// missing ones (await_units). A failure lands in `failure`.
template <int kCount, typename Protocol>
__device__ __forceinline__ void receive_units(const PeerArgs& a, const Protocol& proto, int peer, std::size_t i,
                                              std::size_t stride, std::uint32_t flag, std::uint32_t& failure,
                                              uint2 (&out)[kCount]) {
  const uint4* src = buffer_at<const uint4>(a, a.rank, a.layout.low_latency(proto.slot(), peer)) + i;
  uint4 u[kCount];
#pragma unroll
  for (int k = 0; k < kCount; ++k) u[k] = load_unit(src + k * stride);
  bool all = true;
#pragma unroll
  for (int k = 0; k < kCount; ++k) all = all && carries(u[k], flag);
  if (!all && failure == 0) failure = await_units(a, proto, src, stride, flag, peer, u);
#pragma unroll
  for (int k = 0; k < kCount; ++k) out[k] = make_uint2(u[k].x, u[k].z);
}

template <typename Protocol>
__device__ __forceinline__ uint2 receive_unit(const PeerArgs& a, const Protocol& proto, int peer, std::size_t i,
                                              std::uint32_t flag, std::uint32_t& failure) {
  uint2 out[1];
  receive_units<1>(a, proto, peer, i, 1, flag, failure, out);
  return out[0];
}

// Unit i of the sum over ranks 0..n-1, in order (fp32, one rounding): this
// rank's own unit (own(i)) and each peer's as it arrives, written to unit i
// of `out`, a message of `bytes` bytes. False, with `failure` set, if a peer
// failed (nothing is written).
template <typename E, typename Protocol, typename Own>
__device__ __forceinline__ bool reduce_unit(const PeerArgs& a, const Protocol& proto, std::size_t i, std::uint32_t flag,
                                            Own&& own, void* out, std::size_t bytes, std::uint32_t& failure) {
  using S = typename E::Storage;
  constexpr int kLanes = 8 / sizeof(S);
  float acc[kLanes];
  for (int r = 0; r < a.world && failure == 0; ++r) {
    const uint2 data = r == a.rank ? own(i) : receive_unit(a, proto, r, i, flag, failure);
    S lanes[kLanes];
    memcpy(lanes, &data, sizeof data);
#pragma unroll
    for (int l = 0; l < kLanes; ++l) acc[l] = r == 0 ? E::load(lanes[l]) : __fadd_rn(acc[l], E::load(lanes[l]));
  }
  if (failure) return false;
  S result[kLanes];
  narrow<E>(acc, result);
  uint2 packed;
  memcpy(&packed, result, sizeof packed);
  write_unit(out, i, bytes, packed);
  return true;
}

template <typename E, Scope kScope>
__global__ void __launch_bounds__(kThreads) low_latency_all_reduce(const AllReduceArgs a) {
  using S = typename E::Storage;
  wait_for_previous_kernel();
  const std::size_t bytes = a.count * sizeof(S);
  const Range mine = split((bytes + 7) / 8, gridDim.x, blockIdx.x);
  // Usually one unit per thread: its load is issued before the sequence
  // number's, so the two latencies overlap.
  const std::size_t first = mine.lo + threadIdx.x;
  const uint2 first_unit = first < mine.hi ? read_unit(a.in, first, bytes) : uint2{0, 0};
  const auto own_unit = [&](std::size_t i) { return i == first ? first_unit : read_unit(a.in, i, bytes); };
  Protocol<kScope> proto(a);
  proto.begin_step(0);
  const std::uint32_t flag = low_latency_flag(proto.seq(), proto.call_tag());

  push_units(a, proto, first, mine.hi, flag, own_unit);
  std::uint32_t failure = 0;
  for (std::size_t i = first; i < mine.hi; i += blockDim.x)
    if (!reduce_unit<E>(a, proto, i, flag, own_unit, a.out, bytes, failure)) break;
  if (failure) proto.report(failure);
  allow_next_kernel();
  proto.finish(1);
}

}  // namespace tpcoll::cuda
