// plan(): a pure function of the call, the world size, the placement's
// capabilities and the table. Every rank computes the same plan without
// talking, which is what makes divergent choices (and so hangs) impossible.
#pragma once

#include "core/call.hpp"
#include "core/tune_table.hpp"

#include <optional>
#include <string>

namespace tpcoll {

inline constexpr const char* kShmBackend = "cpu-shm";
inline constexpr const char* kFallbackBackend = "cpu-fallback";
inline constexpr const char* kCudaBackend = "cuda-p2p";
inline constexpr const char* kNcclBackend = "nccl";

struct PlanContext {
  int world = 1;
  const char* fast_backend = kShmBackend;           // the backend of our own algorithms
  const char* fallback_backend = kFallbackBackend;  // what runs TPCOLL_ALGO_FALLBACK
  bool fast_available = true;                // false: only the fallback can run
  std::string fast_unavailable_reason;
  std::size_t staging_bytes = 0;             // per-rank staging buffer (chunk bound)
  std::size_t fused_max_hidden = 0;          // fused kernels' longest row (elements, whole groups of 8); 0: any
  bool disabled = false;                     // TPCOLL_DISABLE
  std::optional<tpcoll_algo_t> forced;       // TPCOLL_ALGO or tpcoll_comm_force_algo
  const TuneTable* table = nullptr;
  const TuneTable* defaults = nullptr;       // consulted where `table` has no row (a measured table may lack an op)
};

struct Plan {
  tpcoll_algo_t algo = TPCOLL_ALGO_FALLBACK;
  const char* backend = "";
  std::size_t chunk_bytes = 0;  // per-rank input bytes per step
  std::size_t steps = 0;
  std::string reason;  // filled only when make_plan is asked to explain
};

// Whether `algo` can run `op` at all (a gather has no two-shot, only the
// fused op has an unfused form).
bool algo_applies(tpcoll_op_t op, tpcoll_algo_t algo);

// explain: also fill Plan::reason (it formats text, so not on the hot path).
Plan make_plan(const Call& call, const PlanContext& context, bool explain);

// Every field of a call that make_plan reads, with the forced algorithm: two
// calls of one key get the same plan from the same context (PlanCache).
struct PlanKey {
  tpcoll_op_t op = TPCOLL_OP_ALL_REDUCE;
  tpcoll_dtype_t dtype = TPCOLL_FLOAT32;
  std::size_t bytes = 0;
  std::size_t inner_bytes = 0;
  std::size_t rows = 0;    // the fused ops' tokens and hidden; 0 for the others
  std::size_t hidden = 0;
  std::optional<tpcoll_algo_t> forced;

  bool operator==(const PlanKey&) const = default;
};

PlanKey plan_key(const Call& call, std::optional<tpcoll_algo_t> forced);

}  // namespace tpcoll
