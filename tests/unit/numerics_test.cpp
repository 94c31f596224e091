// The numeric contract of src/common/numerics.hpp: exact widening, narrowing
// with round-to-nearest-even, canonical NaN. Every conversion is checked
// against an independent reference written here from the IEEE definitions
// (nearest representable value in double arithmetic), exhaustively where the
// domain is 16 bits and on millions of random inputs where it is 32 bits.
#include "common/numerics.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace {

namespace nx = tpcoll::numerics;

constexpr float kInf = std::numeric_limits<float>::infinity();

float f32(std::uint32_t bits) { return std::bit_cast<float>(bits); }
std::uint32_t bits32(float f) { return std::bit_cast<std::uint32_t>(f); }

bool is_bf16_nan(std::uint16_t h) { return (h & 0x7f80u) == 0x7f80u && (h & 0x7fu) != 0; }
bool is_fp16_nan(std::uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0; }

// |value| of a bf16 magnitude pattern, treating exponent 255 as one more
// binade (so 0x7f80 is the "virtual" 2^128 that rounding to inf compares with).
double bf16_magnitude(std::uint32_t m) {
  const int e = static_cast<int>((m >> 7) & 0xff);
  const double frac = static_cast<double>(m & 0x7f);
  if (e == 0) return std::ldexp(frac, -133);  // 2^-126 * frac/128
  return std::ldexp(1.0 + frac / 128.0, e - 127);
}

// |value| of an fp16 magnitude pattern; 0x7c00 is the virtual 2^16.
double fp16_magnitude(std::uint32_t m) {
  const int e = static_cast<int>((m >> 10) & 0x1f);
  const double frac = static_cast<double>(m & 0x3ff);
  if (e == 0) return std::ldexp(frac, -24);
  return std::ldexp(1.0 + frac / 1024.0, e - 15);
}

// Chooses between magnitude patterns lo and lo + 1 around |x| by distance, ties to even.
template <typename Magnitude>
std::uint32_t nearest(double ax, std::uint32_t lo, Magnitude magnitude) {
  const double dlo = ax - magnitude(lo);
  const double dhi = magnitude(lo + 1) - ax;
  if (dlo < dhi) return lo;
  if (dhi < dlo) return lo + 1;
  return (lo & 1u) == 0 ? lo : lo + 1;
}

std::uint16_t reference_bf16(float f) {
  if (std::isnan(f)) return 0x7fff;
  const std::uint32_t u = bits32(f);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const double ax = std::fabs(static_cast<double>(f));
  if (std::isinf(f)) return static_cast<std::uint16_t>(sign | 0x7f80u);
  const std::uint32_t lo = (u & 0x7fffffffu) >> 16;  // truncation = next magnitude below
  if (bf16_magnitude(lo) == ax) return static_cast<std::uint16_t>(sign | lo);
  return static_cast<std::uint16_t>(sign | nearest(ax, lo, bf16_magnitude));
}

// Every non-negative fp16 magnitude, index == pattern, plus the virtual 2^16 at 0x7c00.
const std::vector<double>& fp16_table() {
  static const std::vector<double> table = [] {
    std::vector<double> t(0x7c01);
    for (std::uint32_t m = 0; m <= 0x7c00; ++m) t[m] = fp16_magnitude(m);
    return t;
  }();
  return table;
}

std::uint16_t reference_fp16(float f) {
  if (std::isnan(f)) return 0x7fff;
  const std::uint32_t sign = (bits32(f) >> 16) & 0x8000u;
  const double ax = std::fabs(static_cast<double>(f));
  const auto& t = fp16_table();
  if (ax >= t[0x7c00]) return static_cast<std::uint16_t>(sign | 0x7c00u);
  const auto it = std::upper_bound(t.begin(), t.end(), ax) - 1;  // t[lo] <= ax < t[lo + 1]
  const auto lo = static_cast<std::uint32_t>(it - t.begin());
  if (t[lo] == ax) return static_cast<std::uint16_t>(sign | lo);
  return static_cast<std::uint16_t>(sign | nearest(ax, lo, [&](std::uint32_t m) { return t[m]; }));
}

TEST(Numerics, ReferenceSelfCheck) {
  // The references themselves, on values whose answers are known by hand.
  EXPECT_EQ(reference_fp16(1.0f), 0x3c00);
  EXPECT_EQ(reference_fp16(65504.0f), 0x7bff);
  EXPECT_EQ(reference_fp16(65520.0f), 0x7c00);
  EXPECT_EQ(reference_fp16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(reference_fp16(-2.0f), 0xc000);
  EXPECT_EQ(reference_bf16(1.0f), 0x3f80);
  EXPECT_EQ(reference_bf16(-2.0f), 0xc000);
  EXPECT_EQ(reference_bf16(std::numeric_limits<float>::max()), 0x7f80);
}

TEST(Numerics, Bf16RoundTripIsExhaustivelyExact) {
  for (std::uint32_t h = 0; h <= 0xffff; ++h) {
    const auto x = static_cast<std::uint16_t>(h);
    const float f = nx::bf16_to_float(x);
    ASSERT_EQ(bits32(f), h << 16) << "widening 0x" << std::hex << h;
    const std::uint16_t back = nx::float_to_bf16(f);
    ASSERT_EQ(back, is_bf16_nan(x) ? 0x7fff : x) << "round trip of 0x" << std::hex << h;
  }
}

TEST(Numerics, Fp16RoundTripIsExhaustivelyExact) {
  for (std::uint32_t h = 0; h <= 0xffff; ++h) {
    const auto x = static_cast<std::uint16_t>(h);
    const float f = nx::fp16_to_float(x);
    if (is_fp16_nan(x)) {
      ASSERT_TRUE(std::isnan(f)) << "0x" << std::hex << h;
    } else if ((x & 0x7fffu) == 0x7c00u) {
      ASSERT_TRUE(std::isinf(f)) << "0x" << std::hex << h;
      ASSERT_EQ(std::signbit(f), (x & 0x8000u) != 0);
    } else {
      const double expected = ((x & 0x8000u) ? -1.0 : 1.0) * fp16_magnitude(x & 0x7fffu);
      ASSERT_EQ(static_cast<double>(f), expected) << "widening 0x" << std::hex << h;
      ASSERT_EQ(std::signbit(f), (x & 0x8000u) != 0) << "sign of 0x" << std::hex << h;
    }
    ASSERT_EQ(nx::float_to_fp16(f), is_fp16_nan(x) ? 0x7fff : x) << "round trip of 0x" << std::hex << h;
  }
}

TEST(Numerics, Bf16TiesToEven) {
  // 1 + 2^-8 is halfway between 0x3f80 (even) and 0x3f81: down.
  EXPECT_EQ(nx::float_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  // 1 + 3 * 2^-8 is halfway between 0x3f81 (odd) and 0x3f82: up.
  EXPECT_EQ(nx::float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  // Just above and below a tie go to the nearer neighbour.
  EXPECT_EQ(nx::float_to_bf16(std::nextafter(1.0f + std::ldexp(1.0f, -8), 2.0f)), 0x3f81);
  EXPECT_EQ(nx::float_to_bf16(std::nextafter(1.0f + 3 * std::ldexp(1.0f, -8), 0.0f)), 0x3f81);
  // Negative ties mirror positive ones.
  EXPECT_EQ(nx::float_to_bf16(-(1.0f + std::ldexp(1.0f, -8))), 0xbf80);
  EXPECT_EQ(nx::float_to_bf16(-(1.0f + 3 * std::ldexp(1.0f, -8))), 0xbf82);
  // A tie whose round-up carries into the exponent: 0x3fff (odd) -> 0x4000.
  EXPECT_EQ(nx::float_to_bf16(f32(0x3fff8000u)), 0x4000);
}

TEST(Numerics, Bf16EveryTieAndItsNeighbours) {
  // For every pair of adjacent finite bf16 magnitudes: the midpoint goes to
  // the even one, one float ulp either side goes to the nearer one.
  for (std::uint32_t lo = 0; lo < 0x7f80; ++lo) {
    const float a = nx::bf16_to_float(static_cast<std::uint16_t>(lo));
    const float mid = f32((lo << 16) | 0x8000u);  // exactly halfway in magnitude
    const std::uint16_t even = static_cast<std::uint16_t>((lo & 1u) ? lo + 1 : lo);
    for (const std::uint32_t sign : {0u, 0x8000u}) {
      const float s = sign ? -1.0f : 1.0f;
      ASSERT_EQ(nx::float_to_bf16(s * mid), sign | even) << "tie above 0x" << std::hex << lo;
      ASSERT_EQ(nx::float_to_bf16(s * std::nextafter(mid, 0.0f)), sign | lo) << "below tie 0x" << std::hex << lo;
      ASSERT_EQ(nx::float_to_bf16(s * std::nextafter(mid, kInf)), sign | (lo + 1))
          << "above tie 0x" << std::hex << lo;
      ASSERT_EQ(nx::float_to_bf16(s * a), sign | lo);
    }
  }
}

TEST(Numerics, Fp16TiesToEven) {
  // 1 + 2^-11 is halfway between 0x3c00 (even) and 0x3c01.
  EXPECT_EQ(nx::float_to_fp16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(nx::float_to_fp16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(nx::float_to_fp16(std::nextafter(1.0f + std::ldexp(1.0f, -11), 2.0f)), 0x3c01);
  EXPECT_EQ(nx::float_to_fp16(-(1.0f + 3 * std::ldexp(1.0f, -11))), 0xbc02);
  // A tie that carries into the exponent: 2047/1024 + half an ulp -> 2.0.
  EXPECT_EQ(nx::float_to_fp16(2.0f - std::ldexp(1.0f, -11)), 0x4000);
}

TEST(Numerics, Fp16EveryTieAndItsNeighbours) {
  for (std::uint32_t lo = 0; lo < 0x7bff; ++lo) {
    const double a = fp16_magnitude(lo), b = fp16_magnitude(lo + 1);
    const auto mid = static_cast<float>((a + b) / 2);  // 12 significant bits: exact in float
    ASSERT_EQ(static_cast<double>(mid), (a + b) / 2);
    const std::uint16_t even = static_cast<std::uint16_t>((lo & 1u) ? lo + 1 : lo);
    for (const std::uint32_t sign : {0u, 0x8000u}) {
      const float s = sign ? -1.0f : 1.0f;
      ASSERT_EQ(nx::float_to_fp16(s * mid), sign | even) << "tie above 0x" << std::hex << lo;
      ASSERT_EQ(nx::float_to_fp16(s * std::nextafter(mid, 0.0f)), sign | lo) << "below tie 0x" << std::hex << lo;
      ASSERT_EQ(nx::float_to_fp16(s * std::nextafter(mid, kInf)), sign | (lo + 1))
          << "above tie 0x" << std::hex << lo;
    }
  }
}

TEST(Numerics, Fp16OverflowAndInfinity) {
  EXPECT_EQ(nx::float_to_fp16(65504.0f), 0x7bff);
  EXPECT_EQ(nx::float_to_fp16(65519.99f), 0x7bff);  // below the halfway point to 2^16
  EXPECT_EQ(nx::float_to_fp16(65520.0f), 0x7c00);   // the tie rounds to "even" = inf
  EXPECT_EQ(nx::float_to_fp16(-65520.0f), 0xfc00);
  EXPECT_EQ(nx::float_to_fp16(1e6f), 0x7c00);
  EXPECT_EQ(nx::float_to_fp16(std::numeric_limits<float>::max()), 0x7c00);
  EXPECT_EQ(nx::float_to_fp16(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(nx::float_to_fp16(-std::numeric_limits<float>::infinity()), 0xfc00);
}

TEST(Numerics, Bf16OverflowAndInfinity) {
  const float max = std::numeric_limits<float>::max();
  EXPECT_EQ(nx::float_to_bf16(max), 0x7f80);  // beyond bf16's max + half an ulp
  EXPECT_EQ(nx::float_to_bf16(-max), 0xff80);
  EXPECT_EQ(nx::float_to_bf16(f32(0x7f7f0000u)), 0x7f7f);  // bf16's own max is exact
  EXPECT_EQ(nx::float_to_bf16(f32(0x7f7f7fffu)), 0x7f7f);  // just below the halfway point
  EXPECT_EQ(nx::float_to_bf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(nx::float_to_bf16(-std::numeric_limits<float>::infinity()), 0xff80);
}

TEST(Numerics, Fp16Subnormals) {
  const float tiny = std::ldexp(1.0f, -24);  // fp16's smallest subnormal
  EXPECT_EQ(nx::float_to_fp16(tiny), 0x0001);
  EXPECT_EQ(nx::fp16_to_float(0x0001), tiny);
  EXPECT_EQ(nx::float_to_fp16(tiny / 2), 0x0000);                              // tie -> 0 (even)
  EXPECT_EQ(nx::float_to_fp16(-tiny / 2), 0x8000);                             // and keeps the sign
  EXPECT_EQ(nx::float_to_fp16(std::nextafter(tiny / 2, 1.0f)), 0x0001);        // above the tie
  EXPECT_EQ(nx::float_to_fp16(1.5f * tiny), 0x0002);                           // tie -> 2 (even)
  EXPECT_EQ(nx::float_to_fp16(2.5f * tiny), 0x0002);                           // tie -> 2 (even)
  EXPECT_EQ(nx::float_to_fp16(3.5f * tiny), 0x0004);
  EXPECT_EQ(nx::float_to_fp16(1023.0f * tiny), 0x03ff);                        // largest subnormal
  EXPECT_EQ(nx::float_to_fp16(1023.5f * tiny), 0x0400);                        // tie into the normals
  EXPECT_EQ(nx::float_to_fp16(1024.0f * tiny), 0x0400);                        // smallest normal 2^-14
  EXPECT_EQ(nx::float_to_fp16(std::numeric_limits<float>::denorm_min()), 0x0000);  // fp32 subnormal
  EXPECT_EQ(nx::float_to_fp16(-std::numeric_limits<float>::denorm_min()), 0x8000);
  EXPECT_EQ(nx::float_to_fp16(std::ldexp(1.0f, -30)), 0x0000);
}

TEST(Numerics, Bf16Subnormals) {
  // bf16 shares fp32's exponent: fp32 subnormals round like any other value.
  EXPECT_EQ(nx::float_to_bf16(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(nx::float_to_bf16(f32(0x00008000u)), 0x0000);  // tie -> even 0
  EXPECT_EQ(nx::float_to_bf16(f32(0x00018000u)), 0x0002);  // tie -> even 2
  EXPECT_EQ(nx::float_to_bf16(f32(0x00010000u)), 0x0001);
  EXPECT_EQ(nx::float_to_bf16(f32(0x007fffffu)), 0x0080);  // largest fp32 subnormal -> 2^-126
}

TEST(Numerics, NegativeZeroIsPreserved) {
  EXPECT_EQ(nx::float_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(nx::float_to_fp16(-0.0f), 0x8000);
  EXPECT_EQ(nx::float_to_bf16(0.0f), 0x0000);
  EXPECT_EQ(nx::float_to_fp16(0.0f), 0x0000);
  EXPECT_EQ(bits32(nx::bf16_to_float(0x8000)), 0x80000000u);
  EXPECT_EQ(bits32(nx::fp16_to_float(0x8000)), 0x80000000u);
}

TEST(Numerics, NanBecomesCanonical) {
  for (const std::uint32_t nan : {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu, 0xffffffffu,
                                  0x7fa00000u, 0x7f810000u}) {
    EXPECT_EQ(nx::float_to_bf16(f32(nan)), 0x7fff) << std::hex << nan;
    EXPECT_EQ(nx::float_to_fp16(f32(nan)), 0x7fff) << std::hex << nan;
  }
  EXPECT_TRUE(std::isnan(nx::bf16_to_float(0x7fff)));
  EXPECT_TRUE(std::isnan(nx::fp16_to_float(0x7fff)));
}

// A float drawn so that every binade near and inside fp16's range (and its
// subnormals) is well represented, not just the huge and tiny exponents that
// uniformly random bits mostly give.
float fp16_range_float(std::mt19937_64& rng) {
  const std::uint64_t r = rng();
  const std::uint32_t exponent = 96 + static_cast<std::uint32_t>(r % 48);  // 2^-31 .. 2^16
  return f32(static_cast<std::uint32_t>((r >> 8) & 0x807fffffu) | (exponent << 23));
}

TEST(Numerics, RandomFloatsMatchTheReference) {
  std::mt19937_64 rng(20240611);
  int failures = 0;
  for (int i = 0; i < 3'000'000 && failures < 10; ++i) {
    const float f = (i % 2) ? f32(static_cast<std::uint32_t>(rng())) : fp16_range_float(rng);
    const std::uint16_t b = nx::float_to_bf16(f), rb = reference_bf16(f);
    const std::uint16_t h = nx::float_to_fp16(f), rh = reference_fp16(f);
    if (b != rb || h != rh) {
      ++failures;
      ADD_FAILURE() << "float bits 0x" << std::hex << bits32(f) << ": bf16 0x" << b << " (expected 0x" << rb
                    << "), fp16 0x" << h << " (expected 0x" << rh << ")";
    }
  }
}

TEST(Numerics, StridedSweepOfAllFloatsMatchesTheReference) {
  // Every 4093rd float pattern (a prime stride hits every low-bit residue).
  int failures = 0;
  for (std::uint64_t u = 0; u <= 0xffffffffull && failures < 10; u += 4093) {
    const float f = f32(static_cast<std::uint32_t>(u));
    if (nx::float_to_bf16(f) != reference_bf16(f) || nx::float_to_fp16(f) != reference_fp16(f)) {
      ++failures;
      ADD_FAILURE() << "float bits 0x" << std::hex << u;
    }
  }
}

#if defined(__FLT16_MAX__)
// GCC (12+) implements _Float16 on x86-64; its conversion is IEEE round-to-nearest-even.
#define TPCOLL_TEST_HAS_FLOAT16 1
std::uint16_t compiler_fp16(float f) {
  __extension__ const _Float16 h = static_cast<_Float16>(f);
  return std::bit_cast<std::uint16_t>(h);
}
float compiler_fp16_to_float(std::uint16_t h) {
  __extension__ const _Float16 x = std::bit_cast<_Float16>(h);
  return static_cast<float>(x);
}
#endif

TEST(Numerics, Fp16MatchesCompilerFloat16) {
#if defined(TPCOLL_TEST_HAS_FLOAT16)
  for (std::uint32_t h = 0; h <= 0xffff; ++h) {
    const auto x = static_cast<std::uint16_t>(h);
    if (is_fp16_nan(x)) continue;
    ASSERT_EQ(bits32(nx::fp16_to_float(x)), bits32(compiler_fp16_to_float(x))) << std::hex << h;
  }
  std::mt19937_64 rng(7);
  int failures = 0;
  for (int i = 0; i < 4'000'000 && failures < 10; ++i) {
    const float f = (i % 3 == 0) ? f32(static_cast<std::uint32_t>(rng())) : fp16_range_float(rng);
    if (std::isnan(f)) continue;  // _Float16 keeps the payload; tpcoll canonicalises
    if (nx::float_to_fp16(f) != compiler_fp16(f)) {
      ++failures;
      ADD_FAILURE() << "float bits 0x" << std::hex << bits32(f) << ": tpcoll 0x" << nx::float_to_fp16(f)
                    << ", _Float16 0x" << compiler_fp16(f);
    }
  }
#else
  GTEST_SKIP() << "this compiler has no _Float16";
#endif
}

#if defined(__x86_64__)
// float_to_fp16 against the F16C instruction (IEEE round-to-nearest-even in
// hardware) for the float patterns [begin, end); returns the disagreements
// (NaN inputs aside, which F16C keeps as NaN with their payload).
__attribute__((target("avx2,f16c"))) std::uint64_t fp16_disagreements_with_f16c(std::uint64_t begin,
                                                                                  std::uint64_t end,
                                                                                  std::uint32_t* first_bad) {
  constexpr int kBlock = 4096;
  alignas(32) std::uint16_t ours[kBlock];
  alignas(32) std::uint16_t hardware[kBlock];
  std::uint64_t bad = 0;
  for (std::uint64_t base = begin; base < end; base += kBlock) {
    for (int j = 0; j < kBlock; ++j) ours[j] = nx::float_to_fp16(f32(static_cast<std::uint32_t>(base + j)));
    for (int j = 0; j < kBlock; j += 8) {
      const __m256i bits = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(base + j)),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
      _mm_store_si128(reinterpret_cast<__m128i*>(hardware + j),
                      _mm256_cvtps_ph(_mm256_castsi256_ps(bits), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    for (int j = 0; j < kBlock; ++j) {
      if (ours[j] == hardware[j]) continue;
      const auto u = static_cast<std::uint32_t>(base + j);
      if ((u & 0x7fffffffu) > 0x7f800000u && ours[j] == 0x7fff && is_fp16_nan(hardware[j])) continue;
      if (bad++ == 0) *first_bad = u;
    }
  }
  return bad;
}
#endif

TEST(Numerics, Fp16MatchesF16cOnEveryFloat) {
#if defined(__x86_64__)
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("f16c")) GTEST_SKIP() << "no F16C on this CPU";
  // All 2^32 patterns, split over two threads.
  constexpr std::uint64_t kAll = std::uint64_t{1} << 32;
  std::uint64_t bad[2] = {};
  std::uint32_t first[2] = {};
  std::thread other([&] { bad[1] = fp16_disagreements_with_f16c(kAll / 2, kAll, &first[1]); });
  bad[0] = fp16_disagreements_with_f16c(0, kAll / 2, &first[0]);
  other.join();
  EXPECT_EQ(bad[0] + bad[1], 0u) << "first disagreement at float bits 0x" << std::hex << (bad[0] ? first[0] : first[1]);
#else
  GTEST_SKIP() << "x86-64 only";
#endif
}

}  // namespace
