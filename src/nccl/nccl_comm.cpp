#include "nccl/nccl_comm.hpp"

#include "common/deadline.hpp"
#include "core/error.hpp"

#include <thread>

namespace tpcoll::nccl {

Comm::Comm(const Library& lib, int world, const ncclUniqueId& id, int rank, std::int64_t timeout_ms)
    : lib_(lib), rank_(rank), timeout_ms_(timeout_ms) {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  try {
    const ncclResult_t started = lib_.comm_init_rank_config(&handle_, world, id, rank, &config);
    if (started != ncclInProgress) lib_.check(started, "ncclCommInitRankConfig");
    wait_ready("ncclCommInitRankConfig");
  } catch (const Error&) {
    // A communicator that failed after it was handed out holds NCCL's threads
    // and memory; the destructor does not run for a constructor that throws.
    if (handle_ != nullptr) lib_.comm_abort(handle_);
    throw;
  }
}

Comm::~Comm() {
  if (handle_ == nullptr) return;
  ncclResult_t state = ncclSuccess;
  if (lib_.comm_get_async_error(handle_, &state) != ncclSuccess) state = ncclInternalError;
  (state == ncclSuccess ? lib_.comm_destroy : lib_.comm_abort)(handle_);
}

void Comm::require_live() const {
  if (handle_ == nullptr)
    fail(TPCOLL_ABORTED, "rank {}: the NCCL communicator was aborted on this rank ({}); NCCL work enqueued before it "
                         "may not have run",
         rank_, aborted_by_);
}

void Comm::wait_ready(const char* what) {
  const Deadline deadline(timeout_ms_);
  for (;;) {
    ncclResult_t state = ncclSuccess;
    {
      const std::lock_guard lock(mutex_);
      require_live();
      lib_.check(lib_.comm_get_async_error(handle_, &state), "ncclCommGetAsyncError");
    }
    if (state != ncclInProgress) return lib_.check(state, what);
    if (deadline.expired()) {
      abort_for("after a timeout");
      fail(TPCOLL_TIMEOUT,
           "rank {}: NCCL did not finish {} within {} ms (TPCOLL_TIMEOUT_MS): a peer did not arrive; the NCCL "
           "communicator was aborted",
           rank_, what, deadline.timeout_ms());
    }
    // As NCCL's own example waits: let NCCL's threads (and an abort) run.
    std::this_thread::yield();
  }
}

void Comm::raise_async_error() const {
  const std::lock_guard lock(mutex_);
  require_live();
  ncclResult_t state = ncclSuccess;
  lib_.check(lib_.comm_get_async_error(handle_, &state), "ncclCommGetAsyncError");
  if (state != ncclInProgress) lib_.check(state, "NCCL reported an asynchronous error");
}

void Comm::abort() { abort_for("tpcoll_comm_abort"); }

void Comm::abort_for(const char* reason) {
  const std::lock_guard lock(mutex_);
  if (handle_ == nullptr) return;
  const ncclResult_t result = lib_.comm_abort(handle_);
  handle_ = nullptr;  // freed, whatever ncclCommAbort returned
  aborted_by_ = reason;
  lib_.check(result, "ncclCommAbort");
}

}  // namespace tpcoll::nccl
