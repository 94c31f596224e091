// FP8 E4M3 (the OCP "E4M3FN" format: 4 exponent bits of bias 7, 3 mantissa
// bits, no infinities, 0x7f / 0xff NaN, largest finite 448), converted from
// fp32 as the GPU's cvt.rn.satfinite.e4m3x2.f32 converts: round to nearest
// even, finite values beyond 448 and infinities saturate to +-448, zero keeps
// its sign. NaN becomes the canonical 0x7f whatever its sign (the GPU
// quantiser selects 0x7f for NaN itself, so the two agree whatever the
// hardware does with a NaN's sign). Integer arithmetic only, so that the host
// reference never depends on the FPU's rounding mode.
#pragma once

#include "common/numerics.hpp"

#include <cstdint>

namespace tpcoll::fp8 {

inline constexpr float kE4m3Max = 448.0f;
inline constexpr std::uint8_t kE4m3NaN = 0x7f;

TPCOLL_HOST_DEVICE inline std::uint8_t float_to_e4m3(float f) {
  const std::uint32_t u = numerics::float_bits(f);
  const auto sign = static_cast<std::uint8_t>((u >> 24) & 0x80u);
  const std::uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return kE4m3NaN;
  // Above 448 (0x43e00000), infinity included: the largest finite, 0x7e.
  // (Values below 464 would round to 448 anyway; satfinite clamps the rest.)
  if (a > 0x43e00000u) return sign | 0x7eu;
  if (a >= 0x3c800000u) {
    // Normal (>= 2^-6): keep 3 mantissa bits, ties to even; a carry out of
    // the mantissa correctly bumps the exponent. Rebias 127 -> 7.
    const std::uint32_t rounded = (a + 0x7ffffu + ((a >> 20) & 1u)) >> 20;
    return static_cast<std::uint8_t>(sign | (rounded - (120u << 3)));
  }
  // Subnormal: the value in units of 2^-9 (the smallest subnormal), rounded
  // to an integer, ties to even; 8 units is 2^-6, whose code 0x08 is exactly
  // the smallest normal's. fp32 subnormals and zero are far below half a unit.
  const std::uint32_t biased = a >> 23;
  if (biased == 0) return sign;
  const std::uint32_t significand = (a & 0x7fffffu) | 0x800000u;  // value = significand * 2^(biased - 150)
  const std::uint32_t shift = 141u - biased;                        // to units of 2^-9; >= 21 here
  if (shift > 24) return sign;                                      // below half a unit
  const std::uint32_t units = significand >> shift;
  const std::uint32_t rest = significand & ((1u << shift) - 1u), half = 1u << (shift - 1u);
  const std::uint32_t up = rest > half || (rest == half && (units & 1u)) ? 1u : 0u;
  return static_cast<std::uint8_t>(sign | (units + up));
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
