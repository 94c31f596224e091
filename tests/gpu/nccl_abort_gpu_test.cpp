// tpcoll_comm_abort on the NCCL path, with the real NCCL: a one-rank
// communicator on GPU 0 that TPCOLL_ALGO=fallback sends to NCCL. The abort
// calls ncclCommAbort (from another thread too, while ops are enqueued), the
// next call fails with TPCOLL_ABORTED, and destroy after it is clean.
//
// One rank only: NCCL refuses two ranks on one GPU, and the test machines
// have one. An abort that ends a wait for peers is tested against a fake NCCL
// (tests/unit/nccl_comm_test.cpp). Exits 77 (ctest: skipped) without a CUDA
// device; skips itself where NCCL cannot be loaded.
#include "local_job.hpp"

#include <tpcoll/tpcoll.h>

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <thread>

namespace {

constexpr std::size_t kCount = 1 << 18;  // 1 MiB of fp32

class NcclAbort : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("TPCOLL_ALGO", "fallback", 1);  // read at creation: it starts NCCL
    const int device = 0;
    const tpcoll_result_t created = tpcoll_comm_create_local(1, &device, &comm_);
    unsetenv("TPCOLL_ALGO");
    if (created == TPCOLL_UNSUPPORTED) GTEST_SKIP() << "no NCCL: " << tpcoll_last_error();
    ASSERT_EQ(created, TPCOLL_SUCCESS) << tpcoll_last_error();
    const std::int64_t shape[] = {static_cast<std::int64_t>(kCount)};
    tpcoll_plan_info_t plan{};
    ASSERT_EQ(tpcoll_plan(comm_, TPCOLL_OP_ALL_REDUCE, TPCOLL_FLOAT32, 1, shape, 0, &plan), TPCOLL_SUCCESS);
    ASSERT_EQ(plan.algo, TPCOLL_ALGO_FALLBACK) << plan.reason;
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&x_, kCount * sizeof(float)), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&y_, kCount * sizeof(float)), cudaSuccess);
  }
  void TearDown() override {
    if (comm_ != nullptr) {
      EXPECT_EQ(tpcoll_comm_destroy(comm_), TPCOLL_SUCCESS) << tpcoll_last_error();
    }
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    cudaFree(x_);
    cudaFree(y_);
    EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  }

  tpcoll_result_t all_reduce() { return tpcoll_all_reduce(comm_, x_, y_, kCount, TPCOLL_FLOAT32, stream_); }
  tpcoll_result_t async_error() {
    tpcoll_result_t async = TPCOLL_INTERNAL_ERROR;
    EXPECT_EQ(tpcoll_comm_get_async_error(comm_, &async), TPCOLL_SUCCESS);
    return async;
  }

  tpcoll_comm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  float* x_ = nullptr;
  float* y_ = nullptr;
};

TEST_F(NcclAbort, TheNextCallIsAbortedAndDestroyIsClean) {
  ASSERT_EQ(all_reduce(), TPCOLL_SUCCESS) << tpcoll_last_error();
  ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
  EXPECT_EQ(async_error(), TPCOLL_SUCCESS) << tpcoll_last_error();

  ASSERT_EQ(tpcoll_comm_abort(comm_), TPCOLL_SUCCESS) << tpcoll_last_error();
  EXPECT_EQ(all_reduce(), TPCOLL_ABORTED) << tpcoll_last_error();
  const std::int64_t shape[] = {static_cast<std::int64_t>(kCount)};
  EXPECT_EQ(tpcoll_all_gather(comm_, x_, y_, TPCOLL_FLOAT32, 1, shape, 0, stream_), TPCOLL_ABORTED);
  EXPECT_EQ(tpcoll_reduce_scatter(comm_, x_, y_, kCount, TPCOLL_FLOAT32, stream_), TPCOLL_ABORTED);
  // Work enqueued before the abort may have been stopped: it is not vouched for.
  EXPECT_EQ(async_error(), TPCOLL_ABORTED) << tpcoll_last_error();
  // A second abort does not call ncclCommAbort on the freed communicator.
  EXPECT_EQ(tpcoll_comm_abort(comm_), TPCOLL_SUCCESS) << tpcoll_last_error();
  EXPECT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
}

// The watchdog case: ops are enqueued back to back by one thread while
// another aborts; the op thread's next call fails with TPCOLL_ABORTED, the
// work NCCL had taken in ends, and destroy is clean.
TEST_F(NcclAbort, AbortFromAnotherThreadWhileOpsAreEnqueued) {
  std::atomic<int> ops{0};
  std::atomic<bool> finished{false};
  tpcoll_result_t last = TPCOLL_SUCCESS;
  std::thread enqueuer([&] {
    // Bounded, so that an abort that is not seen fails instead of hanging.
    for (int i = 0; i < 100000 && last == TPCOLL_SUCCESS; ++i) {
      last = all_reduce();
      ops.fetch_add(1);
    }
    finished = true;
  });
  while (ops.load() < 10 && !finished.load()) std::this_thread::yield();
  const auto start = std::chrono::steady_clock::now();
  ASSERT_EQ(tpcoll_comm_abort(comm_), TPCOLL_SUCCESS) << tpcoll_last_error();
  enqueuer.join();
  EXPECT_EQ(last, TPCOLL_ABORTED) << "after " << ops.load() << " ops";
  EXPECT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
}

}  // namespace

int main(int argc, char** argv) { return run_gpu_tests(argc, argv); }
