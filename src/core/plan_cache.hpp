// The plans of a communicator's recent calls. An engine repeats a few call
// shapes on every layer of every step, and make_plan's table scan is a cost
// that each of those calls would pay again: on the 2-core development VM it
// took 28 ns for an all-reduce, 41 ns for an all-gather and 114 ns for the
// fused op (whose table rows are per hidden size), against 15-21 ns when the
// algorithm is forced; a gather of 1 KiB takes 0.7 us there. A hit costs a
// scan of a few keys.
//
// A plan is a pure function of the call's planned fields and the forced
// algorithm (PlanKey) and of the communicator's PlanContext, which is fixed
// once the communicator is created except for its forced algorithm; the key
// holds the algorithm forced for the call, so nothing can make a cached
// plan stale.
#pragma once

#include "core/plan.hpp"

#include <array>
#include <cstddef>
#include <optional>

namespace tpcoll {

class PlanCache {
 public:
  // The plan of `call` under `context` with `forced` in place of its own
  // (the reason left empty), from the cache where an earlier call had the
  // same key.
  const Plan& plan(const Call& call, const PlanContext& context, std::optional<tpcoll_algo_t> forced) {
    const PlanKey key = plan_key(call, forced);
    for (const Entry& entry : entries_)
      if (entry.filled && entry.key == key) return entry.plan;
    PlanContext planned = context;
    planned.forced = forced;
    Entry& entry = entries_[next_];
    next_ = (next_ + 1) % entries_.size();
    entry = Entry{key, make_plan(call, planned, /*explain=*/false), true};
    return entry.plan;
  }

 private:
  struct Entry {
    PlanKey key;
    Plan plan;
    bool filled = false;
  };
  // Enough for the ops of a layer, each as dispatched and forced (the
  // bench's candidates take turns); replaced oldest first.
  std::array<Entry, 8> entries_{};
  std::size_t next_ = 0;
};

}  // namespace tpcoll
