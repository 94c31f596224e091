// One-shot and two-shot all-reduce kernels. One kernel per op and rank: it
// walks the message in chunks that fit the staging buffers (a chunk is one
// protocol step with its own sequence number), so an op never becomes a chain
// of launches that another rank's stream could be queued behind.
//
// Each block owns a fixed slice of every chunk (the same on every rank, since
// the launch shape is part of the plan), pushes its data to the peers that
// need it (posted stores; nobody waits on a remote load), raises one flag per
// peer, and waits only on flags in its own rank's memory. Reusing a slot at
// step s is safe because a peer's block raised its step s-1 flag (which this
// block waited for) only after it finished step s-2.
#pragma once

#include "cuda/kernels/layout.cuh"
#include "cuda/kernels/sync.cuh"
#include "cuda/kernels/vector.cuh"

namespace tpcoll::cuda {

struct Range {
  std::size_t lo, hi;
};

// Part `part` of `parts` equal parts of [0, n).
__device__ __forceinline__ Range split(std::size_t n, std::size_t parts, std::size_t part) {
  const std::size_t per = (n + parts - 1) / parts;
  const std::size_t lo = min(n, part * per);
  return {lo, min(n, lo + per)};
}

// One chunk of the op: a protocol step. Every step of a kernel divides its
// chunk among the blocks as if it were full (`full_vectors`), clipped to
// what it holds: a block then touches, in every step, only staging that it
// alone touched in the steps before, which is what its flags vouch for.
struct Chunk {
  const void* in;
  void* out;
  std::size_t count;         // elements
  std::size_t full_vectors;  // vectors of a full chunk of this kernel
  bool has_tail;             // the last chunk may end in a partial vector
};

// Part `part` of [0, full) in `parts` equal parts, clipped to [0, n).
__device__ __forceinline__ Range split_clipped(std::size_t full, std::size_t n, std::size_t parts, std::size_t part) {
  const Range r = split(full, parts, part);
  return {min(n, r.lo), min(n, r.hi)};
}

// The block whose part of a full chunk holds index i (for the tail).
__device__ __forceinline__ unsigned owner_block(std::size_t full, std::size_t i) {
  const std::size_t per = max(std::size_t{1}, (full + gridDim.x - 1) / gridDim.x);
  return static_cast<unsigned>(min(static_cast<std::size_t>(gridDim.x - 1), i / per));
}

// For every i in r (this thread's share: threadIdx.x, + blockDim.x, ...),
// store(i, load(i)), with kDepth loads in flight per thread before their
// stores: one 16-byte access at a time leaves HBM idle at one block per SM.
template <int kDepth = 4, typename Load, typename Store>
__device__ __forceinline__ void pipelined(Range r, Load&& load, Store&& store) {
  for (std::size_t base = r.lo + threadIdx.x; base < r.hi; base += kDepth * blockDim.x) {
    decltype(load(base)) v[kDepth];
#pragma unroll
    for (int k = 0; k < kDepth; ++k)
      if (base + k * blockDim.x < r.hi) v[k] = load(base + k * blockDim.x);
#pragma unroll
    for (int k = 0; k < kDepth; ++k)
      if (base + k * blockDim.x < r.hi) store(base + k * blockDim.x, v[k]);
  }
}

// `offset` bytes into rank `rank`'s buffer, as mapped in this process.
template <typename T>
__device__ __forceinline__ T* buffer_at(const PeerArgs& a, int rank, std::size_t offset) {
  return reinterpret_cast<T*>(a.buffers[rank] + offset);
}

// The protocol state of one kernel, shared by both algorithms.
template <Scope kScope>
class Protocol {
 public:
  __device__ explicit Protocol(const PeerArgs& a)
      : a_(a), state_(reinterpret_cast<RankState*>(a.buffers[a.rank] + BufferLayout::kState)) {
    base_ = state_->seq[blockIdx.x];  // written by the previous kernel on this stream
    seq_ = base_;
  }

  // Publishes this kernel's call for a peer that meets another one to name
  // it (one thread; before any flag or announcement that could lead a peer
  // to read it).
  __device__ void publish_call() const {
    CallSignature current = a_.call;
    current.step = base_ + 1;
    signals(a_.rank)->current_call = current;
  }

  __device__ void begin_step(std::size_t chunk) { seq_ = base_ + 1 + chunk; }
  __device__ std::uint64_t seq() const { return seq_; }
  __device__ std::uint32_t call_tag() const { return a_.call_tag; }
  __device__ int slot() const { return static_cast<int>(seq_ % kSlots); }

  __device__ Signals* signals(int rank) const { return buffer_at<Signals>(a_, rank, BufferLayout::kSignals); }

  // kFailAborted | the rank that aborted the communicator, or 0. A relaxed
  // read: only waits that already last check it.
  __device__ std::uint32_t aborted() const {
    const std::uint64_t by = *reinterpret_cast<const volatile std::uint64_t*>(&signals(a_.rank)->aborted_by);
    return by == 0 ? 0 : kFailAborted | static_cast<std::uint32_t>(by - 1);
  }

  // After this block's stores to peers: one flag per peer. The release is
  // cumulative, so after the barrier it publishes every thread's stores.
  __device__ void raise(std::uint64_t (Signals::*flags)[kMaxBlocks][kMaxRanks]) const {
    __syncthreads();
    if (threadIdx.x < a_.world && threadIdx.x != a_.rank)
      store_release<kScope>(&(signals(threadIdx.x)->*flags)[blockIdx.x][a_.rank], flag());
  }

  // Every peer's flag for this block; false (for the whole block) if a peer
  // timed out or runs another call, or a rank aborted, which is reported to
  // the host. A peer already past this step checked our tag itself, so only
  // an equal step is compared.
  __device__ bool await(std::uint64_t (Signals::*flags)[kMaxBlocks][kMaxRanks]) const {
    std::uint32_t failure = 0;
    const int p = static_cast<int>(threadIdx.x);
    if (p < a_.world && p != a_.rank) {
      const std::uint64_t seen = wait_at_least<kScope>(&(signals(a_.rank)->*flags)[blockIdx.x][p], seq_ << kCallBits,
                                                       a_.timeout_ns, &signals(a_.rank)->aborted_by);
      if (seen == 0) {  // the wait stopped: an abort, else the timeout
        const std::uint32_t abort = aborted();
        failure = abort != 0 ? abort : kFailTimeout | p;
      } else if ((seen >> kCallBits) == seq_ && seen != flag()) {
        failure = kFailMismatch | p;
      }
      if (failure) report(failure);
    }
    return __syncthreads_and(failure == 0);
  }

  // Tells the host what went wrong at this step. Any one report is a right
  // answer, so racing writers need no atomics (which host-mapped memory may
  // not support).
  __device__ void report(std::uint32_t failure) const {
    FailureReport* r = a_.failure;
    if ((failure & ~0xffffu) == kFailMismatch) {
      __threadfence();  // the peer's record was written at its kernel's start
      CallSignature mine = a_.call;
      mine.step = seq_;
      r->mine = mine;
      r->theirs = *const_cast<const CallSignature*>(&signals(static_cast<int>(failure & 0xffffu))->current_call);
    }
    __threadfence_system();  // the records before the code
    *reinterpret_cast<volatile std::uint32_t*>(&r->code) = failure;
  }

  // The arrival word of this step: step << kCallBits | call tag.
  __device__ std::uint64_t flag() const { return seq_ << kCallBits | a_.call_tag; }

  // Whether this thread announces the call once it has waited a while for
  // low-latency units (await_units): the kernel's first thread, unless the
  // kernel names another, one that waits whenever any of its threads does.
  __device__ bool announces() const { return announces_; }
  __device__ void announce_from_here(bool here) { announces_ = here; }

  // Publishes the sequence number for the next op (which, on the same
  // stream, starts only after this kernel has ended), in the entries that
  // RankState assigns to this block; the barrier keeps every thread's read
  // of its own entry before the write.
  __device__ void finish(std::size_t steps) const {
    __syncthreads();
    for (unsigned b = blockIdx.x + threadIdx.x * gridDim.x; b < kMaxBlocks; b += blockDim.x * gridDim.x)
      state_->seq[b] = base_ + steps;
  }

 private:

  const PeerArgs& a_;
  RankState* state_;
  std::uint64_t base_;
  std::uint64_t seq_;
  bool announces_ = blockIdx.x == 0 && threadIdx.x == 0;
};

// The elements after the last whole vector travel one-shot, element-wide,
// in the last block.
template <typename E, typename Protocol>
__device__ __forceinline__ void push_tail(const AllReduceArgs& a, const Protocol& proto, const Chunk& c,
                                          std::size_t first) {
  using S = typename E::Storage;
  const S* in = static_cast<const S*>(c.in);
  for (int p = 0; p < a.world; ++p) {
    if (p == a.rank) continue;
    S* dst = buffer_at<S>(a, p, a.layout.recv(proto.slot(), a.rank));
    for (std::size_t i = first + threadIdx.x; i < c.count; i += blockDim.x) dst[i] = in[i];
  }
}

template <typename E, typename Protocol>
__device__ __forceinline__ void reduce_tail(const AllReduceArgs& a, const Protocol& proto, const Chunk& c,
                                            std::size_t first) {
  using V = Vec<E, sizeof(typename E::Storage)>;
  const auto source = [&](int r) {
    return r == a.rank ? static_cast<const V*>(c.in) : buffer_at<const V>(a, a.rank, a.layout.recv(proto.slot(), r));
  };
  auto* out = static_cast<V*>(c.out);
  for (std::size_t i = first + threadIdx.x; i < c.count; i += blockDim.x)
    out[i] = reduce_ranks<E, sizeof(typename E::Storage)>(source, a.world, i);
}

// Every rank pushes its whole chunk to every peer and reduces all of it.
template <typename E, int kBytes, typename Protocol>
__device__ bool one_shot_step(const AllReduceArgs& a, Protocol& proto, const Chunk& c) {
  using V = Vec<E, kBytes>;
  const std::size_t vectors = c.count / V::kLanes;
  const Range mine = split_clipped(c.full_vectors, vectors, gridDim.x, blockIdx.x);
  const bool tail = c.has_tail && blockIdx.x == owner_block(c.full_vectors, vectors);
  const V* in = static_cast<const V*>(c.in);

  for (int p = 0; p < a.world; ++p) {
    if (p == a.rank) continue;
    V* dst = buffer_at<V>(a, p, a.layout.recv(proto.slot(), a.rank));
    pipelined(mine, [&](std::size_t i) { return in[i]; }, [&](std::size_t i, const V& v) { dst[i] = v; });
  }
  if (tail) push_tail<E>(a, proto, c, vectors * V::kLanes);
  proto.raise(&Signals::arrived);
  if (!proto.await(&Signals::arrived)) return false;

  const auto source = [&](int r) {
    return r == a.rank ? in : buffer_at<const V>(a, a.rank, a.layout.recv(proto.slot(), r));
  };
  V* out = static_cast<V*>(c.out);
  pipelined(
      mine, [&](std::size_t i) { return reduce_ranks<E, kBytes>(source, a.world, i); },
      [&](std::size_t i, const V& v) { out[i] = v; });
  if (tail) reduce_tail<E>(a, proto, c, vectors * V::kLanes);
  return true;
}

// Rank r owns share r of the chunk: every rank pushes share r of its data to
// rank r, which reduces it and pushes the result to every rank.
template <typename E, int kBytes, typename Protocol>
__device__ bool two_shot_step(const AllReduceArgs& a, Protocol& proto, const Chunk& c) {
  using V = Vec<E, kBytes>;
  const std::size_t vectors = c.count / V::kLanes;
  const std::size_t share = max(std::size_t{1}, (c.full_vectors + a.world - 1) / a.world);
  // This block's part of every share, relative to the share's start.
  const Range part = split(share, gridDim.x, blockIdx.x);
  const auto share_range = [&](int owner) {
    const std::size_t base = share * owner;
    return Range{min(vectors, base + part.lo), min(vectors, base + part.hi)};
  };
  const bool tail = c.has_tail && blockIdx.x == owner_block(share, vectors % share);
  const V* in = static_cast<const V*>(c.in);
  V* out = static_cast<V*>(c.out);

  for (int p = 0; p < a.world; ++p) {
    if (p == a.rank) continue;
    V* dst = buffer_at<V>(a, p, a.layout.recv(proto.slot(), a.rank));
    pipelined(share_range(p), [&](std::size_t i) { return in[i]; }, [&](std::size_t i, const V& v) { dst[i] = v; });
  }
  if (tail) push_tail<E>(a, proto, c, vectors * V::kLanes);
  proto.raise(&Signals::arrived);
  // A block that failed raises no further flag, so its peers fail too rather
  // than copy a share that was never reduced.
  if (!proto.await(&Signals::arrived)) return false;

  const auto source = [&](int r) {
    return r == a.rank ? in : buffer_at<const V>(a, a.rank, a.layout.recv(proto.slot(), r));
  };
  pipelined(
      share_range(a.rank), [&](std::size_t i) { return reduce_ranks<E, kBytes>(source, a.world, i); },
      [&](std::size_t i, const V& v) {
        out[i] = v;
        for (int p = 0; p < a.world; ++p)
          if (p != a.rank) buffer_at<V>(a, p, a.layout.result(proto.slot()))[i] = v;
      });
  if (tail) reduce_tail<E>(a, proto, c, vectors * V::kLanes);
  proto.raise(&Signals::reduced);
  if (!proto.await(&Signals::reduced)) return false;

  const V* results = buffer_at<const V>(a, a.rank, a.layout.result(proto.slot()));
  for (int p = 0; p < a.world; ++p)
    if (p != a.rank)
      pipelined(share_range(p), [&](std::size_t i) { return results[i]; }, [&](std::size_t i, const V& v) { out[i] = v; });
  return true;
}

template <typename E, int kBytes, bool kTwoShot, Scope kScope>
__global__ void __launch_bounds__(kThreads) all_reduce_kernel(const AllReduceArgs a) {
  using S = typename E::Storage;
  wait_for_previous_kernel();
  Protocol<kScope> proto(a);
  if (blockIdx.x == 0 && threadIdx.x == 0) proto.publish_call();
  const std::size_t steps = (a.count + a.chunk_count - 1) / a.chunk_count;
  for (std::size_t step = 0; step < steps; ++step) {
    proto.begin_step(step);
    const std::size_t first = step * a.chunk_count;
    const Chunk c{static_cast<const S*>(a.in) + first, static_cast<S*>(a.out) + first,
                  min(a.chunk_count, a.count - first), a.chunk_count / Vec<E, kBytes>::kLanes, step == steps - 1};
    const bool ok = kTwoShot ? two_shot_step<E, kBytes>(a, proto, c) : one_shot_step<E, kBytes>(a, proto, c);
    if (!ok) break;  // reported; the communicator is unusable from here
  }
  allow_next_kernel();
  proto.finish(steps);
}

}  // namespace tpcoll::cuda
