// The one bench harness (after nccl-tests' common.cu): it owns timing,
// cross-rank agreement and rows; each op's file (all_reduce_case.cpp, ...)
// only says how to fill, run and check that op.
#pragma once

#include "tools/bench/baseline.hpp"
#include "tools/bench/median_estimate.hpp"
#include "tools/bench/options.hpp"
#include "tools/bench/placement_probe.hpp"

#include <tpcoll/tpcoll.hpp>

#include <algorithm>
#include <cstddef>
#include <functional>
#include <initializer_list>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace tpcoll::bench {

inline const char* algo_label(Algo algo) {
  switch (algo) {
    case Algo::kOneShot: return "oneshot";
    case Algo::kTwoShot: return "twoshot";
    case Algo::kUnfused: return "unfused";
    case Algo::kFallback: return "fallback";
  }
  return "?";
}

// The FP8 op's rows, one per scaling.
inline const char* fp8_op_label(Fp8Scaling scaling) {
  return scaling == Fp8Scaling::kStatic ? "fused_ar_rmsnorm_fp8_static" : "fused_ar_rmsnorm_fp8_per_token";
}
inline constexpr float kBenchFp8Scale = 0.01f;  // the static scale of the benches: outputs up to 4.48 stay unclamped
inline constexpr Fp8Scaling kFp8Scalings[] = {Fp8Scaling::kStatic, Fp8Scaling::kPerToken};

struct Row {
  std::string op;
  std::string dtype;
  std::size_t bytes = 0;  // per-rank input bytes
  std::size_t count = 0;  // per-rank input elements
  int world = 0;
  std::string algo;
  std::string shape;      // all-gather: "[a, b] dim d"
  std::size_t tokens = 0; // fused ops only (of the whole x)
  std::size_t hidden = 0; // fused ops only
  double time_us = 0;     // median over iterations of the slowest rank
  double algbw = 0;       // GB/s
  double busbw = 0;       // GB/s
  std::string baseline = "none";
  std::optional<double> baseline_time_us;
  std::string check;      // "ok" or what failed
  std::optional<double> max_error;  // vs an fp64 reference, where one applies
  std::vector<std::pair<std::string, double>> candidates;  // --all-algos: each algorithm forced, its time in us
  // The ranks' placement (placement_probe.hpp): the slower of the probes
  // around the timing kept, seconds waited for the ranks to come back before
  // timing, times the row was timed again because they had moved, and
  // whether they had moved around the timing kept (against the fastest
  // placement so far, then, once every row is timed, the run's).
  double placement_probe_us = 0;
  double placement_wait_s = 0;
  int retimed = 0;
  bool placement_moved = false;
  // The least certain of the row's medians (dispatched, candidates): half
  // its 95% confidence interval, relative (median_estimate.hpp); infinite
  // where a timing had too few samples for an interval, none where the row
  // was not timed. 0: the interval lies within one step of the clock.
  std::optional<double> median_noise;
};

// Widens the row's median_noise to that of one of its timings.
inline void widen_median_noise(Row& row, const MedianEstimate& timing) {
  row.median_noise = std::max(row.median_noise.value_or(0.0), timing.noise);
}

class Harness {
 public:
  Harness(Communicator& comm, const Options& options, Baseline* baseline)
      : comm_(comm),
        options_(options),
        baseline_(baseline),
        placement_([&comm] { return tiny_all_reduce_us(comm); }) {}

  Row all_reduce(DType dtype, std::size_t count);
  // dim_kind: 0 = first dim, 1 = last dim, 2 = a middle dim.
  Row all_gather(DType dtype, std::size_t count, int dim_kind);
  Row fused(DType dtype, std::size_t tokens, std::size_t hidden);
  Row fused_fp8(DType dtype, std::size_t tokens, std::size_t hidden, Fp8Scaling scaling);
  // count and tokens: the whole input's, multiples of the world size.
  Row reduce_scatter(DType dtype, std::size_t count);
  Row fused_reduce_scatter(DType dtype, std::size_t tokens, std::size_t hidden);

  // Whether `row` was timed with the ranks farther apart than the fastest
  // placement this run has seen so far.
  bool timed_apart(const Row& row) const { return placement_.moved(row.placement_probe_us); }

 private:
  Row start_row(const char* op, DType dtype, std::size_t count) const;
  // Collective: true when every rank's check passed and every rank holds the
  // same bytes in `result`; otherwise `detail` says what differed.
  bool agree(bool local_ok, const void* result, std::size_t bytes);
  // Collective: the time per call that decides how many calls each op
  // makes (more_samples, from -n, --min-ms, --max-noise and --max-ms): rank
  // 0's warm-up's, so that every rank makes as many; 0 without a warm-up.
  double agreed_call_us(double warmup_us_per_call);
  // Collective: `calls` more calls of each of `ops`, taking turns of `turn`
  // calls (each call timed, or each turn when `whole_turns`); appends the
  // slowest rank's times to `samples`, one vector per op.
  void time_rounds(const std::vector<std::function<void()>>& ops, std::size_t calls, std::size_t turn,
                   bool whole_turns, std::mt19937& shuffle_bits, std::vector<std::vector<double>>& samples);
  // Collective: for each of `ops`, the median over calls of the slowest
  // rank's time of a call, in us, and how well it is known.
  std::vector<MedianEstimate> time_in_turns(const std::vector<std::function<void()>>& ops);
  double time_us(const std::function<void()>& op);
  // Of `candidates`, those that run as themselves for this call: a forced
  // algorithm that plan() turns into another (a fused row longer than half
  // the staging buffer goes unfused) is not a candidate here, and its time
  // would be the other's.
  std::vector<Algo> runnable(std::initializer_list<Algo> candidates, Op op, DType dtype,
                             std::span<const std::int64_t> shape);
  // Times `op` as tpcoll (as dispatched, then, with --all-algos, forced to
  // each of `candidates`), and `baseline_op` if a baseline runs. The timing
  // starts once the ranks sit where they were fastest (or the wait ran out),
  // and is done again, up to kPlacementRetries times, when they moved during it.
  void measure(Row& row, const std::vector<Algo>& candidates, const std::function<void()>& op,
               const std::function<void()>& baseline_op);

  Communicator& comm_;
  const Options& options_;
  Baseline* baseline_;
  PlacementProbe placement_;
  static constexpr int kPlacementRetries = 3;
};

}  // namespace tpcoll::bench
