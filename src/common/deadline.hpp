// A point in time after which a wait gives up: every wait in tpcoll has one.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace tpcoll {

class Deadline {
 public:
  using Clock = std::chrono::steady_clock;

  // Timeouts beyond a year are treated as a year (the clock's nanoseconds
  // would overflow near 292 years).
  explicit Deadline(std::int64_t timeout_ms)
      : timeout_ms_(timeout_ms),
        end_(Clock::now() + std::chrono::milliseconds(std::min<std::int64_t>(timeout_ms, kYearMs))) {}

  bool expired() const { return Clock::now() >= end_; }
  std::int64_t timeout_ms() const { return timeout_ms_; }
  // Milliseconds left, rounded up, clamped to what poll() takes.
  int remaining_ms() const {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(end_ - Clock::now()).count();
    return static_cast<int>(std::clamp<std::int64_t>(left, 0, 1 << 30));
  }

 private:
  static constexpr std::int64_t kYearMs = 365LL * 24 * 3600 * 1000;
  std::int64_t timeout_ms_;
  Clock::time_point end_;
};

}  // namespace tpcoll
