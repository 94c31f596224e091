// Add + RMSNorm on the GPU with the numeric contract of common/numerics.hpp:
// s = x + residual rounded to the storage type, the sum of squares of s in
// 32 partials of 8-element groups (lane p of a warp owns groups p, p + 32,
// ..., in element order) combined by a halving tree, then
// out = (s * (1 / sqrt(mean + eps))) * weight, every step rounded as on the
// CPU (no FMA, correctly rounded division and square root).
#pragma once

#include "common/numerics.hpp"
#include "cuda/kernels/rmsnorm_args.hpp"
#include "cuda/kernels/sync.cuh"
#include "cuda/kernels/vector.cuh"

#include <cstddef>

namespace tpcoll::cuda {


inline constexpr int kNormWarps = 4;  // rows per block of the add + RMSNorm kernel

// The contract's sum of squares of `s[0, hidden)`, on every lane of the warp.
template <typename E>
__device__ __forceinline__ float warp_sum_of_squares(const typename E::Storage* s, std::size_t hidden) {
  constexpr int kGroup = numerics::kNormGroup;
  const unsigned lane = threadIdx.x % 32;
  float partial = 0.0f;
  for (std::size_t first = lane * kGroup; first < hidden; first += 32 * kGroup)
    for (std::size_t e = first; e < first + kGroup && e < hidden; ++e) {
      const float v = E::load(s[e]);
      partial = __fadd_rn(partial, __fmul_rn(v, v));
    }
  for (int half = 16; half >= 1; half /= 2) partial = __fadd_rn(partial, __shfl_down_sync(0xffffffffu, partial, half));
  return __shfl_sync(0xffffffffu, partial, 0);
}

// 1 / sqrt(mean(s^2) + eps), rounded as the CPU rounds it.
__device__ __forceinline__ float inverse_rms(float sum_of_squares, std::size_t hidden, float eps) {
  const float mean = __fdiv_rn(sum_of_squares, static_cast<float>(hidden));
  return __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(mean, eps)));
}

// out[e] = (s[e] * inv) * weight[e] for this lane's elements of the row.
template <typename E>
__device__ __forceinline__ float normalized(typename E::Storage s, float inv, typename E::Storage w) {
  return __fmul_rn(__fmul_rn(E::load(s), inv), E::load(w));
}

// The contract's 8-element group, moved with 16-byte accesses (the row and
// every buffer 16-byte aligned).
template <typename E>
struct alignas(16) Group {
  typename E::Storage v[numerics::kNormGroup];
};

// One warp per row, lane p owning groups p, p + 32, ...: add, square and
// accumulate in registers in the contract's order, then normalise, reading
// back only the lane's own groups (so out may alias x, residual_out
// residual).
template <typename E>
__global__ void __launch_bounds__(32 * kNormWarps) add_rmsnorm_groups_kernel(const RmsNormArgs a) {
  using G = Group<E>;
  constexpr int kGroup = numerics::kNormGroup;
  wait_for_previous_kernel();  // x may be the output of the all-reduce before us
  const std::size_t row = static_cast<std::size_t>(blockIdx.x) * kNormWarps + threadIdx.x / 32;
  if (row >= a.rows) return;
  const unsigned lane = threadIdx.x % 32;
  const std::size_t groups = a.hidden / kGroup, offset = row * groups;
  const G* x = static_cast<const G*>(a.x) + offset;
  const G* s = a.residual != nullptr ? static_cast<const G*>(a.residual_out) + offset : x;
  float partial = 0.0f;
  for (std::size_t g = lane; g < groups; g += 32) {
    G v = x[g];
    if (a.residual != nullptr) {
      const G r = static_cast<const G*>(a.residual)[offset + g];
#pragma unroll
      for (int e = 0; e < kGroup; ++e) v.v[e] = E::store(__fadd_rn(E::load(v.v[e]), E::load(r.v[e])));
      static_cast<G*>(a.residual_out)[offset + g] = v;
    }
#pragma unroll
    for (int e = 0; e < kGroup; ++e) {
      const float f = E::load(v.v[e]);
      partial = __fadd_rn(partial, __fmul_rn(f, f));
    }
  }
  for (int half = 16; half >= 1; half /= 2) partial = __fadd_rn(partial, __shfl_down_sync(0xffffffffu, partial, half));
  const float inv = inverse_rms(__shfl_sync(0xffffffffu, partial, 0), a.hidden, a.eps);
  const G* weight = static_cast<const G*>(a.weight);
  G* out = static_cast<G*>(a.out) + offset;
  for (std::size_t g = lane; g < groups; g += 32) {
    const G v = s[g], w = weight[g];
    G o;
#pragma unroll
    for (int e = 0; e < kGroup; ++e) o.v[e] = E::store(normalized<E>(v.v[e], inv, w.v[e]));
    out[g] = o;
  }
}

// Any hidden size and alignment, element by element. One warp per row: add, then the sum of squares of the rounded sum (read
// back from residual_out, or from x without a residual), then the output.
// Each lane only reads back what it wrote, so aliasing out == x and
// residual_out == residual is safe.
template <typename E>
__global__ void __launch_bounds__(32 * kNormWarps) add_rmsnorm_kernel(const RmsNormArgs a) {
  using S = typename E::Storage;
  wait_for_previous_kernel();
  const std::size_t row = static_cast<std::size_t>(blockIdx.x) * kNormWarps + threadIdx.x / 32;
  if (row >= a.rows) return;
  const unsigned lane = threadIdx.x % 32;
  const std::size_t offset = row * a.hidden;
  const S* x = static_cast<const S*>(a.x) + offset;
  const S* s = x;
  if (a.residual != nullptr) {
    const S* residual = static_cast<const S*>(a.residual) + offset;
    S* residual_out = static_cast<S*>(a.residual_out) + offset;
    for (std::size_t e = lane; e < a.hidden; e += 32)
      residual_out[e] = E::store(__fadd_rn(E::load(x[e]), E::load(residual[e])));
    __syncwarp();  // the sum of squares reads other lanes' elements
    s = residual_out;
  }
  const float inv = inverse_rms(warp_sum_of_squares<E>(s, a.hidden), a.hidden, a.eps);
  const S* weight = static_cast<const S*>(a.weight);
  S* out = static_cast<S*>(a.out) + offset;
  for (std::size_t e = lane; e < a.hidden; e += 32) out[e] = E::store(normalized<E>(s[e], inv, weight[e]));
}

}  // namespace tpcoll::cuda
