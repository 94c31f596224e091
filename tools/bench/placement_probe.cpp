#include "tools/bench/placement_probe.hpp"

#include "tools/bench/median_estimate.hpp"

#include <algorithm>
#include <thread>
#include <utility>
#include <vector>

namespace tpcoll::bench {

double tiny_all_reduce_us(Communicator& comm) {
  constexpr int kWarmup = 4, kCalls = 32;
  float in = 1.0f, out = 0.0f;
  std::vector<double> times;
  times.reserve(kCalls);
  for (int i = 0; i < kWarmup + kCalls; ++i) {
    const auto begin = std::chrono::steady_clock::now();
    comm.all_reduce(&in, &out, 1, DType::kFloat32);
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - begin).count();
    if (i >= kWarmup) times.push_back(us);
  }
  const double median = estimate_median(std::move(times)).median;
  std::vector<double> medians(static_cast<std::size_t>(comm.world_size()));
  const std::int64_t shape[1] = {1};
  comm.all_gather(&median, medians.data(), DType::kFloat64, shape, 0);
  return *std::max_element(medians.begin(), medians.end());
}

double PlacementProbe::probe() {
  last_us_ = measure_us_();
  fastest_us_ = fastest_us_ == 0 ? last_us_ : std::min(fastest_us_, last_us_);
  return last_us_;
}

bool PlacementProbe::settle(double& waited_s) {
  const auto begin = std::chrono::steady_clock::now();
  // The poll count, not a clock, ends the wait: every rank must stop together.
  bool back = !moved(probe());
  for (int poll = 0; !back && poll < limits_.most_polls; ++poll) {
    std::this_thread::sleep_for(limits_.poll);
    back = !moved(probe());
  }
  waited_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  return back;
}

}  // namespace tpcoll::bench
