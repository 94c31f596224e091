#include "tools/bench/report.hpp"

#include "core/host_cpu.hpp"

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sched.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <thread>

namespace tpcoll::bench {
namespace {

constexpr double kAcceptedOverBest = 1.03;  // issue 14's acceptance: dispatched within 3% of the best candidate
// Two medians each known within half the acceptance margin can still be
// told apart at that margin; a row known less well is flagged.
constexpr double kComparableNoise = (kAcceptedOverBest - 1) / 2;

std::string size_text(std::size_t bytes) {
  if (bytes >= (1u << 20) && bytes % (1u << 20) == 0) return fmt::format("{}M", bytes >> 20);
  if (bytes >= 1024 && bytes % 1024 == 0) return fmt::format("{}K", bytes >> 10);
  return std::to_string(bytes);
}

// A row's median noise where every timing had an interval.
std::optional<double> known_noise(const Row& row) {
  if (row.median_noise && std::isfinite(*row.median_noise)) return row.median_noise;
  return std::nullopt;
}

}  // namespace

bool too_noisy(const Row& row) {
  const std::optional<double> noise = known_noise(row);
  return noise && *noise > kComparableNoise;
}

double best_candidate_us(const Row& row) {
  double best = row.candidates.front().second;
  for (const auto& [algo, us] : row.candidates) best = std::min(best, us);
  return best;
}

std::string candidates_text(const Row& row) {
  if (row.candidates.empty()) return "";
  std::string text = "  |";
  for (const auto& [algo, us] : row.candidates) text += fmt::format(" {} {:.2f}", algo, us);
  return text + fmt::format("  dispatched/best {:.3f}", row.time_us / best_candidate_us(row));
}

// A settle() that did not poll took microseconds: below this, no wait.
constexpr double kWaitedSeconds = 0.01;

bool placement_touched(const Row& row) {
  return row.placement_wait_s >= kWaitedSeconds || row.retimed > 0 || row.placement_moved;
}

std::string placement_text(const Row& row) {
  if (!placement_touched(row)) return "";
  return fmt::format("  [placement: waited {:.1f} s, timed {}x{}]", row.placement_wait_s, row.retimed + 1,
                     row.placement_moved ? ", moved" : "");
}

std::string noise_text(const Row& row) {
  return too_noisy(row) ? fmt::format("  [medians within +-{:.1f}%]", 100 * *row.median_noise) : "";
}

RunInfo describe_run() {
  RunInfo info;
  info.device = fmt::format("cpu: {}, {} cores", cpu_model(), std::thread::hardware_concurrency());
  // The launcher binds every rank or none (launcher.hpp); rank 0 tells which.
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  const bool bound = sched_getaffinity(0, sizeof cpus, &cpus) == 0 && CPU_COUNT(&cpus) == 1;
  info.placement = bound ? "processes on one host, shared memory, each bound to one CPU"
                         : "processes on one host, shared memory, placed by the scheduler";
  info.date = fmt::format("{:%Y-%m-%dT%H:%M:%SZ}", fmt::gmtime(std::time(nullptr)));
  const char* commit = std::getenv("TPCOLL_COMMIT");
  info.commit = commit ? commit : "unknown";
  return info;
}

void print_header(const RunInfo& info, int world, const std::string& baseline) {
  fmt::print("# tpcoll bench: {} ranks, {}\n# device: {}\n# placement: {}\n# baseline: {}\n", world, info.date,
             info.device, info.placement, baseline);
  fmt::print("# times are medians over iterations of the slowest rank; speedup = baseline / tpcoll\n");
  fmt::print("{:<24} {:<12} {:>6} {:>10} {:>5} {:<9} {:>10} {:>8} {:>8} {:>10} {:>7}  {}\n", "#op", "dtype", "size",
             "count", "world", "algo", "time(us)", "algbw", "busbw", "base(us)", "speedup", "check / shape");
  std::fflush(stdout);
}

void print_row(const Row& row) {
  const std::string base = row.baseline_time_us ? fmt::format("{:.2f}", *row.baseline_time_us) : "-";
  const std::string speedup = row.baseline_time_us ? fmt::format("{:.2f}", *row.baseline_time_us / row.time_us) : "-";
  std::string extra = row.shape;
  if (row.tokens) extra = fmt::format("{}x{}", row.tokens, row.hidden);
  fmt::print("{:<24} {:<12} {:>6} {:>10} {:>5} {:<9} {:>10.2f} {:>8.2f} {:>8.2f} {:>10} {:>7}  {} {}{}{}{}\n", row.op,
             row.dtype, size_text(row.bytes), row.count, row.world, row.algo, row.time_us, row.algbw, row.busbw, base,
             speedup, row.check, extra, candidates_text(row), placement_text(row), noise_text(row));
  std::fflush(stdout);
}

void write_json(const std::string& path, const RunInfo& info, const std::vector<Row>& rows) {
  nlohmann::json out;
  out["meta"] = {{"device", info.device}, {"placement", info.placement}, {"date", info.date}, {"commit", info.commit}};
  out["rows"] = nlohmann::json::array();
  for (const Row& r : rows) {
    nlohmann::json j = {{"op", r.op},
                        {"dtype", r.dtype},
                        {"bytes", r.bytes},
                        {"count", r.count},
                        {"world", r.world},
                        {"algo", r.algo},
                        {"time_us", r.time_us},
                        {"algbw_gbps", r.algbw},
                        {"busbw_gbps", r.busbw},
                        {"baseline", r.baseline},
                        {"baseline_time_us", nullptr},
                        {"speedup", nullptr},
                        {"check", r.check},
                        {"device", info.device},
                        {"placement", info.placement}};
    if (r.baseline_time_us) {
      j["baseline_time_us"] = *r.baseline_time_us;
      j["speedup"] = *r.baseline_time_us / r.time_us;
    }
    if (!r.shape.empty()) j["shape"] = r.shape;
    if (r.op == "init") j["init_ms"] = r.time_us / 1000.0;  // init_time.hpp
    if (r.tokens) {
      j["tokens"] = r.tokens;
      j["hidden"] = r.hidden;
    }
    if (r.max_error) j["max_abs_error_vs_fp64"] = *r.max_error;
    if (!r.candidates.empty()) {
      j["candidates_us"] = nlohmann::json::object();
      for (const auto& [algo, us] : r.candidates) j["candidates_us"][algo] = us;
      j["dispatched_over_best"] = r.time_us / best_candidate_us(r);
    }
    if (const std::optional<double> noise = known_noise(r)) j["median_noise_pct"] = 100 * *noise;
    if (r.placement_probe_us > 0) j["placement_probe_us"] = r.placement_probe_us;
    if (placement_touched(r)) {
      j["placement_wait_s"] = r.placement_wait_s;
      j["retimed_for_placement"] = r.retimed;
      j["placement_moved"] = r.placement_moved;
    }
    out["rows"].push_back(std::move(j));
  }
  std::ofstream file(path);
  if (!file) throw std::runtime_error("cannot write " + path);
  file << out.dump(1) << "\n";
}

int summarize(const RunInfo& info, const std::vector<Row>& rows, const std::string& json_path, bool print) {
  std::size_t failed = 0;
  for (const Row& r : rows) failed += r.check != "ok";
  if (print) {
    if (!json_path.empty()) write_json(json_path, info, rows);
    // The acceptance figures of measured dispatch, over the rows with a
    // choice (2+ candidates): how far the dispatched time lies above the
    // fastest candidate, at worst, and how many rows meet the target; and how
    // often the choice itself was right (the chosen algorithm's forced time
    // against the fastest's, both timed in turns), which the machine's noise
    // touches less. A row of one candidate compares an algorithm with itself:
    // its worst ratio is the noise of this run.
    const Row* worst = nullptr;
    std::size_t compared = 0, within = 0, choices = 0, chosen_within = 0, waited = 0, retimed = 0, moved = 0;
    std::size_t uncertain = 0;
    double worst_choice = 0, noise = 0, waited_s = 0, worst_median_noise = 0;
    for (const Row& r : rows) {
      if (too_noisy(r)) {
        ++uncertain;
        worst_median_noise = std::max(worst_median_noise, *r.median_noise);
      }
      waited += r.placement_wait_s >= kWaitedSeconds;
      waited_s += r.placement_wait_s;
      retimed += r.retimed > 0;
      moved += r.placement_moved;
      if (r.candidates.empty()) continue;
      const double ratio = r.time_us / best_candidate_us(r);
      if (r.candidates.size() == 1) {
        noise = std::max(noise, std::max(ratio, 1 / ratio));
        continue;
      }
      ++compared;
      within += ratio <= kAcceptedOverBest;
      if (!worst || ratio > worst->time_us / best_candidate_us(*worst)) worst = &r;
      for (const auto& [algo, us] : r.candidates)
        if (algo == r.algo) {
          const double choice = us / best_candidate_us(r);
          ++choices;
          chosen_within += choice <= kAcceptedOverBest;
          worst_choice = std::max(worst_choice, choice);
        }
    }
    if (worst) {
      fmt::print("# dispatched/best at worst: {:.3f} ({} {} {} B{}); {} of {} rows with a choice within {:.2f}x\n",
                 worst->time_us / best_candidate_us(*worst), worst->op, worst->dtype, worst->bytes,
                 worst->tokens ? fmt::format(", {}x{}", worst->tokens, worst->hidden) : std::string(), within, compared,
                 kAcceptedOverBest);
      if (choices > 0)
        fmt::print("# the chosen algorithm forced, against the best: {} of {} rows within {:.2f}x, worst {:.3f}\n",
                   chosen_within, choices, kAcceptedOverBest, worst_choice);
    }
    if (waited + retimed + moved > 0)
      fmt::print("# the ranks' placement (placement_probe.hpp): {} rows waited for it to come back ({:.0f} s in all), "
                 "{} were timed again, {} were timed while it had moved\n",
                 waited, waited_s, retimed, moved);
    if (uncertain > 0)
      fmt::print("# {} rows have a median known only within more than +-{:.1f}% (95% confidence; worst +-{:.1f}%): "
                 "too noisy to tell {:.0f}% apart (--max-noise takes more calls)\n",
                 uncertain, 100 * kComparableNoise, 100 * worst_median_noise, 100 * (kAcceptedOverBest - 1));
    if (noise > 0)
      fmt::print("# one-candidate rows (an algorithm against itself: this run's noise): worst {:.3f}\n", noise);
    if (failed == 0)
      fmt::print("# tpcoll bench: {} configurations, all checks ok\n", rows.size());
    else
      fmt::print("# tpcoll bench: {} configurations, {} checks FAILED (rows above)\n", rows.size(), failed);
  }
  return failed == 0 ? 0 : 1;
}

}  // namespace tpcoll::bench
