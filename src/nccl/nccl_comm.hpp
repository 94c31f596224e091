// One NCCL communicator, shared by the thread that runs ops and the one that
// aborts it (tpcoll_comm_abort may come from any thread while an op is in
// flight, as PyTorch's watchdog calls ncclCommAbort).
//
// ncclCommAbort frees the communicator, so it must never run while another
// thread is inside an NCCL call on it. A blocking communicator can hold a
// thread inside an enqueue until the peers arrive (NCCL connects peers at
// their first op); an abort could then only wait for that thread, which may
// never come out, or free the communicator under it. So it is created
// non-blocking (config.blocking = 0, NCCL's way to let ncclCommAbort come
// "at any point"): every call returns at once, ncclInProgress while NCCL's
// own thread finishes it, and the calls and the abort take turns on one
// mutex. The wait for ncclInProgress to clear polls ncclCommGetAsyncError
// without holding it, so an abort gets in between two polls and the wait
// ends with TPCOLL_ABORTED. Like every wait in tpcoll it has a deadline
// (TPCOLL_TIMEOUT_MS): NCCL connects peers inside these waits, so a peer
// that never comes would hold it for ever. At the deadline the communicator
// is aborted (its unfinished work can no longer be trusted) and the call
// fails with TPCOLL_TIMEOUT.
//
// ncclCommAbort also stops this rank's NCCL kernels (NCCL's abort flag).
// Peers' NCCL work cannot be reached from here: it waits until they abort
// too, as with NCCL itself.
#pragma once

#include "nccl/nccl_library.hpp"

#include <cstdint>
#include <mutex>

namespace tpcoll::nccl {

class Comm {
 public:
  // Collective: every rank with rank 0's id. Returns once NCCL is ready.
  // timeout_ms bounds each wait for NCCL (TPCOLL_TIMEOUT_MS).
  Comm(const Library& lib, int world, const ncclUniqueId& id, int rank, std::int64_t timeout_ms);
  // ncclCommDestroy, or ncclCommAbort for a communicator with an error or
  // unfinished work (it might never finish it); nothing after abort().
  ~Comm();
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  // Runs one NCCL call (`enqueue(handle)`, named `what`) and returns once
  // NCCL has taken it in, so that the stream may be used again. Throws
  // tpcoll::Error: TPCOLL_ABORTED after abort(), TPCOLL_TIMEOUT if NCCL
  // does not take it in within the timeout, else NCCL's error.
  template <typename Enqueue>
  void call(const char* what, Enqueue&& enqueue) {
    {
      const std::lock_guard lock(mutex_);
      require_live();
      const ncclResult_t result = enqueue(handle_);
      if (result != ncclInProgress) return lib_.check(result, what);
    }
    wait_ready(what);
  }

  // Throws what NCCL reported for enqueued work; TPCOLL_ABORTED after abort().
  void raise_async_error() const;

  // ncclCommAbort, the first time (from any thread); later calls do nothing.
  void abort();

 private:
  void require_live() const;
  // Polls until the communicator leaves ncclInProgress; throws its error,
  // or aborts and throws TPCOLL_TIMEOUT at the deadline.
  void wait_ready(const char* what);
  // abort(), naming why in later calls' errors.
  void abort_for(const char* reason);

  const Library& lib_;
  int rank_;
  std::int64_t timeout_ms_;
  mutable std::mutex mutex_;     // held for each NCCL call on handle_
  ncclComm_t handle_ = nullptr;  // nullptr once aborted (ncclCommAbort freed it)
  const char* aborted_by_ = "";  // why handle_ is nullptr (a static string)
};

}  // namespace tpcoll::nccl
