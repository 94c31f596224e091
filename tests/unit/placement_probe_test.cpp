// The bench's placement probe (tools/bench/placement_probe.hpp): its
// decisions on scripted measurements, and the measurement itself on a
// world-1 communicator.
#include "tools/bench/placement_probe.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace tpcoll::bench {
namespace {

// Measurements from a script, counting how many were taken; past its end the
// last one repeats.
struct Script {
  std::vector<double> times;
  std::size_t taken = 0;
  double next() { return times[std::min(taken++, times.size() - 1)]; }
};

PlacementLimits fast_limits(int most_polls) {
  PlacementLimits limits;
  limits.poll = std::chrono::milliseconds(1);
  limits.most_polls = most_polls;
  return limits;
}

TEST(PlacementProbe, MovedIsJudgedAgainstTheRunsFastest) {
  Script script{{1.0, 0.5}};
  PlacementProbe probe([&] { return script.next(); });
  EXPECT_DOUBLE_EQ(probe.probe(), 1.0);
  EXPECT_FALSE(probe.moved(1.9));
  EXPECT_TRUE(probe.moved(2.1));
  EXPECT_DOUBLE_EQ(probe.probe(), 0.5);  // a faster placement lowers the bar
  EXPECT_TRUE(probe.moved(1.1));
  EXPECT_FALSE(probe.moved(0.9));
}

TEST(PlacementProbe, SettleReturnsAtOnceWhereTheRanksAreClose) {
  Script script{{1.0, 1.2}};
  PlacementProbe probe([&] { return script.next(); }, fast_limits(100));
  probe.probe();
  double waited_s = 0;
  EXPECT_TRUE(probe.settle(waited_s));
  EXPECT_EQ(script.taken, 2u);
  EXPECT_LT(waited_s, 0.5);
}

TEST(PlacementProbe, SettleWaitsForTheRanksToComeBack) {
  Script script{{1.0, 5.0, 4.0, 1.5}};
  PlacementProbe probe([&] { return script.next(); }, fast_limits(100));
  probe.probe();
  double waited_s = 0;
  EXPECT_TRUE(probe.settle(waited_s));
  EXPECT_EQ(script.taken, 4u);
  EXPECT_GE(waited_s, 0.002);  // two polls of 1 ms at least
}

TEST(PlacementProbe, SettleGivesUpAfterItsPolls) {
  Script script{{1.0, 5.0}};
  PlacementProbe probe([&] { return script.next(); }, fast_limits(3));
  probe.probe();
  double waited_s = 0;
  EXPECT_FALSE(probe.settle(waited_s));
  EXPECT_EQ(script.taken, 1u + 1u + 3u);  // the first probe, settle's own, three polls
}

TEST(PlacementProbe, MeasuresATinyAllReduce) {
  Config config;
  config.job_id = "placement-probe-test";
  Communicator comm(config);
  const double us = tiny_all_reduce_us(comm);
  EXPECT_TRUE(std::isfinite(us));
  EXPECT_GT(us, 0.0);
}

}  // namespace
}  // namespace tpcoll::bench
