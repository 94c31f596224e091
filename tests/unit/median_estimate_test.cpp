// The bench's confidence in a median, and how many samples it takes for it
// (tools/bench/median_estimate.hpp).
#include "tools/bench/median_estimate.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace tpcoll::bench {
namespace {

std::vector<double> one_to(int n) {
  std::vector<double> out;
  for (int i = n; i >= 1; --i) out.push_back(i);  // unsorted on purpose
  return out;
}

TEST(MedianEstimate, IntervalComesFromTheOrderStatistics) {
  // 101 samples 1..101: median 51; 0.98 sqrt(101) = 9.85, so the interval
  // runs from the 40th to the 61st order statistic (0-based): 41 to 62.
  const MedianEstimate e = estimate_median(one_to(101));
  EXPECT_DOUBLE_EQ(e.median, 51);
  EXPECT_DOUBLE_EQ(e.noise, (62.0 - 41.0) / (2 * 51.0));
}

TEST(MedianEstimate, IdenticalSamplesAreKnownExactly) {
  const MedianEstimate e = estimate_median(std::vector<double>(50, 7.5));
  EXPECT_DOUBLE_EQ(e.median, 7.5);
  EXPECT_DOUBLE_EQ(e.noise, 0);
}

TEST(MedianEstimate, TooFewSamplesGiveNoInterval) {
  EXPECT_TRUE(std::isinf(estimate_median({}).noise));
  const MedianEstimate e = estimate_median({3, 1, 2});
  EXPECT_DOUBLE_EQ(e.median, 2);
  EXPECT_TRUE(std::isinf(e.noise));
  EXPECT_TRUE(std::isfinite(estimate_median(one_to(8)).noise));
}

TEST(MedianEstimate, FourTimesTheSamplesHalveTheInterval) {
  // Call times around 100 us with a long right tail, as on a shared machine.
  std::mt19937 bits(1);
  std::lognormal_distribution<double> call_us(std::log(100.0), 0.1);
  std::vector<double> samples;
  for (int i = 0; i < 400; ++i) samples.push_back(call_us(bits));
  const double few = estimate_median(samples).noise;
  for (int i = 0; i < 1200; ++i) samples.push_back(call_us(bits));
  const double many = estimate_median(samples).noise;
  EXPECT_NEAR(many / few, 0.5, 0.15);
  EXPECT_NEAR(estimate_median(samples).median, 100.0, 1.0);
}

SampleBudget budget(std::size_t least, double min_ms, double max_noise, double max_ms) {
  SampleBudget b;
  b.least = least;
  b.min_ms = min_ms;
  b.max_noise = max_noise;
  b.max_ms = max_ms;
  return b;
}

TEST(SampleBudget, TheLeastComesFirstThenEnough) {
  const SampleBudget n40 = budget(40, 0, 0, 0);
  EXPECT_EQ(more_samples(n40, 0, 0.01, 1.0), 40u);
  EXPECT_EQ(more_samples(n40, 40, 0.01, 1.0), 0u);  // no --max-noise: noise asks for nothing
  // --min-ms 100 of 0.01 ms samples: 10,000 in all, -n being fewer.
  EXPECT_EQ(more_samples(budget(40, 100, 0, 0), 40, 0.01, 1.0), 9960u);
  // Samples of unknown length: -n alone counts, for --min-ms and --max-ms alike.
  EXPECT_EQ(more_samples(budget(40, 100, 0.005, 3000), 0, 0, 1.0), 40u);
  EXPECT_EQ(more_samples(budget(40, 100, 0.005, 3000), 40, 0, 1.0), 0u);
}

TEST(SampleBudget, NoiseDoublesTheSamplesUntilMaxMs) {
  const SampleBudget b = budget(40, 0, 0.005, 3);  // 3 ms of 0.01 ms samples: 300
  EXPECT_EQ(more_samples(b, 40, 0.01, 0.004), 0u);  // known within +-0.4%: enough
  EXPECT_EQ(more_samples(b, 40, 0.01, 0.02), 40u);
  EXPECT_EQ(more_samples(b, 160, 0.01, 0.02), 140u);  // doubling, cut at --max-ms
  EXPECT_EQ(more_samples(b, 300, 0.01, 0.02), 0u);
  EXPECT_EQ(more_samples(b, 40, 0.01, std::numeric_limits<double>::infinity()), 40u);
}

TEST(SampleBudget, NeverMoreThanTheMost) {
  SampleBudget b = budget(5, 1000, 0, 0);
  b.most = 2000;
  EXPECT_EQ(more_samples(b, 5, 1e-6, 1.0), 1995u);  // --min-ms would ask for 10^9
  EXPECT_EQ(more_samples(b, 2000, 1e-6, 1.0), 0u);
}

}  // namespace
}  // namespace tpcoll::bench
