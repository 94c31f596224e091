// The numeric contract every backend implements (DESIGN.md, "Numerics"),
// usable from host and device code so CPU and GPU kernels share one source of
// truth for rounding:
//   * 16-bit floats widen exactly to fp32 and narrow with round-to-nearest-even;
//     NaN narrows to the canonical 0x7fff (as CUDA's conversions do).
//   * A reduction starts from rank 0's value and adds ranks 1..n-1 in order in
//     fp32 (starting from rank 0 rather than from +0 keeps -0 + -0 = -0).
//   * RMSNorm's sum of squares uses kNormPartials partial sums: element e goes
//     to partial (e / kNormGroup) % kNormPartials, added in increasing e as
//     acc = acc + v * v with two roundings (no FMA); the partials combine by a
//     halving tree p[i] = p[i] + p[i + half]. A GPU block reproduces this with
//     one thread per partial (a warp with eight per lane), whatever its launch
//     shape. 256 partials keep each partial's chain of dependent additions
//     short (32 for a row of 8192) where a GPU row waits on it.
#pragma once

#include "common/host_device.hpp"

#include <cstdint>
#include <cstring>

namespace tpcoll::numerics {

inline constexpr int kNormPartials = 256;
inline constexpr int kNormGroup = 8;

TPCOLL_HOST_DEVICE inline std::uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

TPCOLL_HOST_DEVICE inline float bits_float(std::uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

TPCOLL_HOST_DEVICE inline float bf16_to_float(std::uint16_t h) { return bits_float(std::uint32_t{h} << 16); }

TPCOLL_HOST_DEVICE inline std::uint16_t float_to_bf16(float f) {
  const std::uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;
  return static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// The fp16 conversions compute every case and select, without branches, so
// that loops over them vectorise.
TPCOLL_HOST_DEVICE inline float fp16_to_float(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t{h & 0x8000u} << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1fu;
  const std::uint32_t mantissa = h & 0x3ffu;
  const std::uint32_t normal = ((exponent + 112u) << 23) | (mantissa << 13);
  const std::uint32_t inf_nan = 0x7f800000u | (mantissa << 13);
  // Zero or subnormal: mantissa * 2^-24, exact in fp32.
  const std::uint32_t subnormal = float_bits(static_cast<float>(mantissa) * 5.9604644775390625e-8f);
  const std::uint32_t magnitude = exponent == 0x1fu ? inf_nan : (exponent == 0 ? subnormal : normal);
  return bits_float(sign | magnitude);
}

TPCOLL_HOST_DEVICE inline std::uint16_t float_to_fp16(float f) {
  const std::uint32_t u = float_bits(f);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const std::uint32_t a = u & 0x7fffffffu;
  // Normal fp16 (a >= 2^-14): round the mantissa to 10 bits, ties to even,
  // and rebias the exponent; a carry out of the mantissa is the right answer.
  const std::uint32_t normal = (a + 0xfffu + ((a >> 13) & 1u) - 0x38000000u) >> 13;
  // Subnormal or zero: adding 0.5 makes fp32's own rounding (ulp 2^-24 at
  // 0.5) round to the fp16 subnormal grid, ties to even.
  const std::uint32_t subnormal = float_bits(bits_float(a) + 0.5f) - 0x3f000000u;
  const std::uint32_t finite = a >= 0x477ff000u ? 0x7c00u : (a >= 0x38800000u ? normal : subnormal);
  return static_cast<std::uint16_t>(a > 0x7f800000u ? 0x7fffu : (sign | finite));
}

}  // namespace tpcoll::numerics
