// The fused all-reduce + residual add + RMSNorm for small messages, in one
// kernel: every rank pushes its x to its peers in low-latency units (all
// blocks share the pushing); a block per row then sums each element over the ranks in rank order (rounded, as
// our all-reduce rounds), adds the residual (rounded), keeps the row in shared
// memory, and normalises it as the add + RMSNorm kernel does. The result is
// therefore bit for bit our all-reduce followed by our add + RMSNorm.
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

// The accumulated sum, rounded to the element type.
template <typename E>
__device__ __forceinline__ Group<E> rounded(const float (&acc)[numerics::kNormGroup]) {
  Group<E> sum;
#pragma unroll
  for (int e = 0; e < numerics::kNormGroup; ++e) sum.v[e] = E::store(acc[e]);
  return sum;
}

// Needs hidden % 8 == 0 with at most one group per thread (blockDim.x >=
// hidden / 8), 16-byte aligned buffers, rows * hidden elements within the
// low-latency size, and a row's bytes of dynamic shared memory.
template <typename E, Scope kScope>
__global__ void __launch_bounds__(kNormMaxThreads) fused_low_latency(const FusedArgs a) {
  using G = Group<E>;
  constexpr int kGroup = numerics::kNormGroup;
  constexpr int kUnits = sizeof(G) / 8;  // low-latency units per group
  extern __shared__ unsigned char shared[];
  G* s = reinterpret_cast<G*>(shared);
  __shared__ float partials[kPartials];
  __shared__ float inv;
  wait_for_previous_kernel();
  const RmsNormRows& n = a.norm;
  const std::size_t groups = n.hidden / kGroup;
  const auto* x = static_cast<const uint2*>(n.x);
  Protocol<kScope> proto(a);
  proto.begin_step(0);
  const std::uint32_t flag = low_latency_flag(proto.seq(), proto.call_tag());

  // Every block pushes an equal slice of the message, the way the
  // low-latency all-reduce does; then block b normalises rows b, b + grid, ...
  const Range mine = split(n.rows * groups * kUnits, gridDim.x, blockIdx.x);
  push_units(a, proto, mine.lo + threadIdx.x, mine.hi, flag, [&](std::size_t unit) { return x[unit]; });

  // One group per thread (the host keeps rows within kNormMaxThreads groups);
  // its residual and weight are loaded before the wait for the peers.
  const std::size_t g = threadIdx.x;
  const bool has_group = g < groups;
  std::uint32_t failure = 0;
  for (std::size_t row = blockIdx.x; row < n.rows; row += gridDim.x) {
    const std::size_t offset = row * groups;
    G own{}, residual{}, weight{};
    if (has_group) {
      own = static_cast<const G*>(n.x)[offset + g];
      if (n.residual != nullptr) residual = static_cast<const G*>(n.residual)[offset + g];
      weight = static_cast<const G*>(n.weight)[g];
    }
    if (has_group && failure == 0) {
      float acc[kGroup];
      for (int r = 0; r < a.world && failure == 0; ++r) {
        G v = own;
        if (r != a.rank) {
          uint2 units[kUnits];
          receive_units<kUnits>(a, proto, r, (offset + g) * kUnits, flag, failure, units);
          memcpy(&v, units, sizeof v);
        }
        accumulate<E>(acc, v, r);
      }
      const G sum = rounded<E>(acc);
      s[g] = n.residual != nullptr ? added<E>(sum, residual) : sum;
    }
    // A failed block writes nothing: the caller's buffers keep their bytes.
    if (__syncthreads_or(failure != 0)) break;
    const float total = block_sum_of_squares<E>(s, groups, partials);
    if (threadIdx.x == 0) inv = inverse_rms(total, n.hidden, n.eps);
    __syncthreads();
    if (has_group) {
      const G v = s[g];
      if (n.residual != nullptr) static_cast<G*>(n.residual_out)[offset + g] = v;
      static_cast<G*>(n.out)[offset + g] = normalized_group<E>(v, inv, weight);
    }
    __syncthreads();  // the next row reuses the shared row
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
        const G sum = rounded<E>(acc);
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
