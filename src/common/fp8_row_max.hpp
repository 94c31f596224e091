// A per-token FP8 row's maximum, max |out_e| (NaN ignored), from what a GPU
// row kernel has before its outputs exist: the row then needs no block-wide
// reduction of its outputs between its norm and its codes (on an H100 that
// reduction and its barrier took about 0.35 us of a 1 x 4096 row,
// h100-s7-fp8-bounds.txt).
//
// The output is out_e = R(y_e), y_e = RN(RN(s_e * inv) * w_e), with R the
// rounding to the 16-bit output type. Let M = max |s_e * w_e| (exact in fp32:
// two 16-bit significands, a normal product), W = max |w_e| and P = M * inv
// (exact in double). With u = 2^-24, every rounding adds a relative u when
// its result is normal and an absolute 2^-150 when not, so for every e
//   |y_e| <= |s_e w_e| inv (1 + u)^2 + 2^-150 (2 W + 1),
// and for the element a with |s_a w_a| = M
//   |y_a| >= P (1 - u)^2 - 2^-150 (W + 1).
// When P >= 2^-100 and W <= P * 2^120 both error terms are below P * 2^-24,
// so every |y_e| <= P (1 + 2^-22) <= hi and |y_a| >= P (1 - 2^-22) >= lo for
// the floats lo and hi returned below. R is monotone and symmetric, so
// max |out_e| = R(max |y_e|) lies between R(lo) and R(hi): where those are
// equal, it is known. They differ when P lies within about 2^-22 of a
// rounding boundary of the output type (a row in tens of thousands of
// random ones), and NaN is returned for rows outside the argument (an
// infinite weight or product, a zero or infinite inv, tiny P): the caller
// then takes the maximum of its outputs.
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

namespace detail {

// The largest float <= x, and the smallest float >= x, for x > 0.
TPCOLL_HOST_DEVICE inline float float_at_most(double x) {
  const float f = static_cast<float>(x);
  return static_cast<double>(f) > x ? numerics::bits_float(numerics::float_bits(f) - 1) : f;
}
TPCOLL_HOST_DEVICE inline float float_at_least(double x) {
  const float f = static_cast<float>(x);
  return static_cast<double>(f) < x ? numerics::bits_float(numerics::float_bits(f) + 1) : f;
}

}  // namespace detail

// max_product = M and max_weight = W as above, each a fmax over the row
// (NaN products and weights ignored, as the outputs they give are).
TPCOLL_HOST_DEVICE inline RowMaxBracket row_max_bracket(float max_product, float max_weight, float inv) {
  const RowMaxBracket unknown{NAN, NAN};
  // Each comparison is false for NaN.
  if (!(inv > 0.0f && inv <= FLT_MAX) || !(max_weight <= FLT_MAX) || !(max_product <= FLT_MAX)) return unknown;
  const double p = static_cast<double>(max_product) * static_cast<double>(inv);
  if (!(max_product >= FLT_MIN) || !(p >= 0x1p-100) || !(static_cast<double>(max_weight) <= p * 0x1p120))
    return unknown;
  return {detail::float_at_most(p * (1.0 - 0x1p-22)), detail::float_at_least(p * (1.0 + 0x1p-22))};
}

}  // namespace tpcoll::fp8
