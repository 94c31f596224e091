// The CPU reduction kernel (src/cpu/kernels.hpp) against the contract of
// common/numerics.hpp: widen, add in rank order starting from rank 0's value,
// round once; NaN narrows to 0x7fff. Whatever vector path the CPU picks
// (AVX2 clones, F16C for float16) must give these bits.
#include "cpu/kernels.hpp"

#include "common/numerics.hpp"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace {

namespace nx = tpcoll::numerics;

float widen(tpcoll_dtype_t d, const std::uint32_t v) {
  if (d == TPCOLL_FLOAT32) return std::bit_cast<float>(v);
  return d == TPCOLL_FLOAT16 ? nx::fp16_to_float(static_cast<std::uint16_t>(v))
                             : nx::bf16_to_float(static_cast<std::uint16_t>(v));
}

std::uint32_t narrow(tpcoll_dtype_t d, float f) {
  if (d == TPCOLL_FLOAT32) return std::bit_cast<std::uint32_t>(f);
  return d == TPCOLL_FLOAT16 ? nx::float_to_fp16(f) : nx::float_to_bf16(f);
}

// Runs cpu::reduce on `srcs` (element patterns, one vector per rank) and
// compares every element with the reference. float32 NaNs compare as NaN
// (their payload is the adder's business); 16-bit NaNs must be 0x7fff.
::testing::AssertionResult reduces_like_reference(tpcoll_dtype_t d, const std::vector<std::vector<std::uint32_t>>& srcs) {
  const std::size_t count = srcs[0].size(), esize = d == TPCOLL_FLOAT32 ? 4 : 2;
  const int n = static_cast<int>(srcs.size());
  std::vector<std::vector<std::byte>> bytes(srcs.size(), std::vector<std::byte>(count * esize));
  std::vector<const void*> ptrs;
  for (std::size_t r = 0; r < srcs.size(); ++r) {
    for (std::size_t i = 0; i < count; ++i) {
      if (esize == 4) {
        std::memcpy(&bytes[r][i * 4], &srcs[r][i], 4);
      } else {
        const auto h = static_cast<std::uint16_t>(srcs[r][i]);
        std::memcpy(&bytes[r][i * 2], &h, 2);
      }
    }
    ptrs.push_back(bytes[r].data());
  }
  std::vector<std::byte> out(count * esize + 64, std::byte{0xcd});
  tpcoll::cpu::reduce(d, ptrs.data(), n, out.data(), count);
  for (std::size_t i = count * esize; i < out.size(); ++i)
    if (out[i] != std::byte{0xcd}) return ::testing::AssertionFailure() << "wrote past element " << count;
  int bad = 0;
  ::testing::AssertionResult result = ::testing::AssertionSuccess();
  for (std::size_t i = 0; i < count && bad < 5; ++i) {
    float acc = widen(d, srcs[0][i]);
    for (int r = 1; r < n; ++r) acc = acc + widen(d, srcs[r][i]);
    const std::uint32_t expected = narrow(d, acc);
    std::uint32_t got = 0;
    std::memcpy(&got, &out[i * esize], esize);
    const bool both_nan = d == TPCOLL_FLOAT32 && std::isnan(acc) && std::isnan(std::bit_cast<float>(got));
    if (got != expected && !both_nan) {
      if (bad++ == 0) result = ::testing::AssertionFailure();
      result << tpcoll_dtype_name(d) << " n=" << n << " count=" << count << " element " << i << ": got 0x"
             << std::hex << got << ", expected 0x" << expected << std::dec << "; ";
    }
  }
  return result;
}

constexpr tpcoll_dtype_t kDtypes[] = {TPCOLL_FLOAT32, TPCOLL_FLOAT16, TPCOLL_BFLOAT16};

std::uint32_t random_pattern(tpcoll_dtype_t d, std::mt19937_64& rng) {
  const std::uint64_t r = rng();
  if (d == TPCOLL_FLOAT32) {
    // Mostly moderate exponents (so sums round interestingly), sometimes anything.
    if (r % 16 == 0) return static_cast<std::uint32_t>(r >> 20);
    return static_cast<std::uint32_t>((r >> 20) & 0x807fffffu) | ((112u + static_cast<std::uint32_t>(r % 32)) << 23);
  }
  if (r % 16 == 0) return static_cast<std::uint32_t>(r >> 40) & 0xffffu;  // anything, NaN and inf included
  if (d == TPCOLL_FLOAT16)  // |x| < 2^3: sums of a few stay finite, subnormals included
    return (static_cast<std::uint32_t>(r >> 40) & 0x83ffu) | ((static_cast<std::uint32_t>(r % 18)) << 10);
  return (static_cast<std::uint32_t>(r >> 40) & 0x807fu) | ((110u + static_cast<std::uint32_t>(r % 24)) << 7);
}

TEST(Kernels, ReduceMatchesTheReferenceForEveryLengthAndRankCount) {
  std::mt19937_64 rng(99);
  for (const tpcoll_dtype_t d : kDtypes) {
    for (const int n : {1, 2, 3, 5, 8}) {
      std::vector<std::size_t> counts;
      for (std::size_t c = 1; c <= 70; ++c) counts.push_back(c);  // every vector tail
      for (const std::size_t c : {127u, 128u, 129u, 1000u, 4097u}) counts.push_back(c);
      for (const std::size_t count : counts) {
        std::vector<std::vector<std::uint32_t>> srcs(static_cast<std::size_t>(n), std::vector<std::uint32_t>(count));
        for (auto& s : srcs)
          for (auto& v : s) v = random_pattern(d, rng);
        ASSERT_TRUE(reduces_like_reference(d, srcs));
      }
    }
  }
}

TEST(Kernels, ReduceOfEveryHalfPatternWithSpecialValues) {
  // src0 runs through all 2^16 patterns, src1 is one special value: covers
  // NaN canonicalisation, infinities, overflow, subnormal sums and signed zeros.
  for (const tpcoll_dtype_t d : {TPCOLL_FLOAT16, TPCOLL_BFLOAT16}) {
    const std::vector<std::uint32_t> specials =
        d == TPCOLL_FLOAT16
            ? std::vector<std::uint32_t>{0x0000, 0x8000, 0x0001, 0x8001, 0x03ff, 0x0400, 0x3c00, 0xbc00, 0x7bff,
                                         0xfbff, 0x7c00, 0xfc00, 0x7e00, 0x7c01, 0xfe00, 0x3555, 0x1400, 0x0200}
            : std::vector<std::uint32_t>{0x0000, 0x8000, 0x0001, 0x8001, 0x007f, 0x0080, 0x3f80, 0xbf80, 0x7f7f,
                                         0xff7f, 0x7f80, 0xff80, 0x7fc0, 0x7f81, 0xffc0, 0x3eab, 0x3b80};
    std::vector<std::uint32_t> all(65536);
    for (std::uint32_t i = 0; i < 65536; ++i) all[i] = i;
    for (const std::uint32_t s : specials) {
      const std::vector<std::uint32_t> same(65536, s);
      ASSERT_TRUE(reduces_like_reference(d, {all, same})) << "special 0x" << std::hex << s;
      ASSERT_TRUE(reduces_like_reference(d, {same, all})) << "special 0x" << std::hex << s << " first";
      ASSERT_TRUE(reduces_like_reference(d, {all, same, all})) << "special 0x" << std::hex << s;
    }
  }
}

TEST(Kernels, NegativeZeroSurvivesAReduction) {
  for (const tpcoll_dtype_t d : kDtypes) {
    const std::uint32_t neg_zero = d == TPCOLL_FLOAT32 ? 0x80000000u : 0x8000u;
    for (const int n : {1, 2, 4, 8}) {
      for (const std::size_t count : {1u, 9u, 100u}) {
        const std::vector<std::vector<std::uint32_t>> srcs(static_cast<std::size_t>(n),
                                                           std::vector<std::uint32_t>(count, neg_zero));
        ASSERT_TRUE(reduces_like_reference(d, srcs));  // the reference gives -0 (sign bit set)
        EXPECT_EQ(narrow(d, widen(d, neg_zero) + widen(d, neg_zero)), neg_zero);
      }
    }
  }
}

}  // namespace
