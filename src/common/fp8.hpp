// FP8 E4M3 (the OCP "E4M3FN" format: 4 exponent bits of bias 7, 3 mantissa
// bits, no infinities, 0x7f / 0xff NaN, largest finite 448), converted from
// fp32 as the GPU's cvt.rn.satfinite.e4m3x2.f32 converts: round to nearest
// even, finite values beyond 448 and infinities saturate to +-448, zero keeps
// its sign. NaN becomes the canonical 0x7f whatever its sign (the GPU
// quantiser selects 0x7f for NaN itself, so the two agree whatever the
// hardware does with a NaN's sign). Every case is computed and selected,
// without branches, so that loops over it vectorise (as numerics.hpp's fp16
// conversion).
#pragma once

#include "common/numerics.hpp"

#include <cstdint>

namespace tpcoll::fp8 {

inline constexpr float kE4m3Max = 448.0f;
inline constexpr std::uint8_t kE4m3NaN = 0x7f;

TPCOLL_HOST_DEVICE inline std::uint8_t float_to_e4m3(float f) {
  const std::uint32_t u = numerics::float_bits(f);
  const std::uint32_t sign = (u >> 24) & 0x80u;
  const std::uint32_t a = u & 0x7fffffffu;
  // Normal (a >= 2^-6): keep 3 mantissa bits, ties to even; a carry out of
  // the mantissa correctly bumps the exponent. Rebias 127 -> 7.
  const std::uint32_t normal = ((a + 0x7ffffu + ((a >> 20) & 1u)) >> 20) - (120u << 3);
  // Subnormal or zero (a < 2^-6): added to 2^14, whose ulp is 2^-9 (the
  // smallest E4M3 subnormal), a is rounded by fp32's own rounding to the
  // subnormal grid, ties to even; the difference of the bits counts the
  // units, and 8 units (2^-6) is exactly the smallest normal's code.
  const std::uint32_t subnormal = numerics::float_bits(numerics::bits_float(a) + 16384.0f) - 0x46800000u;
  // Above 448 (0x43e00000), infinity included: the largest finite, 0x7e.
  // (Values below 464 would round to 448 anyway; satfinite clamps the rest.)
  const std::uint32_t finite = a > 0x43e00000u ? 0x7eu : (a >= 0x3c800000u ? normal : subnormal);
  return static_cast<std::uint8_t>(a > 0x7f800000u ? kE4m3NaN : (sign | finite));
}

// The exact value of an E4M3 code (NaN for 0x7f / 0xff).
TPCOLL_HOST_DEVICE inline float e4m3_to_float(std::uint8_t v) {
  const std::uint32_t sign = std::uint32_t{v & 0x80u} << 24;
  const std::uint32_t exponent = (v >> 3) & 0xfu, mantissa = v & 0x7u;
  if (exponent == 0xfu && mantissa == 0x7u) return numerics::bits_float(sign | 0x7fc00000u);
  const float magnitude = exponent == 0 ? static_cast<float>(mantissa) * 0.001953125f  // mantissa * 2^-9
                                        : numerics::bits_float(((exponent + 120u) << 23) | (mantissa << 20));
  return numerics::bits_float(sign | numerics::float_bits(magnitude));
}

}  // namespace tpcoll::fp8
