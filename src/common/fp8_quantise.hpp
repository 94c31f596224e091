// The FP8 output of the fused op (tpcoll_fused_allreduce_residual_rmsnorm_fp8)
// and the rule that fills it, one source for the CPU and the GPU:
//   static:    out_fp8 = e4m3(out / scale)
//   per token: scale_row = max|out_row| / 448, out_fp8 = e4m3(out_row / scale_row)
// where out is the fused op's output rounded to its dtype and widened to
// fp32, the division is IEEE (correctly rounded) on both sides and e4m3() is
// fp8::float_to_e4m3 (round to nearest even, saturating at +-448, NaN 0x7f).
// The CPU divides; the GPU kernels reach the same codes through the row
// divisor's reciprocal, much cheaper than a division per element: by a
// quotient that is exact where codes differ (RowDivisor, below), else (NaN,
// infinities) by the exact quotient of common/division.hpp.
// The row maximum ignores NaN (fmax); a row whose maximum is 0 (all +-0, or
// too small for max / 448 to stay above 0) keeps scale 0 and is divided by 1,
// so its codes are the e4m3 of the values themselves (+-0) and nothing
// divides by zero. A row holding an infinity gets scale inf: its finite
// values become +-0 and its infinities NaN.
#pragma once

#include "common/division.hpp"
#include "common/fp8.hpp"

#include <tpcoll/tpcoll.h>

#if defined(__CUDACC__)
#include <cuda_fp8.h>
#endif

#include <cmath>
#include <cstdint>

namespace tpcoll::fp8 {

// 448 with its reciprocal RN(1/448), for numerics::quotient.
TPCOLL_HOST_DEVICE inline numerics::Divisor e4m3_max_divisor() { return {kE4m3Max, 0x1.24924ap-9f, true}; }

// max / 448: the CPU divides; a GPU row takes the same bits by the
// reciprocal, one division less between its maximum and its codes.
TPCOLL_HOST_DEVICE inline float per_token_scale(float row_max_abs) {
#if defined(__CUDA_ARCH__)
  return numerics::quotient(row_max_abs, e4m3_max_divisor());
#else
  return numerics::divided(row_max_abs, kE4m3Max);
#endif
}

// What a row is divided by: its scale, or 1 for a scale of 0.
TPCOLL_HOST_DEVICE inline float divisor_of(float scale) { return scale == 0.0f ? 1.0f : scale; }

// The code of a quotient.
TPCOLL_HOST_DEVICE inline std::uint8_t e4m3_code(float q) {
#if defined(__CUDA_ARCH__)
  // The hardware conversion (cvt.rn.satfinite.e4m3x2.f32 on sm_89+), NaN
  // made canonical as on the host.
  return isnan(q) ? kE4m3NaN : static_cast<std::uint8_t>(__nv_cvt_float_to_fp8(q, __NV_SATFINITE, __NV_E4M3));
#else
  return float_to_e4m3(q);
#endif
}

// The code of v / divisor: by IEEE division (the CPU) ...
TPCOLL_HOST_DEVICE inline std::uint8_t quantise(float v, float divisor) {
  return e4m3_code(numerics::divided(v, divisor));
}

// ... or, the same bits, by the divisor's reciprocal (the GPU kernels).
TPCOLL_HOST_DEVICE inline std::uint8_t quantise(float v, const numerics::Divisor& divisor) {
  return e4m3_code(numerics::quotient(v, divisor));
}

// A row's divisor as the GPU kernels quantise by it: RN(v / d) in four
// floating-point steps, no range checks, where it decides a code, that is
// for the quotients E4M3 can tell apart. With y = RN(1 / d), the float
// z = y or its neighbour below, whichever is at most 1 / d, and
// low = RN((1 - d * z) * z) (1 - d * z is exact for a reciprocal within an
// ulp, and >= 0, so that v * z and v * low have one sign, zeros too),
// z + low is 1 / d within 2^-43 relative, so
//   q = RN(v * z + RN(v * low))
// is within half an ulp and a hair of v / d: faithful. Then t = d * q - v
// is exact, and Markstein's correction RN(q - t * y) is RN(v / d) (the
// theorem as common/division.hpp states it). Every step sees normal
// operands and results when 2^-10 <= |v / d| <= 464 (where codes differ)
// and 2^-64 <= d <= 2^64: |v|, |d * q| >= 2^-74, and t, a multiple of
// ulp(d) * ulp(q), is 0 or at least 2^-120. Outside that window only the
// code's saturation or its sign matter: a smaller quotient stays below
// 2^-10 with v's sign (zeros too: q - t * y is formed as -t * y + q, so
// that -0 stays -0), a larger one above 464 or infinite, where q - t * y
// becomes NaN. A NaN code (v NaN or infinite, or that overflow) sends the
// value to the exact way, as does every value of a divisor outside the
// range (z is NaN there).
struct RowDivisor {
  numerics::Divisor exact;  // d, y
  float below;              // z, or NaN
  float low;
};

TPCOLL_HOST_DEVICE inline RowDivisor row_divisor_of(float d) {
  const numerics::Divisor exact = numerics::divisor(d);
  // Positive divisors only (the kernels' scales are): -t * y + q keeps a
  // zero's sign only for y > 0. The raw bits of a negative d lie above 2^64's.
  constexpr std::uint32_t kLowest = 0x1f800000u /* 2^-64 */, kHighest = 0x5f800000u /* 2^64 */;
  if (numerics::float_bits(d) - kLowest > kHighest - kLowest) return {exact, NAN, NAN};
  float z = exact.reciprocal;
  // z > 1 / d exactly when d * z > 1; the float below it is then the bits
  // one less.
  if (numerics::fused_multiply_add(-d, z, 1.0f) < 0.0f) z = numerics::bits_float(numerics::float_bits(z) - 1);
  return {exact, z, numerics::multiplied(numerics::fused_multiply_add(-d, z, 1.0f), z)};
}

struct Fp8Output {
  void* out_fp8 = nullptr;        // [rows, hidden] e4m3
  float* row_scales = nullptr;    // per token: [rows]; unused for static scaling
  tpcoll_fp8_scaling_t scaling = TPCOLL_FP8_STATIC;
  float static_scale = 1.0f;      // static: > 0 and finite (validated)
  // The static scale's divisor as the GPU kernels quantise by it, formed
  // here on the host, so that no kernel divides for it (on an H100, 0.10-0.12
  // us less at 1-8 rows of 4096 and 2 ranks: h100-s7-fp8-static-ab.txt).
  // Derived from static_scale at construction, which nothing changes later.
  RowDivisor static_divisor = row_divisor_of(static_scale);
};

// RN(v / d) wherever its code depends on it (above).
TPCOLL_HOST_DEVICE inline float close_quotient(float v, const RowDivisor& d) {
  const float q = numerics::fused_multiply_add(v, d.below, numerics::multiplied(v, d.low));
  const float t = numerics::fused_multiply_add(q, d.exact.value, -v);
  return numerics::fused_multiply_add(-t, d.exact.reciprocal, q);
}

// Whether a code is E4M3's NaN (0x7f or 0xff: the hardware may keep a NaN's
// sign), in each byte of a word of codes: a byte's low 7 bits are all ones.
TPCOLL_HOST_DEVICE inline bool any_nan_code(std::uint32_t codes) {
  return (((codes & 0x7f7f7f7fu) + 0x01010101u) & 0x80808080u) != 0;
}

// The code of v / divisor by the close quotient, else (NaN) exactly: the
// same bits again.
TPCOLL_HOST_DEVICE inline std::uint8_t quantise(float v, const RowDivisor& divisor) {
  const std::uint8_t code = e4m3_code(close_quotient(v, divisor));
  return any_nan_code(code) ? quantise(v, divisor.exact) : code;
}

}  // namespace tpcoll::fp8
