// Waiting on a 64-bit sequence word in shared memory: spin briefly (the peer
// is usually a cache-line transfer away), then yield (ranks may outnumber
// cores), then sleep in short naps; give up at the deadline.
#pragma once

#include "common/deadline.hpp"

#include <atomic>
#include <cstdint>

namespace tpcoll::cpu {

inline std::uint64_t load_acquire(const std::uint64_t& word) {
  return std::atomic_ref<std::uint64_t>(const_cast<std::uint64_t&>(word)).load(std::memory_order_acquire);
}

inline void store_release(std::uint64_t& word, std::uint64_t value) {
  std::atomic_ref<std::uint64_t>(word).store(value, std::memory_order_release);
}

// Backs off one notch: pause, yield or nap depending on how long we waited.
void back_off(std::uint32_t attempt);

// Returns once ready() holds; calls on_timeout() (which must throw) if the
// deadline passes first. Past the free attempts, every round also calls
// check_abort(), which throws to stop the wait (an aborted communicator):
// a wait that ends within the free attempts pays nothing for either bound.
template <typename Ready, typename OnTimeout, typename CheckAbort>
void wait_until(Ready&& ready, std::int64_t timeout_ms, OnTimeout&& on_timeout, CheckAbort&& check_abort) {
  constexpr std::uint32_t kFreeAttempts = 1024;  // no clock reads on the fast path
  for (std::uint32_t attempt = 0; attempt < kFreeAttempts; ++attempt) {
    if (ready()) return;
    back_off(attempt);
  }
  const Deadline deadline(timeout_ms);
  for (std::uint32_t attempt = kFreeAttempts;; ++attempt) {
    if (ready()) return;
    check_abort();
    if (deadline.expired()) on_timeout();
    back_off(attempt);
  }
}

// Returns once word >= target.
template <typename OnTimeout, typename CheckAbort>
void wait_at_least(const std::uint64_t& word, std::uint64_t target, std::int64_t timeout_ms, OnTimeout&& on_timeout,
                   CheckAbort&& check_abort) {
  wait_until([&] { return load_acquire(word) >= target; }, timeout_ms, on_timeout, check_abort);
}

}  // namespace tpcoll::cpu
