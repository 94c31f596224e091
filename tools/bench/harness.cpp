#include "tools/bench/harness.hpp"

#include "tools/bench/data.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

namespace tpcoll::bench {

Row Harness::start_row(const char* op, DType dtype, std::size_t count) const {
  Row row;
  row.op = op;
  row.dtype = dtype_name(dtype);
  row.count = count;
  row.bytes = count * dtype_size(dtype);
  row.world = comm_.world_size();
  if (baseline_) row.baseline = baseline_->name();
  return row;
}

bool Harness::agree(bool local_ok, const void* result, std::size_t bytes) {
  const std::array<std::int64_t, 2> mine{static_cast<std::int64_t>(fnv1a(result, bytes)), local_ok ? 1 : 0};
  std::vector<std::int64_t> all(2 * static_cast<std::size_t>(comm_.world_size()));
  const std::int64_t shape[1] = {2};
  comm_.all_gather(mine.data(), all.data(), DType::kInt64, shape, 0);
  for (int r = 0; r < comm_.world_size(); ++r)
    if (all[2 * r] != mine[0] || all[2 * r + 1] != 1) return false;
  return true;
}

std::size_t Harness::timed_calls(double warmup_us_per_call) {
  std::size_t n = static_cast<std::size_t>(options_.iterations);
  if (options_.min_ms <= 0 || options_.warmup == 0) return n;
  // Every rank must make as many calls: rank 0's estimate decides.
  std::vector<double> estimates(static_cast<std::size_t>(comm_.world_size()));
  const std::int64_t shape[1] = {1};
  comm_.all_gather(&warmup_us_per_call, estimates.data(), DType::kFloat64, shape, 0);
  constexpr std::size_t kMostCalls = 100000;
  const double wanted = std::ceil(options_.min_ms * 1000.0 / std::max(estimates.front(), 1e-3));
  return std::max(n, static_cast<std::size_t>(std::min(wanted, static_cast<double>(kMostCalls))));
}

std::vector<double> Harness::time_in_turns(const std::vector<std::function<void()>>& ops) {
  double fastest_warmup_us = std::numeric_limits<double>::infinity();  // per call, of the fastest op
  for (const auto& op : ops) {
    const auto begin = std::chrono::steady_clock::now();
    for (int i = 0; i < options_.warmup; ++i) op();
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - begin).count();
    fastest_warmup_us = std::min(fastest_warmup_us, us / std::max(1, options_.warmup));
  }
  const std::size_t n = timed_calls(fastest_warmup_us), m = ops.size();
  // The ops take turns, a few calls each, so that whatever slows a shared
  // machine for a while (another job, a frequency change) reaches each of
  // them alike and their medians compare within one run. The first call of a
  // turn is not timed: it absorbs the switch (the ranks' skew and the cache
  // left by the previous op), which consecutive calls of one op never see.
  // The order of the turns is shuffled each round, the same on every rank,
  // so that no op always follows the same one.
  constexpr std::size_t kCallsPerTurn = 5;
  std::vector<double> times(n * m);  // call i of op j at [j * n + i]
  std::vector<std::size_t> order(m);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::mt19937 shuffle_bits(m);  // seeded alike on every rank
  for (std::size_t first = 0; first < n; first += kCallsPerTurn) {
    std::shuffle(order.begin(), order.end(), shuffle_bits);
    for (std::size_t j : order) {
      ops[j]();
      for (std::size_t i = first; i < std::min(n, first + kCallsPerTurn); ++i) {
        const auto begin = std::chrono::steady_clock::now();
        ops[j]();
        times[j * n + i] = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - begin).count();
      }
    }
  }
  // A call ends for the job when its slowest rank ends.
  std::vector<double> all(times.size() * static_cast<std::size_t>(comm_.world_size()));
  const std::int64_t shape[1] = {static_cast<std::int64_t>(times.size())};
  comm_.all_gather(times.data(), all.data(), DType::kFloat64, shape, 0);
  for (std::size_t k = 0; k < times.size(); ++k)
    for (int r = 0; r < comm_.world_size(); ++r) times[k] = std::max(times[k], all[r * times.size() + k]);
  std::vector<double> medians(m);
  for (std::size_t j = 0; j < m; ++j) {
    const auto first = times.begin() + static_cast<std::ptrdiff_t>(j * n);
    const auto middle = first + static_cast<std::ptrdiff_t>(n / 2);
    std::nth_element(first, middle, first + static_cast<std::ptrdiff_t>(n));
    medians[j] = *middle;
  }
  return medians;
}

double Harness::time_us(const std::function<void()>& op) { return time_in_turns({op}).front(); }

std::vector<Algo> Harness::runnable(std::initializer_list<Algo> candidates, Op op, DType dtype,
                                    std::span<const std::int64_t> shape) {
  std::vector<Algo> out;
  for (Algo algo : candidates) {
    comm_.force_algo(algo);
    if (comm_.plan(op, dtype, shape).algo == algo) out.push_back(algo);
  }
  comm_.force_algo(std::nullopt);
  return out;
}

void Harness::measure(Row& row, const std::vector<Algo>& candidates, const std::function<void()>& op,
                      const std::function<void()>& baseline_op) {
  // As dispatched, then each candidate forced: timed in turns.
  std::vector<std::function<void()>> ops{[&] {
    comm_.force_algo(std::nullopt);
    op();
  }};
  if (options_.all_algos)
    for (Algo algo : candidates)
      ops.emplace_back([&, algo] {
        comm_.force_algo(algo);
        op();
      });
  // Every rank holds the same probe times, so all take the same turns here.
  std::vector<double> times;
  for (int attempt = 0;; ++attempt) {
    const bool settled = placement_.settle(row.placement_wait_s);
    const double before_us = placement_.last_us();
    times = time_in_turns(ops);
    comm_.force_algo(std::nullopt);
    if (baseline_) row.baseline_time_us = time_us(baseline_op);
    row.placement_probe_us = std::max(before_us, placement_.probe());
    row.placement_moved = timed_apart(row);  // so far; the bench judges it again at the end
    // A placement that did not come back within the wait is taken as it is.
    if (!row.placement_moved || !settled || attempt == kPlacementRetries) break;
    ++row.retimed;
  }
  row.time_us = times.front();
  for (std::size_t j = 1; j < times.size(); ++j) row.candidates.emplace_back(algo_label(candidates[j - 1]), times[j]);
}

}  // namespace tpcoll::bench
