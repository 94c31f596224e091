// Issue 18, item 2 (flashinfer#3408, vllm#43616: a rendezvous over the wrong
// group hung the fused op with DP or PP > 1): four ranks on GPU 0 (streams of
// this process), split into two pairs, plus the group of four, all used in
// one loop with every result checked; a call made on the wrong group meets
// its peer at another op and gets the mismatch error, not a hang.
#include "local_job.hpp"
#include "op_mix.hpp"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <string>

namespace {

constexpr int kWorld = 4;

struct Groups {
  tpcoll_comm_t all[kWorld] = {};
  tpcoll_comm_t pair[kWorld] = {};  // rank r's comm in pair r / 2, as its rank r % 2
  cudaStream_t stream[kWorld] = {};

  Groups() {
    const int gpu0[kWorld] = {0, 0, 0, 0};
    tpcoll::check(tpcoll_comm_create_local(kWorld, gpu0, all));
    tpcoll::check(tpcoll_comm_create_local(2, gpu0, pair));
    tpcoll::check(tpcoll_comm_create_local(2, gpu0, pair + 2));
    for (cudaStream_t& s : stream) cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
  }
  ~Groups() {
    cudaDeviceSynchronize();
    for (int r = 0; r < kWorld; ++r) {
      tpcoll_comm_destroy(all[r]);
      tpcoll_comm_destroy(pair[r]);
      cudaStreamDestroy(stream[r]);
    }
  }
};

tpcoll_result_t async_error(tpcoll_comm_t comm) {
  tpcoll_result_t result = TPCOLL_INTERNAL_ERROR;
  tpcoll_comm_get_async_error(comm, &result);
  return result;
}

TEST(SeveralGroups, PairsAndTheGroupOfFourInOneLoop) {
  constexpr int kOps = 300;
  Groups g;
  const OpMix four(kWorld, kOps), first_pair(2, kOps), second_pair(2, kOps);
  ASSERT_TRUE(four.allocated() && first_pair.allocated() && second_pair.allocated());
  for (int i = 0; i < kOps; ++i)
    for (int r = 0; r < kWorld; ++r) {
      const OpMix& pair = r < 2 ? first_pair : second_pair;
      ASSERT_EQ(four.issue(g.all[r], r, i, g.stream[r]), TPCOLL_SUCCESS) << tpcoll_last_error();
      ASSERT_EQ(pair.issue(g.pair[r], r % 2, i, g.stream[r]), TPCOLL_SUCCESS) << tpcoll_last_error();
    }
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  for (int r = 0; r < kWorld; ++r) {
    EXPECT_EQ(async_error(g.all[r]), TPCOLL_SUCCESS) << tpcoll_last_error();
    EXPECT_EQ(async_error(g.pair[r]), TPCOLL_SUCCESS) << tpcoll_last_error();
    EXPECT_EQ(four.check(r), "");
    EXPECT_EQ((r < 2 ? first_pair : second_pair).check(r % 2), "");
  }
}

TEST(SeveralGroups, CallOnTheWrongGroupIsAMismatchNotAHang) {
  Groups g;
  const OpMix pair(2, 2);
  ASSERT_TRUE(pair.allocated());
  // Rank 0 all-reduces on its pair (op 0); rank 1 meant an all-gather for
  // another group but passed the pair's communicator (op 1 is an all-gather).
  ASSERT_EQ(pair.issue(g.pair[0], 0, 0, g.stream[0]), TPCOLL_SUCCESS) << tpcoll_last_error();
  ASSERT_EQ(pair.issue(g.pair[1], 1, 1, g.stream[1]), TPCOLL_SUCCESS) << tpcoll_last_error();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  // Each names at least its own call (the peer's too when it saw it).
  const char* own_call[2] = {"all_reduce", "all_gather"};
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(async_error(g.pair[r]), TPCOLL_MISMATCH) << "rank " << r;
    const std::string message = tpcoll_last_error();
    EXPECT_NE(message.find("ranks disagree"), std::string::npos) << message;
    EXPECT_NE(message.find(own_call[r]), std::string::npos) << message;
  }
}

}  // namespace

int main(int argc, char** argv) { return run_gpu_tests(argc, argv); }
