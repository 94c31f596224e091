// The NCCL communicator's abort and destroy, against a fake NCCL library
// table (no GPU needed): the communicator is created non-blocking, an abort
// from another thread ends a wait for NCCL and calls ncclCommAbort exactly
// once, never while another NCCL call on it runs; later calls fail with
// TPCOLL_ABORTED; destroy then neither destroys nor aborts the freed handle.
#include "core/error.hpp"
#include "nccl/nccl_comm.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace {

using tpcoll::nccl::Comm;
using namespace std::chrono_literals;

// What the fake NCCL saw and what it answers; reset by each test.
struct Fake {
  std::atomic<int> inits{0}, destroys{0}, aborts{0}, enqueues{0}, queries{0};
  int init_blocking = -1;           // config.blocking of the last init
  ncclResult_t init_result = ncclSuccess;
  ncclResult_t enqueue_result = ncclSuccess;
  std::atomic<int> in_progress_polls{0};  // ncclCommGetAsyncError answers ncclInProgress this many times,
  std::atomic<ncclResult_t> state{ncclSuccess};  // then this
  std::atomic<int> inside{0};        // NCCL calls under way
  std::atomic<bool> overlapped{false};  // two were under way at once
  std::atomic<bool> freed{false};    // the handle was destroyed or aborted
  std::atomic<bool> used_after_free{false};
};
Fake* fake = nullptr;
char handle_storage;
ncclComm_t const kHandle = reinterpret_cast<ncclComm_t>(&handle_storage);

// Held for the whole of each fake call, which lasts a little so that a
// missing lock would show as an overlap. A call on a freed handle is noted
// and refused (ncclInvalidArgument), so that a wait on it ends.
class InsideNccl {
 public:
  explicit InsideNccl(ncclComm_t comm) {
    if (fake->inside.fetch_add(1) != 0) fake->overlapped = true;
    if (comm != kHandle || fake->freed) fake->used_after_free = true;
    std::this_thread::sleep_for(50us);
  }
  ~InsideNccl() { fake->inside.fetch_sub(1); }
  bool freed() const { return fake->used_after_free; }
};

ncclResult_t fake_init(ncclComm_t* comm, int, ncclUniqueId, int, ncclConfig_t* config) {
  ++fake->inits;
  fake->init_blocking = config->blocking;
  if (fake->init_result != ncclSuccess && fake->init_result != ncclInProgress) return fake->init_result;
  *comm = kHandle;
  return fake->init_result;
}

ncclResult_t fake_get_async_error(ncclComm_t comm, ncclResult_t* state) {
  const InsideNccl inside(comm);
  if (inside.freed()) return ncclInvalidArgument;
  ++fake->queries;
  *state = fake->in_progress_polls.fetch_sub(1) > 0 ? ncclInProgress : fake->state.load();
  return ncclSuccess;
}

ncclResult_t fake_destroy(ncclComm_t comm) {
  const InsideNccl inside(comm);
  ++fake->destroys;
  fake->freed = true;
  return ncclSuccess;
}

ncclResult_t fake_abort(ncclComm_t comm) {
  const InsideNccl inside(comm);
  ++fake->aborts;
  fake->freed = true;
  return ncclSuccess;
}

ncclResult_t fake_all_reduce(const void*, void*, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t comm, cudaStream_t) {
  const InsideNccl inside(comm);
  if (inside.freed()) return ncclInvalidArgument;
  ++fake->enqueues;
  return fake->enqueue_result;
}

const char* fake_error_string(ncclResult_t) { return "fake NCCL error"; }

constexpr std::int64_t kTimeoutMs = 60000;

class NcclComm : public ::testing::Test {
 protected:
  NcclComm() {
    fake = &state_;
    lib_.path = "fake";
    lib_.comm_init_rank_config = fake_init;
    lib_.comm_get_async_error = fake_get_async_error;
    lib_.comm_destroy = fake_destroy;
    lib_.comm_abort = fake_abort;
    lib_.all_reduce = fake_all_reduce;
    lib_.get_error_string = fake_error_string;
  }
  ~NcclComm() override { fake = nullptr; }

  // One all-reduce through comm.call; the code it failed with, or SUCCESS.
  tpcoll_result_t all_reduce(Comm& comm) {
    try {
      comm.call("ncclAllReduce", [&](ncclComm_t c) {
        return lib_.all_reduce(nullptr, nullptr, 0, ncclFloat32, ncclSum, c, nullptr);
      });
    } catch (const tpcoll::Error& e) {
      message_ = e.what();
      return e.code();
    }
    return TPCOLL_SUCCESS;
  }

  Fake state_;
  tpcoll::nccl::Library lib_;
  std::string message_;
};

TEST_F(NcclComm, IsCreatedNonBlockingAndReadyWhenItReturns) {
  state_.init_result = ncclInProgress;
  state_.in_progress_polls = 3;
  {
    Comm comm(lib_, 2, ncclUniqueId{}, 0, kTimeoutMs);
    EXPECT_EQ(state_.init_blocking, 0);
    EXPECT_EQ(state_.queries, 4) << "the constructor returned before NCCL left ncclInProgress";
  }
  EXPECT_EQ(state_.destroys, 1);
  EXPECT_EQ(state_.aborts, 0);
}

TEST_F(NcclComm, AFailedInitIsAbortedNotLeaked) {
  state_.init_result = ncclInProgress;
  state_.state = ncclSystemError;
  try {
    Comm comm(lib_, 2, ncclUniqueId{}, 0, kTimeoutMs);
    FAIL() << "the constructor returned";
  } catch (const tpcoll::Error& e) {
    EXPECT_EQ(e.code(), TPCOLL_SYSTEM_ERROR);
    EXPECT_NE(std::string(e.what()).find("ncclCommInitRankConfig"), std::string::npos) << e.what();
  }
  EXPECT_EQ(state_.aborts, 1);
  EXPECT_EQ(state_.destroys, 0);
}

TEST_F(NcclComm, AbortCallsNcclCommAbortOnceAndDestroyThenLeavesTheHandle) {
  {
    Comm comm(lib_, 2, ncclUniqueId{}, 0, kTimeoutMs);
    EXPECT_EQ(all_reduce(comm), TPCOLL_SUCCESS) << message_;
    comm.abort();
    comm.abort();
    EXPECT_EQ(state_.aborts, 1);
  }
  EXPECT_EQ(state_.aborts, 1) << "destroy aborted the freed handle again";
  EXPECT_EQ(state_.destroys, 0) << "destroy destroyed the freed handle";
  EXPECT_FALSE(state_.used_after_free);
}

TEST_F(NcclComm, ManyThreadsAbortingCallNcclCommAbortOnce) {
  Comm comm(lib_, 2, ncclUniqueId{}, 0, kTimeoutMs);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) threads.emplace_back([&] { comm.abort(); });
  for (auto& t : threads) t.join();
  EXPECT_EQ(state_.aborts, 1);
  EXPECT_FALSE(state_.overlapped);
}

TEST_F(NcclComm, CallsAfterAbortFailWithAbortedAndNeverReachNccl) {
  Comm comm(lib_, 2, ncclUniqueId{}, 0, kTimeoutMs);
  comm.abort();
  const int queries = state_.queries;
  EXPECT_EQ(all_reduce(comm), TPCOLL_ABORTED);
  EXPECT_NE(message_.find("tpcoll_comm_abort"), std::string::npos) << message_;
  try {
    comm.raise_async_error();
    ADD_FAILURE() << "no asynchronous error after an abort";
  } catch (const tpcoll::Error& e) {
    EXPECT_EQ(e.code(), TPCOLL_ABORTED) << e.what();
  }
  EXPECT_EQ(state_.enqueues, 0);
  EXPECT_EQ(state_.queries, queries);
  EXPECT_FALSE(state_.used_after_free);
}

// The watchdog case: an op waits for NCCL (peers that never come), and
// another thread aborts. The wait ends with TPCOLL_ABORTED, and ncclCommAbort
// never overlaps the op's own NCCL calls.
TEST_F(NcclComm, AbortFromAnotherThreadEndsAWaitInProgress) {
  Comm comm(lib_, 2, ncclUniqueId{}, 0, kTimeoutMs);
  state_.enqueue_result = ncclInProgress;
  state_.in_progress_polls = 1 << 30;
  std::atomic<bool> done{false};
  tpcoll_result_t result = TPCOLL_SUCCESS;
  std::thread op([&] {
    result = all_reduce(comm);
    done = true;
  });
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(done) << "the op did not wait for NCCL";
  comm.abort();
  op.join();
  EXPECT_EQ(result, TPCOLL_ABORTED) << message_;
  EXPECT_EQ(state_.aborts, 1);
  EXPECT_GT(state_.queries, 1);
  EXPECT_FALSE(state_.overlapped) << "ncclCommAbort ran during another NCCL call";
  EXPECT_FALSE(state_.used_after_free);
}

TEST_F(NcclComm, AWaitThatEndsInAnErrorNamesTheCall) {
  Comm comm(lib_, 2, ncclUniqueId{}, 0, kTimeoutMs);
  state_.enqueue_result = ncclInProgress;
  state_.in_progress_polls = 2;
  state_.state = ncclRemoteError;
  EXPECT_EQ(all_reduce(comm), TPCOLL_SYSTEM_ERROR);
  EXPECT_NE(message_.find("ncclAllReduce: fake NCCL error"), std::string::npos) << message_;
}

TEST_F(NcclComm, AnAsynchronousErrorIsRaisedAndTheCommunicatorAbortedAtDestroy) {
  {
    Comm comm(lib_, 2, ncclUniqueId{}, 0, kTimeoutMs);
    comm.raise_async_error();  // none yet
    state_.state = ncclRemoteError;
    EXPECT_THROW(comm.raise_async_error(), tpcoll::Error);
  }
  // Work with an error may never finish, and ncclCommDestroy would wait for it.
  EXPECT_EQ(state_.aborts, 1);
  EXPECT_EQ(state_.destroys, 0);
}

// A peer that never comes: the wait ends at TPCOLL_TIMEOUT_MS, naming the
// call, and the communicator is aborted (once), so later calls fail at once.
TEST_F(NcclComm, AWaitPastTheTimeoutAbortsAndFailsWithTimeout) {
  Comm comm(lib_, 2, ncclUniqueId{}, 0, 50);
  state_.enqueue_result = ncclInProgress;
  state_.in_progress_polls = 1 << 30;
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(all_reduce(comm), TPCOLL_TIMEOUT) << message_;
  EXPECT_GE(std::chrono::steady_clock::now() - start, 50ms);
  EXPECT_NE(message_.find("ncclAllReduce"), std::string::npos) << message_;
  EXPECT_NE(message_.find("TPCOLL_TIMEOUT_MS"), std::string::npos) << message_;
  EXPECT_EQ(state_.aborts, 1);
  EXPECT_EQ(all_reduce(comm), TPCOLL_ABORTED);
  EXPECT_NE(message_.find("after a timeout"), std::string::npos) << message_;
  EXPECT_EQ(state_.aborts, 1);
  EXPECT_FALSE(state_.used_after_free);
}

TEST_F(NcclComm, AnInitPastTheTimeoutIsAbortedAndFailsWithTimeout) {
  state_.init_result = ncclInProgress;
  state_.in_progress_polls = 1 << 30;
  try {
    Comm comm(lib_, 2, ncclUniqueId{}, 0, 20);
    FAIL() << "the constructor returned";
  } catch (const tpcoll::Error& e) {
    EXPECT_EQ(e.code(), TPCOLL_TIMEOUT) << e.what();
    EXPECT_NE(std::string(e.what()).find("ncclCommInitRankConfig"), std::string::npos) << e.what();
  }
  EXPECT_EQ(state_.aborts, 1);
  EXPECT_EQ(state_.destroys, 0);
}

}  // namespace
