#include "tools/bench/harness.hpp"

#include "tools/bench/data.hpp"

#include <algorithm>
#include <array>
#include <chrono>
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

double Harness::time_us(const std::function<void()>& op) {
  for (int i = 0; i < options_.warmup; ++i) op();
  std::vector<double> times(static_cast<std::size_t>(options_.iterations));
  for (double& t : times) {
    const auto begin = std::chrono::steady_clock::now();
    op();
    t = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - begin).count();
  }
  // An op ends for the job when its slowest rank ends.
  std::vector<double> all(times.size() * static_cast<std::size_t>(comm_.world_size()));
  const std::int64_t shape[1] = {static_cast<std::int64_t>(times.size())};
  comm_.all_gather(times.data(), all.data(), DType::kFloat64, shape, 0);
  for (std::size_t i = 0; i < times.size(); ++i)
    for (int r = 0; r < comm_.world_size(); ++r) times[i] = std::max(times[i], all[r * times.size() + i]);
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  return times[times.size() / 2];
}

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
  row.time_us = time_us(op);
  if (options_.all_algos) {
    for (Algo algo : candidates) {
      comm_.force_algo(algo);
      row.candidates.emplace_back(algo_label(algo), time_us(op));
    }
    comm_.force_algo(std::nullopt);
  }
  if (baseline_) row.baseline_time_us = time_us(baseline_op);
}

}  // namespace tpcoll::bench
