#include "tools/bench/harness.hpp"

#include "tools/bench/data.hpp"

#include <algorithm>
#include <array>
#include <chrono>
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

double Harness::agreed_call_us(double warmup_us_per_call) {
  if (options_.warmup == 0) return 0;
  std::vector<double> estimates(static_cast<std::size_t>(comm_.world_size()));
  const std::int64_t shape[1] = {1};
  comm_.all_gather(&warmup_us_per_call, estimates.data(), DType::kFloat64, shape, 0);
  return std::max(estimates.front(), 1e-3);
}

void Harness::time_rounds(const std::vector<std::function<void()>>& ops, std::size_t calls, std::size_t turn,
                          bool whole_turns, std::mt19937& shuffle_bits, std::vector<std::vector<double>>& samples) {
  const std::size_t m = ops.size();
  std::vector<std::vector<double>> mine(m);
  std::vector<std::size_t> order(m);
  std::iota(order.begin(), order.end(), std::size_t{0});
  const auto us_since = [](std::chrono::steady_clock::time_point begin) {
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - begin).count();
  };
  for (std::size_t first = 0; first < calls; first += turn) {
    const std::size_t in_turn = std::min(calls, first + turn) - first;
    std::shuffle(order.begin(), order.end(), shuffle_bits);
    for (std::size_t j : order) {
      ops[j]();
      if (whole_turns) {
        const auto begin = std::chrono::steady_clock::now();
        for (std::size_t i = 0; i < in_turn; ++i) ops[j]();
        mine[j].push_back(us_since(begin) / static_cast<double>(in_turn));
      } else {
        for (std::size_t i = 0; i < in_turn; ++i) {
          const auto begin = std::chrono::steady_clock::now();
          ops[j]();
          mine[j].push_back(us_since(begin));
        }
      }
    }
  }
  // A call ends for the job when its slowest rank ends. Every rank took as
  // many samples of each op.
  std::vector<double> flat;
  for (const auto& op_samples : mine) flat.insert(flat.end(), op_samples.begin(), op_samples.end());
  std::vector<double> all(flat.size() * static_cast<std::size_t>(comm_.world_size()));
  const std::int64_t shape[1] = {static_cast<std::int64_t>(flat.size())};
  comm_.all_gather(flat.data(), all.data(), DType::kFloat64, shape, 0);
  for (std::size_t k = 0, j = 0; j < m; ++j)
    for (std::size_t i = 0; i < mine[j].size(); ++i, ++k) {
      double slowest = flat[k];
      for (int r = 0; r < comm_.world_size(); ++r) slowest = std::max(slowest, all[r * flat.size() + k]);
      samples[j].push_back(slowest);
    }
}

std::vector<MedianEstimate> Harness::time_in_turns(const std::vector<std::function<void()>>& ops) {
  double fastest_warmup_us = std::numeric_limits<double>::infinity();  // per call, of the fastest op
  for (const auto& op : ops) {
    const auto begin = std::chrono::steady_clock::now();
    for (int i = 0; i < options_.warmup; ++i) op();
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - begin).count();
    fastest_warmup_us = std::min(fastest_warmup_us, us / std::max(1, options_.warmup));
  }
  const double call_us = agreed_call_us(fastest_warmup_us);
  const SampleBudget budget = sample_budget(options_);
  // The ops take turns, a few calls each, so that whatever slows a shared
  // machine for a while (another job, a frequency change) reaches each of
  // them alike and their medians compare within one run. The first call of a
  // turn is not timed: it absorbs the switch (the ranks' skew and the cache
  // left by the previous op), which consecutive calls of one op never see.
  // The order of the turns is shuffled each round, the same on every rank,
  // so that no op always follows the same one.
  // The steady clock reads in steps of 10 ns on the EPYC VM (a pair of reads
  // gives 20 or 30 ns): a 0.3 us call timed alone lands on one of a few
  // values, 3% apart. Calls below kShortCallUs are therefore timed a turn of
  // kCallsPerShortTurn at a time, a sample being the turn's time per call.
  constexpr std::size_t kCallsPerTurn = 5, kCallsPerShortTurn = 20;
  constexpr double kShortCallUs = 2.0;
  const bool whole_turns = call_us > 0 && call_us < kShortCallUs;
  const std::size_t turn = whole_turns ? kCallsPerShortTurn : kCallsPerTurn;
  std::vector<std::vector<double>> samples(ops.size());
  std::mt19937 shuffle_bits(ops.size());  // seeded alike on every rank
  std::vector<MedianEstimate> estimates(ops.size());
  // With --max-noise, rounds go on (the calls so far again, each time) until
  // every median is known within it, or --max-ms is spent. Every rank holds
  // the same samples, so all stop together.
  double noise = std::numeric_limits<double>::infinity();
  for (std::size_t calls = 0, more; (more = more_samples(budget, calls, call_us / 1000, noise)) > 0; calls += more) {
    time_rounds(ops, more, turn, whole_turns, shuffle_bits, samples);
    noise = 0;
    for (std::size_t j = 0; j < ops.size(); ++j) {
      estimates[j] = estimate_median(samples[j]);
      noise = std::max(noise, estimates[j].noise);
    }
  }
  return estimates;
}

double Harness::time_us(const std::function<void()>& op) { return time_in_turns({op}).front().median; }

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
  std::vector<MedianEstimate> times;
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
  row.time_us = times.front().median;
  for (std::size_t j = 1; j < times.size(); ++j)
    row.candidates.emplace_back(algo_label(candidates[j - 1]), times[j].median);
  for (const MedianEstimate& t : times) widen_median_noise(row, t);
}

}  // namespace tpcoll::bench
