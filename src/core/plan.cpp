#include "core/plan.hpp"

#include "core/dtype.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <initializer_list>

namespace tpcoll {
namespace {

// Per-rank bytes each step moves through the staging buffer.
std::size_t chunk_bytes_for(const Call& call, tpcoll_algo_t algo, std::size_t staging, int world) {
  const std::size_t elem = dtype_size(call.dtype);
  if (is_scatter(call.op)) {
    // A step takes the same piece of every rank's share (the piece for rank p
    // goes to rank p); pieces are 64-byte multiples, so 16-byte vectors stay
    // aligned from one step to the next.
    const std::size_t piece = staging / static_cast<std::size_t>(world) / 64 * 64 / elem * elem;
    return std::min(call.bytes, piece * static_cast<std::size_t>(world));
  }
  if (call.op == TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM && algo != TPCOLL_ALGO_UNFUSED) {
    // Whole rows; half the buffer, since a two-shot owner shares out and residual_out.
    const std::size_t rows = std::max<std::size_t>(1, staging / 2 / call.inner_bytes);
    return std::min(call.rows(), rows) * call.inner_bytes;
  }
  // Whole elements, 64-byte multiples so two-shot shares stay vector aligned.
  const std::size_t aligned = staging / 64 * 64 / elem * elem;
  return std::min(call.bytes, aligned);
}

}  // namespace

bool algo_applies(tpcoll_op_t op, tpcoll_algo_t algo) {
  switch (algo) {
    case TPCOLL_ALGO_FALLBACK:
      return true;
    case TPCOLL_ALGO_ONESHOT:
      // The fused reduce-scatter has no kernel of its own: our reduce-scatter,
      // then our add + RMSNorm on the share.
      return op != TPCOLL_OP_FUSED_REDUCE_SCATTER_RMSNORM;
    case TPCOLL_ALGO_TWOSHOT:
      // A gather has nothing to reduce in shares; a reduce-scatter is the
      // first shot alone.
      return op == TPCOLL_OP_ALL_REDUCE || op == TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM;
    case TPCOLL_ALGO_UNFUSED:
      return is_fused(op);
  }
  return false;
}

PlanKey plan_key(const Call& call, std::optional<tpcoll_algo_t> forced) {
  const bool fused = is_fused(call.op);
  return PlanKey{call.op,        call.dtype, call.bytes, call.inner_bytes, fused ? call.rows() : 0,
                 fused ? call.hidden() : 0, forced};
}

Plan make_plan(const Call& call, const PlanContext& ctx, bool explain) {
  Plan plan;
  // Reasons are lambdas so that the hot path never formats text.
  const auto finish = [&](tpcoll_algo_t algo, auto&& reason) {
    plan.algo = algo;
    if (explain) plan.reason = reason();
    if (algo == TPCOLL_ALGO_FALLBACK) {
      plan.backend = ctx.fallback_backend;
      plan.chunk_bytes = call.bytes;
      plan.steps = 1;
    } else {
      plan.backend = ctx.fast_backend;
      plan.chunk_bytes = chunk_bytes_for(call, algo, ctx.staging_bytes, ctx.world);
      plan.steps = (call.bytes + plan.chunk_bytes - 1) / plan.chunk_bytes;
    }
    return plan;
  };

  if (ctx.disabled) return finish(TPCOLL_ALGO_FALLBACK, [] { return std::string("TPCOLL_DISABLE=1"); });
  if (!ctx.fast_available) return finish(TPCOLL_ALGO_FALLBACK, [&] { return ctx.fast_unavailable_reason; });

  // A row must fit in half the staging buffer for the fused kernels (and,
  // where the backend says so, be whole 8-element groups); other rows take
  // our unfused path, which gives the same bits.
  const bool fused = call.op == TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM;
  const bool whole_groups = ctx.fused_max_hidden == 0 || call.hidden() % 8 == 0;
  const bool rows_fit = !fused || (call.inner_bytes <= ctx.staging_bytes / 2 && whole_groups);
  const auto row_reason = [&] {
    if (!whole_groups) return fmt::format("the fused kernels take rows of whole 8-element groups; this one has {}", call.hidden());
    return fmt::format("a row of {} B exceeds half the {} B staging buffer", call.inner_bytes, ctx.staging_bytes);
  };
  // Where the backend's fused one-shot takes shorter rows only, longer ones
  // go unfused (on an H100 the fused two-shot lost to it at 8 x 8192).
  const auto within_one_shot = [&](tpcoll_algo_t algo, auto&& reason) {
    if (!fused || algo != TPCOLL_ALGO_ONESHOT || ctx.fused_max_hidden == 0 || call.hidden() <= ctx.fused_max_hidden)
      return finish(algo, reason);
    return finish(TPCOLL_ALGO_UNFUSED, [&] {
      return fmt::format("the fused one-shot takes rows of up to {} elements; this one has {}", ctx.fused_max_hidden,
                         call.hidden());
    });
  };

  if (ctx.forced && algo_applies(call.op, *ctx.forced)) {
    if (!rows_fit && *ctx.forced != TPCOLL_ALGO_FALLBACK) return finish(TPCOLL_ALGO_UNFUSED, row_reason);
    return within_one_shot(*ctx.forced, [&] { return fmt::format("forced to {}", algo_name(*ctx.forced)); });
  }
  if (!rows_fit) return finish(TPCOLL_ALGO_UNFUSED, row_reason);

  // The fused ops' tables may have a row per measured hidden size.
  const std::size_t hidden = is_fused(call.op) ? call.hidden() : kAnyHidden;
  for (const TuneTable* table : {ctx.table, ctx.defaults}) {
    if (table == nullptr) continue;
    // The table rules even where the fused two-shot leaves ranks without a
    // row (fewer rows than ranks): on the CPU backend that measured 1.6-2.2x
    // faster than one-shot at 1 token and 4 ranks (bench/results/
    // cpu-2core-acceptance-x4.txt); a backend whose kernel cannot split the
    // rows so runs them unfused.
    if (const auto choice = lookup(*table, call.op, call.dtype, ctx.world, call.bytes, hidden)) {
      return within_one_shot(choice->algo, [&] {
        std::string reason = tpcoll::explain(*table, *choice, call.dtype, ctx.world, call.bytes, hidden);
        if (ctx.forced) reason += fmt::format(" ({} does not apply to {})", algo_name(*ctx.forced), op_name(call.op));
        return reason;
      });
    }
  }
  return within_one_shot(TPCOLL_ALGO_ONESHOT,
                         [] { return std::string("no table row matches: one-shot works for every shape"); });
}

}  // namespace tpcoll
