// The bench's confidence in a median (tools/bench/median_estimate.hpp).
#include "tools/bench/median_estimate.hpp"

#include <gtest/gtest.h>

#include <cmath>
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

}  // namespace
}  // namespace tpcoll::bench
