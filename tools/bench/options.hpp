// Flags of `tpcoll bench`, named after nccl-tests where they mean the same.
#pragma once

#include "tools/bench/median_estimate.hpp"

#include <tpcoll/tpcoll.hpp>

#include <cstddef>
#include <string>
#include <vector>

namespace tpcoll::bench {

enum class BaselineKind { kNone, kMpi };
enum class BackendKind { kAuto, kCpu, kCuda };  // auto: CUDA when a GPU is visible

// `tpcoll tune`'s grid of the fused op (decode to prefill batches x the
// hidden sizes of common models), and `bench --all-algos`'s default: the
// acceptance check of a tuned table runs where the table was measured.
inline const std::vector<std::size_t> kTuneTokens{1, 8, 32, 128, 512, 2048};
inline const std::vector<std::size_t> kTuneHidden{2880, 4096, 5120, 7168, 8192};

struct Options {
  std::size_t min_bytes = 1024;              // -b
  std::size_t max_bytes = 64 * 1024 * 1024;  // -e
  double factor = 4.0;                       // -f
  int iterations = 20;                       // -n
  int warmup = 5;                            // -w
  double min_ms = 0;                         // --min-ms: timed ms per op at least (more than -n calls when fast)
  double max_noise = 0;                      // --max-noise: % within which every median is known; 0: off
  double max_ms = 3000;                      // --max-ms: timed ms per op at most while --max-noise asks for more
  int ranks = 2;                             // -np
  std::vector<Op> ops{Op::kAllReduce, Op::kAllGather, Op::kFusedAllReduceRmsNorm};
  std::vector<DType> dtypes{DType::kFloat32, DType::kFloat16, DType::kBFloat16};  // all-reduce and fused
  std::vector<DType> gather_dtypes{DType::kBFloat16, DType::kFloat8E4M3, DType::kInt64};
  std::vector<std::size_t> tokens{1, 16, 128, 512};
  std::vector<std::size_t> hidden{2880, 4096, 8192};
  BaselineKind baseline = BaselineKind::kNone;
  BackendKind backend = BackendKind::kAuto;
  bool processes = false;  // CUDA: one process per rank (tpcoll run), not one stream per rank
  std::string json_path;
  bool all_algos = false;  // also time each candidate algorithm, forced
  bool tune = false;       // `tpcoll tune`: write the winners as a tuning table
  std::string tune_path;   // where; empty: TPCOLL_TUNE_FILE or this machine's cache path
};

// The scatter ops' inputs split into equal shares: a whole input of `units`
// elements (or tokens) rounded down (up) to a multiple of the world size.
inline std::size_t whole_shares_down(std::size_t units, int world) { return units / world * world; }
inline std::size_t whole_shares_up(std::size_t units, int world) { return (units + world - 1) / world * world; }

// The per-rank sizes -b, -e and -f describe.
inline std::vector<std::size_t> sweep_sizes(const Options& o) {
  std::vector<std::size_t> out;
  for (double b = static_cast<double>(o.min_bytes); b <= static_cast<double>(o.max_bytes) * 1.0000001; b *= o.factor) {
    out.push_back(static_cast<std::size_t>(b));
    if (o.factor <= 1.0) break;
  }
  return out;
}

// How many samples (calls, or graph replays of many) time an op: -n,
// --min-ms, --max-noise and --max-ms, the same for every backend.
inline SampleBudget sample_budget(const Options& o) {
  SampleBudget budget;
  budget.least = static_cast<std::size_t>(o.iterations);
  budget.min_ms = o.min_ms;
  budget.max_noise = o.max_noise / 100;
  budget.max_ms = o.max_ms;
  return budget;
}

}  // namespace tpcoll::bench
