// Correctly rounded division, on the host and the device alike, and a cheaper
// way to the same bits when many dividends share one divisor (an FP8 row's
// scale): the divisor's reciprocal y = RN(1/d) once, then per dividend v
//   q0 = RN(v * y)
//   q1 = RN(q0 + RN(v - d * q0) * y)   (an FMA for each bracket)
//   q  = RN(q1 + (v - d * q1) * y)     (the bracket exact)
// which is RN(v / d), bit for bit, where the range check below holds.
//
// Why. The last line is Markstein's correction. His theorem, in the form
// proved in ACL2 by Russinoff ("markstein-lemma" of the RTL library), for
// significands a, b in [1, 2) of p = 24 bits and any y: if |1 - b * y| <
// 2^-p and |a/b - q| < 2^-23 (a > b) or 2^-24 (a <= b), an ulp of a/b, then
// a - b * q is exact and RN(q + (a - b * q) * y) = RN(a/b). Here |1 - b * y|
// <= b * ulp(1/b) / 2 < 2^-24 (and 0 for b = 1). q0 alone does not
// satisfy the second condition: when a < b it can be 1.125 ulp off (b = 2 -
// 2^-23, a = 1.75 + 2^-23), and then v - d * q0 is not always exact (0.75% of
// a billion random such pairs). So a first correction comes before it: q0 is
// within 2^-23 relative of a/b, so the first line's exact operand is within
// about 2^-46 relative of a/b (the rounding of v - d * q0 included), and its
// rounding q1 lies within half an ulp plus that, under one ulp. Signs
// change nothing: every step rounds to nearest, which is symmetric.
//
// Range. The theorem is about significands; the same bits come out at any
// exponents as long as every rounding above sees a normal or zero result,
// as it would with unbounded exponents. That holds when
//   * 2^-126 <= |d| <= 2^126: y is normal (and finite);
//   * 2^-125 <= |q0| <= 2^126: q0, q1, q and v / d (all within 2^-22
//     relative of each other) are normal and finite, v finite;
//   * |v| >= 2^-79: v - d * q is a multiple of ulp(d) * ulp(q) >= 2^(e - 47),
//     where 2^e <= |v|, so when not 0 it is at least 2^-126, normal.
// v = +-0 (d in range) gives q0 = +-0 with the right sign (the corrections
// would turn -0 into +0). Everything else (NaN, infinities, subnormals, a
// quotient near the exponent limits) takes IEEE division. The unit test
// checks the result against `v / d` bit for bit: every bf16 and fp16 value
// and millions of floats against divisors over the whole exponent range.
#pragma once

#include "common/numerics.hpp"

#include <cmath>
#include <cstdint>

namespace tpcoll::numerics {

// IEEE a / b, correctly rounded.
TPCOLL_HOST_DEVICE inline float divided(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

// One rounding of a * b, and of a * b + c.
TPCOLL_HOST_DEVICE inline float multiplied(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

TPCOLL_HOST_DEVICE inline float fused_multiply_add(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// Whether lo <= |f| <= hi, the bounds given as magnitudes' bits: one
// unsigned comparison (NaN's bits lie above every finite bound).
TPCOLL_HOST_DEVICE inline bool magnitude_within(float f, std::uint32_t lo, std::uint32_t hi) {
  return (float_bits(f) & 0x7fffffffu) - lo <= hi - lo;
}

// A divisor with its reciprocal, for many divisions.
struct Divisor {
  float value;
  float reciprocal;  // RN(1 / value)
  bool in_range;     // 2^-126 <= |value| <= 2^126: the reciprocal is normal
};

TPCOLL_HOST_DEVICE inline Divisor divisor(float d) {
  return Divisor{d, divided(1.0f, d), magnitude_within(d, 0x00800000u /* 2^-126 */, 0x7e800000u /* 2^126 */)};
}

// v / d by the reciprocal, and whether the range above holds (value then
// is RN(v / d); else the caller divides). Branch-free, so that a caller can
// form many before it checks them all with one branch.
struct Quotient {
  float value;
  bool exact;
};

TPCOLL_HOST_DEVICE inline Quotient corrected_quotient(float v, const Divisor& d) {
  const float q0 = multiplied(v, d.reciprocal);
  const float q1 = fused_multiply_add(fused_multiply_add(-q0, d.value, v), d.reciprocal, q0);
  const float q = fused_multiply_add(fused_multiply_add(-q1, d.value, v), d.reciprocal, q1);
  const bool zero = (float_bits(v) & 0x7fffffffu) == 0;
  const bool in_range = magnitude_within(v, 0x18000000u /* 2^-79 */, 0x7f7fffffu) &&
                        magnitude_within(q0, 0x01000000u /* 2^-125 */, 0x7e800000u /* 2^126 */);
  return Quotient{zero ? q0 : q, d.in_range && (zero || in_range)};
}

// RN(v / d), always.
TPCOLL_HOST_DEVICE inline float quotient(float v, const Divisor& d) {
  const Quotient q = corrected_quotient(v, d);
  return q.exact ? q.value : divided(v, d.value);
}

}  // namespace tpcoll::numerics
