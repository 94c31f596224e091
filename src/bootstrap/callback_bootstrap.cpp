#include "bootstrap/bootstrap.hpp"

#include "core/error.hpp"

namespace tpcoll {

namespace {

class CallbackBootstrap final : public Bootstrap {
 public:
  CallbackBootstrap(int rank, int world, tpcoll_allgather_fn fn, void* user)
      : Bootstrap(rank, world), fn_(fn), user_(user) {}

  void all_gather(const void* send, void* recv, std::size_t bytes) override {
    if (const int rc = fn_(send, recv, bytes, user_); rc != 0)
      fail(TPCOLL_BOOTSTRAP_ERROR, "the user-supplied all-gather returned {} on rank {}", rc, rank());
  }
  // The framework's all-gather has its own timeout.
  void set_timeout_ms(std::int64_t) override {}
  // Nothing to interrupt from here: the framework's all-gather returns on
  // its own (and its process group has its own abort).
  void abort(const std::string&) override {}

 private:
  tpcoll_allgather_fn fn_;
  void* user_;
};

}  // namespace

std::unique_ptr<Bootstrap> make_callback_bootstrap(int rank, int world, tpcoll_allgather_fn fn, void* user_data) {
  return std::make_unique<CallbackBootstrap>(rank, world, fn, user_data);
}

}  // namespace tpcoll
