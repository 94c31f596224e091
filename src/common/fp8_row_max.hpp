// A per-token FP8 row's maximum, max |out_e| (NaN ignored), from what a GPU
// row kernel has before its outputs exist: the row then needs no block-wide
// reduction of its outputs between its norm and its codes (on an H100 that
// reduction and its barrier took about 0.35 us of a 1 x 4096 row,
// h100-s7-fp8-bounds.txt).
//
// The output is out_e = R(y_e), y_e = RN(RN(s_e * inv) * w_e), with R the
// rounding to the 16-bit output type. Let M = max |s_e * w_e| (in fp32: a
// normal product of two 16-bit significands is exact, a subnormal one within
// 2^-150) and P = M * inv. With u = 2^-24, every rounding adds a relative u
// when its result is normal and an absolute 2^-150 when not, so for every e,
// if M >= 2^-126 and every |w_e| <= 2^24,
//   |y_e| <= P (1 + u)^3 + 2^-150 (2^25 + 1),
// and for the element a with |s_a w_a| = M
//   |y_a| >= P (1 - u)^2 - 2^-150 (2^24 + 1).
// When P >= 2^-100 the absolute terms are below P * 2^-24, so every
// |y_e| <= P (1 + 2^-22) <= hi and |y_a| >= P (1 - 2^-22) >= lo for the
// floats lo and hi returned below (P's bounds rounded down and up). R is
// monotone and symmetric, so max |out_e| = R(max |y_e|) lies between R(lo)
// and R(hi): where those are equal, it is known. They differ when P lies
// within about 2^-22 of a rounding boundary of the output type (a row in
// tens of thousands of random ones), and NaN is returned for rows outside
// the argument (an infinite or NaN product or inv, a zero inv, M or P too
// small, a weight above 2^24: RMSNorm weights are near 1): the caller then
// takes the maximum of its outputs.
//
// Needs inv to be the row's inverse RMS by the contract (common/numerics.hpp),
// which keeps every RN(|s_e| * inv) finite (at most about sqrt(hidden), or
// below 2^65 where s_e^2 underflows), and 16-bit s and w.
#pragma once

#include "common/numerics.hpp"

#include <cfloat>
#include <cmath>

namespace tpcoll::fp8 {

struct RowMaxBracket {
  float lo;  // R(lo) == R(hi): the row's maximum; NaN: not known this way
  float hi;
};

// The largest weight the argument admits.
inline constexpr float kMaxBracketedWeight = 0x1p24f;

namespace detail {

// a * b rounded down and up (a, b >= 0): the hardware's directed roundings
// on the GPU; on the host the exact double product rounded to a float, which
// is the same.
TPCOLL_HOST_DEVICE inline float product_down(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rd(a, b);
#else
  const double x = static_cast<double>(a) * b;
  const float f = static_cast<float>(x);
  return static_cast<double>(f) > x ? std::nextafter(f, 0.0f) : f;
#endif
}

TPCOLL_HOST_DEVICE inline float product_up(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_ru(a, b);
#else
  const double x = static_cast<double>(a) * b;
  const float f = static_cast<float>(x);
  return static_cast<double>(f) < x ? std::nextafter(f, INFINITY) : f;
#endif
}

}  // namespace detail

// max_product: M as above, a fmax over the row (NaN products ignored, as
// the outputs they give are), or +inf where a weight exceeds
// kMaxBracketedWeight.
TPCOLL_HOST_DEVICE inline RowMaxBracket row_max_bracket(float max_product, float inv) {
  // Each comparison is false for NaN.
  if (!(inv > 0.0f && inv <= FLT_MAX) || !(max_product >= FLT_MIN && max_product <= FLT_MAX)) return {NAN, NAN};
  const float p_down = detail::product_down(max_product, inv);
  if (!(p_down >= 0x1p-100f)) return {NAN, NAN};
  return {detail::product_down(p_down, 1.0f - 0x1p-22f),
          detail::product_up(detail::product_up(max_product, inv), 1.0f + 0x1p-22f)};
}

}  // namespace tpcoll::fp8
