#include "cpu/shm_step.hpp"

#include "core/error.hpp"
#include "cpu/wait.hpp"

namespace tpcoll::cpu {

ShmBackend::Step::Step(ShmBackend& backend, const CallSignature& call, std::uint64_t call_hash)
    : b_(backend), sig_(call), hash_(call_hash) {
  k_ = ++b_.step_;
  sig_.step = k_;
  if (k_ > 1) await(&Control::posted, b_.seen_posted_, k_ - 1, "finish");
}

void ShmBackend::Step::announce() {
  Control& mine = b_.control(b_.rank_);
  mine.signature[slot()] = sig_;
  mine.call_hash[slot()] = hash_;
}

void ShmBackend::Step::post() {
  announce();
  store_release(b_.control(b_.rank_).posted, k_);
}

void ShmBackend::Step::check_call(int peer) const {
  // Every rank sees the same disagreement at this same step and stops there,
  // so the communicator stays usable.
  const Control& theirs = b_.control(peer);
  if (theirs.call_hash[slot()] != hash_) fail_mismatch(b_.rank_, sig_, peer, theirs.signature[slot()]);
}

void ShmBackend::Step::await_posted() {
  await(&Control::posted, b_.seen_posted_, k_, "arrive at");
  for (int p = 0; p < b_.world_; ++p) check_call(p);
}

void ShmBackend::Step::share_reduced() { store_release(b_.control(b_.rank_).reduced, k_); }

void ShmBackend::Step::await_reduced() { await(&Control::reduced, b_.seen_reduced_, k_, "reduce its share of"); }

void ShmBackend::Step::timed_out(int peer, const char* what, std::uint64_t target) const {
  fail(TPCOLL_TIMEOUT, "rank {}: peer {} timed out: it did not {} {} (step {}) within {} ms", b_.rank_, peer, what,
       describe(sig_), target, b_.timeout_ms_);
}

void ShmBackend::Step::throw_if_aborted() const {
  if (const std::uint64_t by = load_acquire(b_.job().aborted_by); by != 0)
    fail(TPCOLL_ABORTED, "rank {}: rank {} aborted the communicator while this rank waited in {} (step {})", b_.rank_,
         by - 1, describe(sig_), k_);
}

void ShmBackend::Step::await(std::uint64_t Control::*word, std::vector<std::uint64_t>& seen, std::uint64_t target,
                             const char* what) {
  for (int p = 0; p < b_.world_; ++p) {
    if (p == b_.rank_ || seen[p] >= target) continue;
    wait_at_least(b_.control(p).*word, target, b_.timeout_ms_, [&] { timed_out(p, what, target); },
                  [&] { throw_if_aborted(); });
    seen[p] = target;
  }
}

}  // namespace tpcoll::cpu
