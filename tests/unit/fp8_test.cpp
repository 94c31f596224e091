// The host fp32 -> E4M3 converter (common/fp8.hpp) against an independent
// reference: the nearest of the 127 non-negative finite E4M3 values found by
// search in double precision, ties to the even code, above 448 saturated,
// NaN 0x7f. The GPU numerics test checks the hardware conversion against the
// same converter.
#include "common/fp8.hpp"
#include "common/fp8_quantise.hpp"

#include <gtest/gtest.h>

#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

namespace {

namespace f8 = tpcoll::fp8;

// Every non-negative finite E4M3 value, by code 0x00..0x7e, computed from the
// format's definition (not from e4m3_to_float).
std::array<double, 127> e4m3_values() {
  std::array<double, 127> v{};
  for (int code = 0; code < 127; ++code) {
    const int exponent = code >> 3, mantissa = code & 7;
    v[code] = exponent == 0 ? std::ldexp(mantissa, -9) : std::ldexp(8 + mantissa, exponent - 7 - 3);
  }
  return v;
}

std::uint8_t reference_e4m3(float f) {
  static const std::array<double, 127> values = e4m3_values();
  if (std::isnan(f)) return 0x7f;
  const std::uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  const double a = std::fabs(static_cast<double>(f));
  if (a >= 448.0) return sign | 0x7e;
  const auto above = std::upper_bound(values.begin(), values.end(), a);  // first value > a
  const int hi = static_cast<int>(above - values.begin()), lo = hi - 1;
  const double down = a - values[lo], up = values[hi] - a;
  const int code = down < up ? lo : (up < down ? hi : (lo % 2 == 0 ? lo : hi));
  return static_cast<std::uint8_t>(sign | code);
}

float bits(std::uint32_t u) { return std::bit_cast<float>(u); }

TEST(Fp8, EveryCodeRoundTrips) {
  for (int code = 0; code < 256; ++code) {
    const auto c = static_cast<std::uint8_t>(code);
    const float v = f8::e4m3_to_float(c);
    if ((code & 0x7f) == 0x7f) {
      EXPECT_TRUE(std::isnan(v)) << code;
      EXPECT_EQ(f8::float_to_e4m3(v), 0x7f) << code;
      continue;
    }
    EXPECT_EQ(v, static_cast<float>(std::copysign(e4m3_values()[code & 0x7f], (code & 0x80) ? -1.0 : 1.0))) << code;
    EXPECT_EQ(f8::float_to_e4m3(v), c) << "code 0x" << std::hex << code;  // -0 included: 0x80
  }
}

TEST(Fp8, Edges) {
  EXPECT_EQ(f8::float_to_e4m3(448.0f), 0x7e);
  EXPECT_EQ(f8::float_to_e4m3(-448.0f), 0xfe);
  EXPECT_EQ(f8::float_to_e4m3(460.0f), 0x7e);  // below the midpoint to 480: rounds to 448
  EXPECT_EQ(f8::float_to_e4m3(464.0f), 0x7e);  // the midpoint: saturates
  EXPECT_EQ(f8::float_to_e4m3(1e30f), 0x7e);
  EXPECT_EQ(f8::float_to_e4m3(std::numeric_limits<float>::infinity()), 0x7e);
  EXPECT_EQ(f8::float_to_e4m3(-std::numeric_limits<float>::infinity()), 0xfe);
  EXPECT_EQ(f8::float_to_e4m3(std::numeric_limits<float>::quiet_NaN()), 0x7f);
  EXPECT_EQ(f8::float_to_e4m3(-std::numeric_limits<float>::quiet_NaN()), 0x7f);
  EXPECT_EQ(f8::float_to_e4m3(bits(0x7f800001u)), 0x7f);  // signalling NaN
  EXPECT_EQ(f8::float_to_e4m3(0.0f), 0x00);
  EXPECT_EQ(f8::float_to_e4m3(-0.0f), 0x80);
  EXPECT_EQ(f8::float_to_e4m3(1.0f), 0x38);
  // Ties to even among normals: 1 + 1/16 lies between 1 (0x38) and 1.125 (0x39).
  EXPECT_EQ(f8::float_to_e4m3(1.0625f), 0x38);
  EXPECT_EQ(f8::float_to_e4m3(1.1875f), 0x3a);  // between 0x39 and 0x3a: even is 0x3a
  EXPECT_EQ(f8::float_to_e4m3(std::nextafter(1.0625f, 2.0f)), 0x39);
  // A carry out of the mantissa: 1.9375 ties between 1.875 (0x3f) and 2 (0x40).
  EXPECT_EQ(f8::float_to_e4m3(1.9375f), 0x40);
  // Subnormals (multiples of 2^-9) and the normal boundary 2^-6.
  EXPECT_EQ(f8::float_to_e4m3(std::ldexp(1.0f, -9)), 0x01);
  EXPECT_EQ(f8::float_to_e4m3(std::ldexp(1.0f, -10)), 0x00);  // half the smallest: tie to even 0
  EXPECT_EQ(f8::float_to_e4m3(-std::ldexp(1.0f, -10)), 0x80);
  EXPECT_EQ(f8::float_to_e4m3(std::nextafter(std::ldexp(1.0f, -10), 1.0f)), 0x01);
  EXPECT_EQ(f8::float_to_e4m3(std::ldexp(3.0f, -10)), 0x02);  // 1.5 units: tie to even 2
  EXPECT_EQ(f8::float_to_e4m3(std::ldexp(5.0f, -10)), 0x02);  // 2.5 units: tie to even 2
  EXPECT_EQ(f8::float_to_e4m3(std::ldexp(15.0f, -10)), 0x08);  // 7.5 units: up to 2^-6, the smallest normal
  EXPECT_EQ(f8::float_to_e4m3(std::ldexp(1.0f, -6)), 0x08);
  EXPECT_EQ(f8::float_to_e4m3(bits(0x00000001u)), 0x00);  // fp32 subnormal
  EXPECT_EQ(f8::float_to_e4m3(-bits(0x00000001u)), 0x80);
}

TEST(Fp8, EveryMidpointAndItsNeighbours) {
  const auto values = e4m3_values();
  for (int code = 0; code + 1 < 127; ++code) {
    const auto mid = static_cast<float>((values[code] + values[code + 1]) / 2);  // exact in fp32
    ASSERT_EQ(static_cast<double>(mid), (values[code] + values[code + 1]) / 2);
    for (const float sign : {1.0f, -1.0f}) {
      for (const float f : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1000.0f)}) {
        ASSERT_EQ(f8::float_to_e4m3(sign * f), reference_e4m3(sign * f)) << sign * f;
      }
    }
    EXPECT_EQ(f8::float_to_e4m3(mid), code % 2 == 0 ? code : code + 1) << mid;
  }
}

TEST(Fp8, RandomFloatsMatchTheReference) {
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> in_range(-500.0f, 500.0f);
  std::uniform_int_distribution<int> exponent(-14, 10);
  for (int i = 0; i < 2'000'000; ++i) {
    float f;
    switch (i % 3) {
      case 0: f = bits(rng()); break;  // any pattern, NaN and Inf included
      case 1: f = in_range(rng); break;
      default: f = std::ldexp(in_range(rng) / 500.0f, exponent(rng)); break;  // near the subnormal range
    }
    ASSERT_EQ(f8::float_to_e4m3(f), reference_e4m3(f)) << "bits 0x" << std::hex << std::bit_cast<std::uint32_t>(f);
  }
}

TEST(Fp8, QuantisationRule) {
  EXPECT_EQ(f8::per_token_scale(448.0f), 1.0f);
  EXPECT_EQ(f8::per_token_scale(0.0f), 0.0f);
  EXPECT_EQ(f8::divisor_of(0.0f), 1.0f);  // an all-zero row is divided by 1, not 0
  EXPECT_EQ(f8::divisor_of(0.5f), 0.5f);
  EXPECT_EQ(f8::quantise(-0.0f, 1.0f), 0x80);
  EXPECT_EQ(f8::quantise(3.0f, 0.5f), 0x4c);      // 6 = 1.5 * 2^2: exponent 9, mantissa 0b100
  EXPECT_EQ(f8::quantise(3.0f, tpcoll::numerics::divisor(0.5f)), 0x4c);  // the GPU's way, same code
  EXPECT_EQ(f8::quantise(1000.0f, 1.0f), 0x7e);   // clamped to 448
  EXPECT_EQ(f8::quantise(-1000.0f, 2.0f), 0xfe);
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(f8::quantise(5.0f, inf), 0x00);       // a row with an infinity: finite values to 0 ...
  EXPECT_EQ(f8::quantise(inf, inf), 0x7f);        // ... and the infinity to NaN
}

}  // namespace
