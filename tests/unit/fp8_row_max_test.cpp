// fp8::row_max_bracket (common/fp8_row_max.hpp) against the maximum of the
// outputs themselves, each formed as the kernels form it: wherever the
// bracket decides the maximum, it is that maximum bit for bit, for bf16 and
// fp16 rows of ordinary data, of every scale (subnormal values, huge
// weights, tiny or large inverse RMS), with zeros, NaN and infinities; it
// decides nearly every ordinary row; and it leaves open the rows that sit on
// a rounding boundary or outside its argument.
#include "common/fp8_row_max.hpp"
#include "common/division.hpp"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace {

namespace f8 = tpcoll::fp8;
namespace nx = tpcoll::numerics;

struct Type {
  const char* name;
  float (*round)(float);  // to the type and back
};
const Type kBf16{"bf16", [](float f) { return nx::bf16_to_float(nx::float_to_bf16(f)); }};
const Type kFp16{"fp16", [](float f) { return nx::fp16_to_float(nx::float_to_fp16(f)); }};

struct Row {
  std::vector<float> s, w;  // values of the type
  float inv;
};

// What the kernels know of a row before its outputs, and its true maximum.
struct Outcome {
  bool decided;
  bool valid;     // RN(|s_e| * inv) finite for every e: the bracket's precondition
  float decided_max;
  float true_max;
};

Outcome evaluate(const Type& t, const Row& row) {
  float max_product = 0.0f, true_max = 0.0f;
  bool valid = true;
  for (std::size_t e = 0; e < row.s.size(); ++e) {
    max_product = std::fmax(max_product, std::fabs(nx::multiplied(row.s[e], row.w[e])));
    if (std::fabs(row.w[e]) > f8::kMaxBracketedWeight) max_product = INFINITY;
    const float scaled = nx::multiplied(row.s[e], row.inv);
    valid = valid && !std::isinf(scaled);
    true_max = std::fmax(true_max, std::fabs(t.round(nx::multiplied(scaled, row.w[e]))));
  }
  const f8::RowMaxBracket b = f8::row_max_bracket(max_product, row.inv);
  const float lo = t.round(b.lo);
  return {lo == t.round(b.hi), valid, lo, true_max};
}

// A random value of the type with magnitude 2^[lo, hi), either sign.
float random_value(const Type& t, std::mt19937& rng, int lo, int hi) {
  std::uniform_real_distribution<float> mantissa(1.0f, 2.0f);
  std::uniform_int_distribution<int> exponent(lo, hi - 1), sign(0, 1);
  const float v = std::ldexp(mantissa(rng), exponent(rng));
  return t.round(sign(rng) ? -v : v);
}

// Checks every decided row and returns how many were decided.
int check_rows(const Type& t, const std::vector<Row>& rows) {
  int decided = 0;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Outcome o = evaluate(t, rows[i]);
    if (!o.valid || !o.decided) continue;
    ++decided;
    EXPECT_EQ(std::bit_cast<std::uint32_t>(o.decided_max), std::bit_cast<std::uint32_t>(o.true_max))
        << t.name << " row " << i << ": decided " << o.decided_max << ", true maximum " << o.true_max;
  }
  return decided;
}

TEST(Fp8RowMax, DecidesOrdinaryRowsExactly) {
  for (const Type& t : {kBf16, kFp16}) {
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 1.0f), near_one(1.0f, 0.1f);
    std::vector<Row> rows;
    for (int i = 0; i < 20000; ++i) {
      const std::size_t hidden = 8u << (i % 6);
      const float scale = std::ldexp(1.0f, i % 13 - 6);
      Row row{{}, {}, 0.0f};
      double squares = 0.0;
      for (std::size_t e = 0; e < hidden; ++e) {
        row.s.push_back(t.round(normal(rng) * scale));
        row.w.push_back(t.round(near_one(rng)));
        squares += static_cast<double>(row.s.back()) * row.s.back();
      }
      row.inv = static_cast<float>(1.0 / std::sqrt(squares / static_cast<double>(hidden) + 1e-6));
      rows.push_back(row);
    }
    const int decided = check_rows(t, rows);
    // A row is left open only when its maximum lies within about 2^-22 of a
    // rounding boundary of the type: 2^-14 of bf16 rows, 2^-11 of fp16 ones.
    EXPECT_GE(decided, 19900) << t.name;
  }
}

TEST(Fp8RowMax, DecidedRowsOfEveryScaleAreExact) {
  for (const Type& t : {kBf16, kFp16}) {
    const int lowest = t.round(0x1p-20f) == 0x1p-20f && t.round(0x1p-130f) > 0.0f ? -133 : -24;
    const int highest = t.round(0x1p100f) == 0x1p100f ? 127 : 15;
    std::mt19937 rng(11);
    std::uniform_int_distribution<int> exponent(lowest, highest), inv_exponent(-60, 60), hidden(1, 64);
    std::vector<Row> rows;
    for (int i = 0; i < 100000; ++i) {
      const int s_lo = exponent(rng), w_lo = exponent(rng);
      Row row{{}, {}, std::ldexp(std::uniform_real_distribution<float>(1.0f, 2.0f)(rng), inv_exponent(rng))};
      for (int e = hidden(rng); e > 0; --e) {
        row.s.push_back(random_value(t, rng, s_lo, std::min(s_lo + 12, highest + 1)));
        row.w.push_back(random_value(t, rng, w_lo, std::min(w_lo + 12, highest + 1)));
      }
      rows.push_back(row);
    }
    EXPECT_GT(check_rows(t, rows), 1000) << t.name;
  }
}

TEST(Fp8RowMax, SubnormalScaledValuesWithHugeWeightsAreLeftOpen) {
  // s_j * inv subnormal in fp32 rounds with an error far above 2^-24
  // relative; a huge weight carries it into the output. The weight bound
  // (2^24) must leave such rows open: some of them have an output outside
  // P (1 +- 2^-22), where the bracket would be wrong.
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> unit(1.0f, 2.0f);
  int outside = 0;
  std::vector<Row> rows;
  for (int i = 0; i < 20000; ++i) {
    const float inv = std::ldexp(unit(rng), -3);
    const float tiny = kBf16.round(std::ldexp(unit(rng), -133 + static_cast<int>(rng() % 6)));
    const float huge = kBf16.round(std::ldexp(unit(rng), 100 + static_cast<int>(rng() % 27)));
    Row row{{tiny, kBf16.round(unit(rng))}, {huge, 1.0f}, inv};
    // The largest product: the big element's, unless the tiny one's is larger.
    const double p = std::fmax(std::fabs(static_cast<double>(tiny) * huge), row.s[1]) * inv;
    const float y = std::fabs(nx::multiplied(nx::multiplied(tiny, inv), huge));
    if (std::fabs(y - p) > p * 0x1p-22) ++outside;
    rows.push_back(row);
  }
  EXPECT_GT(outside, 100);
  check_rows(kBf16, rows);
}

TEST(Fp8RowMax, MaximaWithinTheRoundingErrorOfABoundaryAreLeftOpen) {
  // s * inv just below a bf16 midpoint m whose tie rounds up, by less than
  // fp32's half ulp: the exact P rounds (in bf16) below m, the output's fp32
  // product rounds to m and then up. A bracket narrower than the roundings'
  // error would decide these rows wrongly.
  std::vector<Row> rows;
  for (int k = 1; k < 128; k += 2) {
    const double m = 1.0 + (2.0 * k + 1.0) * 0x1p-8;  // between 1 + k 2^-7 (odd) and the even code above
    for (int j = 0; j < 128; ++j) {
      const float s = 1.0f + static_cast<float>(j) * 0x1p-7f;
      const float near = static_cast<float>(m / s);
      for (int d = -4; d <= 4; ++d) {
        const float inv = std::bit_cast<float>(std::bit_cast<std::uint32_t>(near) + d);
        const double p = static_cast<double>(s) * inv;
        if (p < m && p > m - 0x1p-24 && nx::multiplied(s, inv) == static_cast<float>(m)) rows.push_back({{s}, {1.0f}, inv});
      }
    }
  }
  ASSERT_GT(rows.size(), 20u);
  EXPECT_EQ(check_rows(kBf16, rows), 0);
}

TEST(Fp8RowMax, RowsOnARoundingBoundaryOrOutsideTheArgumentAreLeftOpen) {
  const auto decided = [](const Type& t, Row row) { return evaluate(t, row).decided; };
  // P = 1 + 2^-8 exactly: the midpoint between bf16's 1 and 1 + 2^-7.
  EXPECT_FALSE(decided(kBf16, {{1.0f}, {1.0f}, 1.0f + 0x1p-8f}));
  EXPECT_TRUE(decided(kBf16, {{1.0f}, {1.0f}, 1.0f + 0x1p-6f}));
  // fp16's midpoint above 1.
  EXPECT_FALSE(decided(kFp16, {{1.0f}, {1.0f}, 1.0f + 0x1p-11f}));
  const float inf = INFINITY, nan = NAN;
  EXPECT_FALSE(decided(kBf16, {{1.0f, 2.0f}, {inf, 1.0f}, 0.5f}));   // an infinite weight
  EXPECT_FALSE(decided(kBf16, {{1.0f}, {1.0f}, inf}));              // a zero row with eps = 0
  EXPECT_FALSE(decided(kBf16, {{1.0f}, {1.0f}, 0.0f}));             // a sum of squares that overflowed
  EXPECT_FALSE(decided(kBf16, {{1.0f}, {1.0f}, nan}));              // a NaN in the row
  EXPECT_FALSE(decided(kBf16, {{0x1p-60f}, {0x1p-60f}, 1.0f}));     // P below 2^-100
  // Every product 0 (a product may underflow where the output does not).
  EXPECT_FALSE(decided(kBf16, {{0.0f, -0.0f}, {2.0f, 3.0f}, 4.0f}));
  EXPECT_FALSE(decided(kBf16, {{0x1p-80f}, {0x1p-80f}, 0x1p60f}));
  // Decided, and equal to the outputs' maximum: a NaN weight (its output is
  // NaN, ignored), a zero weight.
  EXPECT_EQ(check_rows(kBf16, {{{1.0f, 3.0f}, {1.0f, nan}, 0.25f}, {{5.0f, 6.0f}, {0.0f, 2.0f}, 0.5f}}), 2);
}

}  // namespace
