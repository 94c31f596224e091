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
#pragma unroll
        for (int e = 0; e < kGroup; ++e) acc[e] = r == 0 ? E::load(v.v[e]) : __fadd_rn(acc[e], E::load(v.v[e]));
      }
      G sum;
#pragma unroll
      for (int e = 0; e < kGroup; ++e) sum.v[e] = E::store(acc[e]);
      if (n.residual != nullptr)
#pragma unroll
        for (int e = 0; e < kGroup; ++e) sum.v[e] = E::store(__fadd_rn(E::load(sum.v[e]), E::load(residual.v[e])));
      s[g] = sum;
    }
    // A failed block writes nothing: the caller's buffers keep their bytes.
    if (__syncthreads_or(failure != 0)) break;
    const float total = block_sum_of_squares<E>(s, groups, partials);
    if (threadIdx.x == 0) inv = inverse_rms(total, n.hidden, n.eps);
    __syncthreads();
    if (has_group) {
      const G v = s[g];
      if (n.residual != nullptr) static_cast<G*>(n.residual_out)[offset + g] = v;
      G o;
#pragma unroll
      for (int e = 0; e < kGroup; ++e) o.v[e] = E::store(normalized<E>(v.v[e], inv, weight.v[e]));
      static_cast<G*>(n.out)[offset + g] = o;
    }
    __syncthreads();  // the next row reuses the shared row
  }
  if (failure) proto.report(failure);
  allow_next_kernel();
  proto.finish(1);
}

}  // namespace tpcoll::cuda
