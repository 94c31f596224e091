// Division by a shared divisor (common/division.hpp), the code the GPU's FP8
// quantisation runs, against IEEE `v / d` bit for bit: every bf16 and every
// fp16 value, and millions of floats, each divided by divisors over the
// whole exponent range (powers of two, subnormals, random, the extremes, the
// per-token scales max / 448 that the FP8 op divides by, and significands
// next to 1 and 2, where the reciprocal's rounding error is largest relative
// to the divisor).
#include "common/division.hpp"
#include "common/fp8.hpp"
#include "common/fp8_quantise.hpp"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace nx = tpcoll::numerics;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kMax = std::numeric_limits<float>::max();
constexpr float kMinNormal = std::numeric_limits<float>::min();
constexpr float kMinSubnormal = std::numeric_limits<float>::denorm_min();

float f32(std::uint32_t bits) { return std::bit_cast<float>(bits); }
std::uint32_t bits32(float f) { return std::bit_cast<std::uint32_t>(f); }

// A float and its neighbours on either side.
void push_with_neighbours(std::vector<float>& out, float f) {
  out.push_back(f);
  out.push_back(std::nextafter(f, 0.0f));
  out.push_back(std::nextafter(f, kInf));
}

std::vector<float> divisors() {
  std::vector<float> d = {1.0f, 3.0f, 0.1f, 448.0f, 1.0f / 448.0f, kMax, kMinNormal, kMinSubnormal, kInf, -1.0f,
                          -3.0f, -kMax};
  for (int e = -149; e <= 127; ++e) d.push_back(std::ldexp(1.0f, e));  // every power of two, subnormal ones too
  // The ends of the reciprocal's range.
  for (const float edge : {std::ldexp(1.0f, 126), std::ldexp(1.0f, -126), std::ldexp(1.0f, 127)})
    push_with_neighbours(d, edge);
  // Significands next to 2 (the reciprocal rounds by up to half an ulp
  // just above a power of two) and next to 1, at a few exponents.
  for (const int e : {-100, -7, 0, 9, 100})
    for (std::uint32_t k = 0; k < 8; ++k) {
      d.push_back(std::ldexp(f32(0x3fffffffu - k), e));
      d.push_back(std::ldexp(f32(0x3f800001u + k), e));
    }
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::uint32_t> positive_finite(1, 0x7f7fffffu), subnormal(1, 0x007fffffu);
  for (int i = 0; i < 256; ++i) d.push_back(f32(positive_finite(rng)));  // exponents uniformly over the range
  for (int i = 0; i < 32; ++i) d.push_back(f32(subnormal(rng)));
  // Per-token scales: a row's max |out| (a bf16, fp16 or fp32 value) / 448.
  std::uniform_int_distribution<std::uint32_t> bf16_max(0x0080u, 0x7f7fu), fp16_max(0x0001u, 0x7bffu);
  std::uniform_real_distribution<float> typical(0.01f, 100.0f);
  for (int i = 0; i < 64; ++i) {
    d.push_back(nx::bf16_to_float(static_cast<std::uint16_t>(bf16_max(rng))) / 448.0f);
    d.push_back(nx::fp16_to_float(static_cast<std::uint16_t>(fp16_max(rng))) / 448.0f);
    d.push_back(nx::bf16_to_float(nx::float_to_bf16(typical(rng))) / 448.0f);
    d.push_back(typical(rng) / 448.0f);
  }
  return d;
}

// Counts the dividends whose quotient by `d` differs from v / d in any bit;
// `first` describes the first.
template <typename Dividends>
std::size_t mismatches(const Dividends& dividends, float d, std::string& first) {
  const nx::Divisor divisor = nx::divisor(d);
  std::size_t wrong = 0;
  for (const float v : dividends) {
    const float got = nx::quotient(v, divisor), want = v / d;
    if (bits32(got) == bits32(want)) continue;
    if (wrong++ == 0) {
      std::ostringstream s;
      s << std::hexfloat << v << " / " << d << ": got " << got << ", want " << want;
      first = s.str();
    }
  }
  return wrong;
}

std::vector<float> all_16_bit(float (*widen)(std::uint16_t)) {
  std::vector<float> v;
  for (std::uint32_t h = 0; h <= 0xffffu; ++h) v.push_back(widen(static_cast<std::uint16_t>(h)));
  return v;
}

TEST(Division, EveryBf16ValueByEveryDivisor) {
  const std::vector<float> values = all_16_bit(nx::bf16_to_float);
  for (const float d : divisors()) {
    std::string first;
    ASSERT_EQ(mismatches(values, d, first), 0u) << first;
  }
}

TEST(Division, EveryFp16ValueByEveryDivisor) {
  const std::vector<float> values = all_16_bit(nx::fp16_to_float);
  for (const float d : divisors()) {
    std::string first;
    ASSERT_EQ(mismatches(values, d, first), 0u) << first;
  }
}

// The range check's edges for each divisor: dividends whose quotient lies
// at the exponent limits, |v| near 2^-79, and the special values.
TEST(Division, EdgeDividendsByEveryDivisor) {
  for (const float d : divisors()) {
    std::vector<float> values = {0.0f, -0.0f, kInf, -kInf, std::numeric_limits<float>::quiet_NaN(), 1.0f, -1.0f,
                                 kMax, -kMax, kMinNormal, -kMinNormal, kMinSubnormal, -kMinSubnormal};
    for (const float limit : {std::ldexp(1.0f, -125), std::ldexp(1.0f, -126), std::ldexp(1.0f, 126),
                              std::ldexp(1.0f, 127), 448.0f}) {
      const float v = limit * std::fabs(d);
      if (!std::isfinite(v)) continue;
      push_with_neighbours(values, v);
      push_with_neighbours(values, -v);
    }
    push_with_neighbours(values, std::ldexp(1.0f, -79));
    push_with_neighbours(values, -std::ldexp(1.0f, -79));
    std::string first;
    ASSERT_EQ(mismatches(values, d, first), 0u) << first;
  }
}

TEST(Division, RandomFloatsByRandomDivisors) {
  const std::vector<float> d = divisors();
  std::mt19937 rng(11);
  std::uniform_int_distribution<std::size_t> pick(0, d.size() - 1);
  std::uniform_int_distribution<std::uint32_t> any;
  std::uniform_real_distribution<float> typical(-10.0f, 10.0f);
  std::vector<float> values(4096);
  for (int round = 0; round < 2048; ++round) {
    for (std::size_t i = 0; i < values.size(); ++i) values[i] = i % 2 ? f32(any(rng)) : typical(rng);
    std::string first;
    ASSERT_EQ(mismatches(values, d[pick(rng)], first), 0u) << first;
  }
}

// Every significand of the dividend by divisors whose significand is next to
// 2 or 1 (the quotients that the reciprocal alone misses by more than an
// ulp), and by 448 (a GPU row's per-token scale, of any fp32 maximum).
TEST(Division, EverySignificandByHardDivisors) {
  std::vector<float> values;
  values.reserve(1u << 23);
  for (std::uint32_t m = 0; m < (1u << 23); ++m) values.push_back(f32(0x3f800000u | m));  // [1, 2)
  for (const float d : {f32(0x3fffffffu), f32(0x3ffffffeu), f32(0x3ffffff5u), f32(0x3fc00001u), f32(0x3f800001u),
                        f32(0x3fb504f3u) /* ~sqrt 2 */, 448.0f}) {
    std::string first;
    ASSERT_EQ(mismatches(values, d, first), 0u) << first;
  }
}

// The cheap path is the one these tests exercise: it serves every normal
// value of an ordinary row, and only the range check's exclusions divide.
TEST(Division, ReciprocalPathServesOrdinaryValues) {
  for (const float d : {1.0f, 3.0f / 448.0f, 448.0f, std::ldexp(1.0f, -100)}) {
    const nx::Divisor divisor = nx::divisor(d);
    ASSERT_TRUE(divisor.in_range);
    for (std::uint32_t h = 0; h <= 0xffffu; ++h) {
      const float v = nx::bf16_to_float(static_cast<std::uint16_t>(h));
      const float q = v / d;
      const bool ordinary = v == 0.0f || (std::isfinite(v) && std::fabs(v) >= std::ldexp(1.0f, -79) &&
                                          std::fabs(q) >= std::ldexp(1.0f, -124) &&
                                          std::fabs(q) <= std::ldexp(1.0f, 125));
      ASSERT_TRUE(!ordinary || nx::corrected_quotient(v, divisor).exact) << v << " / " << d;
    }
  }
  EXPECT_FALSE(nx::corrected_quotient(std::numeric_limits<float>::quiet_NaN(), nx::divisor(1.0f)).exact);
  EXPECT_FALSE(nx::corrected_quotient(kInf, nx::divisor(1.0f)).exact);
  EXPECT_FALSE(nx::corrected_quotient(kMinSubnormal, nx::divisor(1.0f)).exact);
  EXPECT_FALSE(nx::corrected_quotient(1.0f, nx::divisor(kMinSubnormal)).exact);
  EXPECT_FALSE(nx::corrected_quotient(1.0f, nx::divisor(kInf)).exact);
  EXPECT_FALSE(nx::corrected_quotient(1.0f, nx::divisor(kMax)).exact);  // its reciprocal is subnormal
  // The GPU's per-token scale divides by this constant.
  const nx::Divisor e4m3_max = tpcoll::fp8::e4m3_max_divisor(), computed = nx::divisor(448.0f);
  EXPECT_EQ(bits32(e4m3_max.value), bits32(computed.value));
  EXPECT_EQ(bits32(e4m3_max.reciprocal), bits32(computed.reciprocal));
  EXPECT_EQ(e4m3_max.in_range, computed.in_range);
  EXPECT_EQ(bits32(nx::quotient(-0.0f, nx::divisor(3.0f))), 0x80000000u);
  EXPECT_EQ(bits32(nx::quotient(0.0f, nx::divisor(-3.0f))), 0x80000000u);
}

// The kernels' way to a code (fp8::quantise by a RowDivisor: the close
// quotient, else the exact way) against the IEEE quotient's code, for every
// bf16 and fp16 value by every divisor, the E4M3 midpoints times the divisor
// (exact ties where the product is exact), edge dividends and random floats.
std::size_t wrong_codes(const std::vector<float>& values, float d, std::string& first) {
  const tpcoll::fp8::RowDivisor divisor = tpcoll::fp8::row_divisor_of(d);
  std::size_t wrong = 0;
  for (const float v : values) {
    const std::uint8_t got = tpcoll::fp8::quantise(v, divisor), want = tpcoll::fp8::quantise(v, d);
    if (got == want) continue;
    if (wrong++ == 0) {
      std::ostringstream s;
      s << std::hexfloat << v << " / " << d << ": code 0x" << std::hex << int{got} << ", want 0x" << int{want};
      first = s.str();
    }
  }
  return wrong;
}

TEST(Fp8CloseQuotient, CodesAreTheIeeeQuotientsCodes) {
  std::vector<float> values = all_16_bit(nx::bf16_to_float);
  const std::vector<float> fp16 = all_16_bit(nx::fp16_to_float);
  values.insert(values.end(), fp16.begin(), fp16.end());
  std::mt19937 rng(13);
  std::uniform_int_distribution<std::uint32_t> any;
  for (int i = 0; i < 65536; ++i) values.push_back(f32(any(rng)));
  std::vector<float> d = divisors();
  for (const float few_bits : {1.5f, 3.0f, 0.75f, 0.01f, 5.0f / 448.0f}) d.push_back(few_bits);
  for (const float divisor : d) {
    std::vector<float> with_edges = values;
    for (const float limit : {448.0f, 464.0f, 416.0f, std::ldexp(1.0f, -6), std::ldexp(1.0f, -9),
                              std::ldexp(1.0f, -10), std::ldexp(1.0f, -126), std::ldexp(1.0f, 127)}) {
      const float v = limit * std::fabs(divisor);
      if (!std::isfinite(v)) continue;
      push_with_neighbours(with_edges, v);
      push_with_neighbours(with_edges, -v);
    }
    for (int code = 0; code < 0x7e; ++code) {
      const float mid = (tpcoll::fp8::e4m3_to_float(static_cast<std::uint8_t>(code)) +
                         tpcoll::fp8::e4m3_to_float(static_cast<std::uint8_t>(code + 1))) / 2;
      push_with_neighbours(with_edges, mid * divisor);
      push_with_neighbours(with_edges, -mid * divisor);
    }
    std::string first;
    ASSERT_EQ(wrong_codes(with_edges, divisor, first), 0u) << first;
  }
}

// The close quotient itself is RN(v / d) for every value whose quotient lies
// where codes differ, so the kernels take the exact way only for NaN and
// infinities: every significand of [1, 2) by hard divisors and per-token
// scales, and random bf16 rows by the scales the FP8 op meets.
TEST(Fp8CloseQuotient, IsTheIeeeQuotientWhereCodesDiffer) {
  const auto in_window = [](float q) { return std::fabs(q) >= std::ldexp(1.0f, -10) && std::fabs(q) <= 464.0f; };
  std::mt19937 rng(17);
  std::uniform_real_distribution<float> magnitude(0.5f, 8.0f);
  std::vector<float> d = {f32(0x3fffffffu), f32(0x3f800001u), 1.5f, 0.01f, 448.0f, 1.0f / 448.0f};
  for (int i = 0; i < 8; ++i) {
    d.push_back(magnitude(rng) / 448.0f);
    d.push_back(nx::bf16_to_float(nx::float_to_bf16(magnitude(rng))) / 448.0f);
  }
  for (const float divisor : d) {
    const tpcoll::fp8::RowDivisor rd = tpcoll::fp8::row_divisor_of(divisor);
    for (std::uint32_t m = 0; m < (1u << 23); m += 7) {
      for (const float v : {f32(0x3f800000u | m), -f32(0x40800000u | m)}) {
        const float want = v / divisor;
        if (!in_window(want)) continue;
        ASSERT_EQ(bits32(tpcoll::fp8::close_quotient(v, rd)), bits32(want)) << std::hexfloat << v << " / " << divisor;
      }
    }
  }
  EXPECT_EQ(bits32(tpcoll::fp8::close_quotient(-0.0f, tpcoll::fp8::row_divisor_of(3.0f))), 0x80000000u);
  EXPECT_EQ(bits32(tpcoll::fp8::close_quotient(0.0f, tpcoll::fp8::row_divisor_of(3.0f))), 0u);
  EXPECT_TRUE(std::isnan(tpcoll::fp8::close_quotient(1.0f, tpcoll::fp8::row_divisor_of(kMax))));  // out of range
  EXPECT_TRUE(std::isnan(tpcoll::fp8::close_quotient(1.0f, tpcoll::fp8::row_divisor_of(std::ldexp(1.0f, -70)))));
}

}  // namespace
