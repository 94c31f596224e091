// The fused all-reduce + residual add + RMSNorm: a one-shot kernel for small
// messages (rows held in registers, peers' x in low-latency units) and a
// two-shot one in steps through the staging buffers (rows in shared memory).
// Both give, bit for bit, our all-reduce followed by our add + RMSNorm.
#pragma once

#include "cuda/kernels/low_latency.cuh"
#include "cuda/kernels/rmsnorm.cuh"

namespace tpcoll::cuda {

// Adds rank r's group into fp32 accumulators in rank order: rank 0's value
// starts them (so -0 + -0 stays -0), as our all-reduce does.
template <typename E>
__device__ __forceinline__ void accumulate(float (&acc)[numerics::kNormGroup], const Group<E>& v, int r) {
#pragma unroll
  for (int e = 0; e < numerics::kNormGroup; ++e) acc[e] = r == 0 ? E::load(v.v[e]) : __fadd_rn(acc[e], E::load(v.v[e]));
}

// Low-latency units of a held row: unit j of thread t's groups is unit
// (row * kPerThreadUnits + j) * kHeldThreads + t of the message, so that a
// warp's accesses to its j-th units are contiguous. A row takes the same
// units whatever its length (the host counts the padding against the
// low-latency size).
template <typename E, int kPerThread>
struct HeldUnits {
  static constexpr int kPerThreadUnits = kPerThread * static_cast<int>(sizeof(Group<E>) / 8);
  // This thread's first unit for `row`; the next are kHeldThreads apart.
  __device__ static std::size_t first(std::size_t row) { return row * kPerThreadUnits * kHeldThreads + threadIdx.x; }
};

// The fused op in one kernel for small messages. Block b handles rows b, b +
// grid, ... on every rank, each row held in registers as the add + RMSNorm
// kernel holds it: the block first pushes its rows' x to every peer in
// low-latency units, then, row by row, sums each group over the ranks in rank
// order (rounded, as our all-reduce rounds), adds the residual (rounded) and
// normalises the row as add_rmsnorm_held_kernel does. The result is therefore
// bit for bit our all-reduce followed by our add + RMSNorm. Needs hidden % 8
// == 0 with at most kPerThread * kHeldThreads groups, 16-byte aligned buffers,
// and rows * kHeldThreads * kPerThread groups within the low-latency size.
// kFp8 adds the FP8 epilogue of the held rows (quantise_held_row; out then
// optional, out_fp8 8-byte aligned).
template <typename E, Scope kScope, int kPerThread, bool kFp8 = false>
__global__ void __launch_bounds__(kHeldThreads) fused_low_latency(const FusedArgs a) {
  using G = Group<E>;
  using Units = HeldUnits<E, kPerThread>;
  __shared__ float partials[2][kPartials];  // alternate rows' (see block_inverse_rms)
  wait_for_previous_kernel();
  const RmsNormRows& n = a.norm;
  const std::size_t groups = n.hidden / numerics::kNormGroup;
  const G* x = static_cast<const G*>(n.x);
  Protocol<kScope> proto(a);
  proto.begin_step(0);
  const std::uint32_t flag = low_latency_flag(proto.seq(), proto.call_tag());

  // Every row first, so that no peer waits on our later rows.
  for (std::size_t row = blockIdx.x; row < n.rows; row += gridDim.x) {
    G own[kPerThread] = {};
#pragma unroll
    for (int k = 0; k < kPerThread; ++k)
      if (holds(groups, k)) own[k] = x[row * groups + held_group(k)];
    uint2 units[Units::kPerThreadUnits];
    memcpy(units, own, sizeof units);
    push_held_units(a, proto, Units::first(row), kHeldThreads, units, flag);
  }

  std::uint32_t failure = 0;
  int parity = 0;
  for (std::size_t row = blockIdx.x; row < n.rows; row += gridDim.x, parity ^= 1) {
    const std::size_t offset = row * groups;
    // Residual and weight load during the wait for the peers.
    G s[kPerThread] = {}, residual[kPerThread], weight[kPerThread];
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) {
      if (!holds(groups, k)) break;
      s[k] = x[offset + held_group(k)];
      weight[k] = static_cast<const G*>(n.weight)[held_group(k)];
      if (n.residual != nullptr) residual[k] = static_cast<const G*>(n.residual)[offset + held_group(k)];
    }
    float acc[kPerThread][numerics::kNormGroup];
    for (int r = 0; r < a.world && failure == 0; ++r) {
      G v[kPerThread];
      if (r == a.rank) {
        memcpy(v, s, sizeof v);
      } else {
        uint2 units[Units::kPerThreadUnits];
        receive_units<Units::kPerThreadUnits>(a, proto, r, Units::first(row), kHeldThreads, flag, failure, units);
        memcpy(v, units, sizeof v);
      }
#pragma unroll
      for (int k = 0; k < kPerThread; ++k) accumulate<E>(acc[k], v[k], r);
    }
    // A failed block writes nothing: the caller's buffers keep their bytes.
    if (__syncthreads_or(failure != 0)) break;
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) {
      if (!holds(groups, k)) break;
      s[k] = narrowed<E>(acc[k]);
      if (n.residual != nullptr) s[k] = added<E>(s[k], residual[k]);
    }
    const float inv = block_inverse_rms(held_partial<E>(s, groups), partials[parity], n.hidden, n.eps);
    G o[kPerThread];
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) {
      if (!holds(groups, k)) break;
      if (n.residual != nullptr) static_cast<G*>(n.residual_out)[offset + held_group(k)] = s[k];
      o[k] = normalized_group<E>(s[k], inv, weight[k]);
      if (!kFp8 || n.out != nullptr) static_cast<G*>(n.out)[offset + held_group(k)] = o[k];
    }
    if constexpr (kFp8) {
      __shared__ float warp_maxima[2][kHeldThreads / 32];  // alternate rows', as partials
      quantise_held_row<E, kPerThread>(o, groups, row, n.fp8, warp_maxima[parity]);
    }
  }
  if (failure) proto.report(failure);
  allow_next_kernel();
  proto.finish(1);
}

// The rows [lo, hi) of a step that `owner` reduces and normalises: rows are
// dealt to the ranks in whole contiguous shares, as the CPU backend deals them.
__device__ __forceinline__ Range row_share(std::size_t step_rows, std::size_t rows_here, int world, int owner) {
  const std::size_t share = (step_rows + world - 1) / world;
  return {min(rows_here, share * owner), min(rows_here, share * (owner + 1))};
}

// The fused op for larger messages, in steps of `step_rows` rows through the
// staging buffers. Each rank owns a share of every step's rows: the peers push
// their x rows of it into its staging; it sums each row in rank order (as our
// all-reduce does), adds the residual, normalises it in shared memory, keeps
// out and residual_out, and pushes both to every peer's result area, from
// where the peers copy them into place. Block b handles rows b, b + grid, ...
// of every share, on every rank, so that its flags cover exactly its rows.
// Needs hidden % 8 == 0, 16-byte aligned buffers, a row's bytes of dynamic
// shared memory, and step_rows rows of out and residual_out in the result area.
template <typename E, Scope kScope>
__global__ void __launch_bounds__(kNormMaxThreads) fused_two_shot(const FusedArgs a) {
  using G = Group<E>;
  constexpr int kGroup = numerics::kNormGroup;
  extern __shared__ unsigned char shared[];
  G* s = reinterpret_cast<G*>(shared);
  __shared__ float partials[kPartials];
  __shared__ float inv;
  wait_for_previous_kernel();
  Protocol<kScope> proto(a);
  if (blockIdx.x == 0 && threadIdx.x == 0) proto.publish_call();
  const RmsNormRows& n = a.norm;
  const std::size_t groups = n.hidden / kGroup;
  const G* x = static_cast<const G*>(n.x);
  const std::size_t half = a.layout.chunk_bytes / 2 / sizeof(G);  // residual_out's offset in the result area
  const std::size_t steps = (n.rows + a.step_rows - 1) / a.step_rows;
  for (std::size_t step = 0; step < steps; ++step) {
    proto.begin_step(step);
    const std::size_t first = step * a.step_rows, rows_here = min(a.step_rows, n.rows - first);
    const Range mine = row_share(a.step_rows, rows_here, a.world, a.rank);

    for (int p = 0; p < a.world; ++p) {
      if (p == a.rank) continue;
      const Range theirs = row_share(a.step_rows, rows_here, a.world, p);
      G* dst = buffer_at<G>(a, p, a.layout.recv(proto.slot(), a.rank));
      for (std::size_t rel = theirs.lo + blockIdx.x; rel < theirs.hi; rel += gridDim.x)
        for (std::size_t g = threadIdx.x; g < groups; g += blockDim.x) dst[rel * groups + g] = x[(first + rel) * groups + g];
    }
    proto.raise(&Signals::arrived);
    if (!proto.await(&Signals::arrived)) break;  // reported; the communicator is unusable from here

    for (std::size_t rel = mine.lo + blockIdx.x; rel < mine.hi; rel += gridDim.x) {
      const std::size_t row = (first + rel) * groups;
      for (std::size_t g = threadIdx.x; g < groups; g += blockDim.x) {
        float acc[kGroup];
        for (int r = 0; r < a.world; ++r) {
          accumulate<E>(acc, r == a.rank ? x[row + g] : buffer_at<const G>(a, a.rank, a.layout.recv(proto.slot(), r))[rel * groups + g], r);
        }
        const G sum = narrowed<E>(acc);
        s[g] = n.residual != nullptr ? added<E>(sum, static_cast<const G*>(n.residual)[row + g]) : sum;
      }
      const float total = block_sum_of_squares<E>(s, groups, partials);  // a barrier before, ours after
      if (threadIdx.x == 0) inv = inverse_rms(total, n.hidden, n.eps);
      __syncthreads();
      for (std::size_t g = threadIdx.x; g < groups; g += blockDim.x) {
        const G v = s[g];
        const G o = normalized_group<E>(v, inv, static_cast<const G*>(n.weight)[g]);
        static_cast<G*>(n.out)[row + g] = o;
        if (n.residual != nullptr) static_cast<G*>(n.residual_out)[row + g] = v;
        for (int p = 0; p < a.world; ++p) {
          if (p == a.rank) continue;
          G* result = buffer_at<G>(a, p, a.layout.result(proto.slot()));
          result[rel * groups + g] = o;
          if (n.residual != nullptr) result[half + rel * groups + g] = v;
        }
      }
      __syncthreads();  // the next row reuses the shared row
    }
    proto.raise(&Signals::reduced);
    if (!proto.await(&Signals::reduced)) break;

    const G* result = buffer_at<const G>(a, a.rank, a.layout.result(proto.slot()));
    for (int p = 0; p < a.world; ++p) {
      if (p == a.rank) continue;
      const Range theirs = row_share(a.step_rows, rows_here, a.world, p);
      for (std::size_t rel = theirs.lo + blockIdx.x; rel < theirs.hi; rel += gridDim.x)
        for (std::size_t g = threadIdx.x; g < groups; g += blockDim.x) {
          const std::size_t row = (first + rel) * groups;
          static_cast<G*>(n.out)[row + g] = result[rel * groups + g];
          if (n.residual != nullptr) static_cast<G*>(n.residual_out)[row + g] = result[half + rel * groups + g];
        }
    }
  }
  allow_next_kernel();
  proto.finish(steps);
}

}  // namespace tpcoll::cuda
