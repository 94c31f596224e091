// Ranks as threads of one process: an all-gather through shared host memory
// and a condition variable, bounded by the same timeout as the others.
#include "bootstrap/bootstrap.hpp"

#include "core/error.hpp"

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>

namespace tpcoll {
namespace {

struct Exchange {
  std::mutex mutex;
  std::condition_variable changed;
  int world;
  std::int64_t timeout_ms;
  std::vector<std::byte> data;
  std::size_t bytes = 0;
  int arrived = 0;
  int departed = 0;
  std::uint64_t round = 0;
  std::string aborted;  // why, once a rank gave up
};

void abort_exchange(Exchange& x, const std::string& why) {
  std::lock_guard lock(x.mutex);
  if (x.aborted.empty()) x.aborted = why.empty() ? "unknown failure" : why;
  x.changed.notify_all();
}

class LocalBootstrap final : public Bootstrap {
 public:
  LocalBootstrap(int rank, std::shared_ptr<Exchange> exchange)
      : Bootstrap(rank, exchange->world), exchange_(std::move(exchange)) {}

  void set_timeout_ms(std::int64_t timeout_ms) override {
    std::lock_guard lock(exchange_->mutex);
    exchange_->timeout_ms = timeout_ms;
  }

  void abort(const std::string& why) override { abort_exchange(*exchange_, why); }

  void all_gather(const void* send, void* recv, std::size_t bytes) override {
    Exchange& x = *exchange_;
    std::unique_lock lock(x.mutex);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(x.timeout_ms);
    const auto wait = [&](auto&& ready, const char* what) {
      const bool done = x.changed.wait_until(lock, deadline, [&] { return !x.aborted.empty() || ready(); });
      if (!x.aborted.empty()) fail(TPCOLL_BOOTSTRAP_ERROR, "bootstrap: another rank failed: {}", x.aborted);
      if (!done)
        fail(TPCOLL_TIMEOUT, "bootstrap: rank {} waited {} ms for the other threads to {}", rank(), x.timeout_ms, what);
    };
    // A new round starts once everyone has left the previous one.
    wait([&] { return x.departed == 0; }, "leave the previous exchange");
    if (x.arrived == 0) {
      x.bytes = bytes;
      x.data.assign(bytes * world(), std::byte{0});
    } else if (x.bytes != bytes) {
      fail(TPCOLL_BOOTSTRAP_ERROR, "bootstrap: ranks disagree on the all-gather size: rank {} sent {} bytes, {} expected",
           rank(), bytes, x.bytes);
    }
    if (bytes > 0) std::memcpy(x.data.data() + bytes * rank(), send, bytes);
    const std::uint64_t round = x.round;
    if (++x.arrived == world()) {
      x.arrived = 0;
      x.departed = world();
      ++x.round;
      x.changed.notify_all();
    } else {
      wait([&] { return x.round != round; }, "arrive");
    }
    if (bytes > 0) std::memcpy(recv, x.data.data(), bytes * world());
    if (--x.departed == 0) x.changed.notify_all();
  }

 private:
  std::shared_ptr<Exchange> exchange_;
};

}  // namespace

LocalBootstraps make_local_bootstraps(int world, std::int64_t timeout_ms) {
  auto exchange = std::make_shared<Exchange>();
  exchange->world = world;
  exchange->timeout_ms = timeout_ms;
  LocalBootstraps out;
  for (int r = 0; r < world; ++r) out.ranks.push_back(std::make_unique<LocalBootstrap>(r, exchange));
  out.abort = [exchange](const std::string& why) { abort_exchange(*exchange, why); };
  return out;
}

}  // namespace tpcoll
