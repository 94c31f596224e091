// The device half of the FP8 quantisation (common/fp8_quantise.hpp) as the
// kernels that end the fused op apply it to the rows they hold: a block-wide
// max for per-token scales, and 8-element groups converted two at a time
// with the hardware's paired conversion, by a quotient that is exact where
// codes differ (fp8::RowDivisor), else by exact quotients through the
// reciprocal (common/division.hpp).
#pragma once

#include "common/division.hpp"
#include "common/fp8_quantise.hpp"
#include "common/numerics.hpp"

#include <cuda_fp8.h>

#include <cstdint>

namespace tpcoll::cuda {

// Enough for a block of up to 1024 threads.
inline constexpr int kMaxBlockWarps = 32;

// The largest of every thread's `value`, on every thread: a warp's shuffles,
// one barrier, then every thread reads the warps' maxima. fmaxf ignores NaN,
// as the rule wants; max is exact in any order, so it equals the CPU's.
// `warp_maxima` must not be written again before every thread has returned
// (a kernel looping over rows alternates two arrays).
__device__ __forceinline__ float block_max(float value, float* warp_maxima) {
  for (int half = 16; half >= 1; half /= 2) value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, half));
  if (threadIdx.x % 32 == 0) warp_maxima[threadIdx.x / 32] = value;
  __syncthreads();
  float all = warp_maxima[0];
  for (unsigned w = 1; w < blockDim.x / 32; ++w) all = fmaxf(all, warp_maxima[w]);
  return all;
}

// The largest |v| of a group of one element type.
template <typename E>
__device__ __forceinline__ float group_max_abs(const typename E::Storage (&v)[numerics::kNormGroup], float max_abs) {
#pragma unroll
  for (int e = 0; e < numerics::kNormGroup; ++e) max_abs = fmaxf(max_abs, fabsf(E::load(v[e])));
  return max_abs;
}

// The hardware's two codes of quotients (lo, hi), `lo` in the low byte:
// cvt.rn.satfinite.e4m3x2.f32 on sm_89+, NaN as it gives it.
__device__ __forceinline__ std::uint16_t raw_e4m3_pair(float lo, float hi) {
  return __nv_cvt_float2_to_fp8x2(make_float2(lo, hi), __NV_SATFINITE, __NV_E4M3);
}

// The same with NaN made the canonical 0x7f, as on the host.
__device__ __forceinline__ std::uint16_t e4m3_pair(float lo, float hi) {
  std::uint16_t codes = raw_e4m3_pair(lo, hi);
  if (isnan(lo)) codes = static_cast<std::uint16_t>((codes & 0xff00u) | fp8::kE4m3NaN);
  if (isnan(hi)) codes = static_cast<std::uint16_t>((codes & 0x00ffu) | (fp8::kE4m3NaN << 8));
  return codes;
}

// A group's values, widened, passed by value (in registers: an array by
// reference would go through local memory).
struct GroupFloats {
  float v[numerics::kNormGroup];
};

// A group's 8 codes by IEEE-exact quotients, for one 8-byte store. The 8
// quotients by the reciprocal have no branch between them, so they overlap;
// one branch then divides the rare values outside its range
// (numerics::corrected_quotient). Not inlined: quantised_group calls it only
// for groups with a NaN code (NaN, infinities, overflow), and inlined the
// compiler may predicate it into every group.
__device__ __noinline__ inline uint2 exactly_quantised_group(GroupFloats values, numerics::Divisor divisor) {
  float q[numerics::kNormGroup];
  bool exact = true;
#pragma unroll
  for (int e = 0; e < numerics::kNormGroup; ++e) {
    const numerics::Quotient c = numerics::corrected_quotient(values.v[e], divisor);
    q[e] = c.value;
    exact = exact && c.exact;
  }
  if (!exact) {
#pragma unroll
    for (int e = 0; e < numerics::kNormGroup; ++e) q[e] = numerics::quotient(values.v[e], divisor);
  }
  std::uint16_t pairs[numerics::kNormGroup / 2];
#pragma unroll
  for (int p = 0; p < numerics::kNormGroup / 2; ++p) pairs[p] = e4m3_pair(q[2 * p], q[2 * p + 1]);
  uint2 codes;
  memcpy(&codes, pairs, sizeof codes);
  return codes;
}

// A group's 8 codes, for one 8-byte store: by fp8::close_quotient (a
// multiplication and three FMAs per value, no range checks: the epilogue of
// a 1 x 4096 row went from 3,056 to 1,344 executed warp instructions on an
// H100), two conversions at a time; a group with a NaN code (NaN,
// infinities, overflow) takes the exact way.
template <typename E>
__device__ __forceinline__ uint2 quantised_group(const typename E::Storage (&v)[numerics::kNormGroup],
                                                 const fp8::RowDivisor& divisor) {
  GroupFloats values;
  float q[numerics::kNormGroup];
#pragma unroll
  for (int e = 0; e < numerics::kNormGroup; ++e) {
    values.v[e] = E::load(v[e]);
    q[e] = fp8::close_quotient(values.v[e], divisor);
  }
  std::uint16_t pairs[numerics::kNormGroup / 2];
#pragma unroll
  for (int p = 0; p < numerics::kNormGroup / 2; ++p) pairs[p] = raw_e4m3_pair(q[2 * p], q[2 * p + 1]);
  uint2 codes;
  memcpy(&codes, pairs, sizeof codes);
  if (!fp8::any_nan_code(codes.x) && !fp8::any_nan_code(codes.y)) return codes;
  return exactly_quantised_group(values, divisor.exact);
}

// What the row is divided by: the static scale's divisor (formed on the
// host), or (per token) the row's max |out| / 448, which thread 0 writes to
// row_scales[row]. `max_abs` is this thread's share of the row's maximum;
// `warp_maxima` as block_max's. Static scaling needs no barrier.
__device__ __forceinline__ fp8::RowDivisor row_divisor(const fp8::Fp8Output& fp8, std::size_t row, float max_abs,
                                                       float* warp_maxima) {
  if (fp8.scaling != TPCOLL_FP8_PER_TOKEN) return fp8.static_divisor;
  const float scale = fp8::per_token_scale(block_max(max_abs, warp_maxima));
  if (threadIdx.x == 0) fp8.row_scales[row] = scale;
  return fp8::row_divisor_of(fp8::divisor_of(scale));
}

}  // namespace tpcoll::cuda
