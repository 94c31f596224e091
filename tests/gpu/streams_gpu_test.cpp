// Issue 18, item 1 (sglang#31117, pytorch#189228: two streams issuing ops on
// one communicator deadlocked): each rank issues 1,000 mixed ops spread over
// 2 or 4 streams, each rank in its own pattern, eagerly and captured into one
// graph; every op completes with the right result, in issue order (ranks that
// ran them in another order would meet different calls: TPCOLL_MISMATCH).
// Crossing between eager work and capture works; the one order CUDA cannot
// express (an eager op while the previous op's stream is being captured) is
// refused at the call. Two ranks as streams of this process on GPU 0.
#include "local_job.hpp"
#include "op_mix.hpp"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

constexpr int kWorld = 2;
constexpr int kOps = 1000;

class Streams : public testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    const int devices[kWorld] = {0, 0};
    ASSERT_EQ(tpcoll_comm_create_local(kWorld, devices, comms_), TPCOLL_SUCCESS) << tpcoll_last_error();
    streams_.assign(kWorld, std::vector<cudaStream_t>(GetParam()));
    for (auto& rank : streams_)
      for (cudaStream_t& s : rank) ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    ASSERT_EQ(cudaStreamCreateWithFlags(&origin_, cudaStreamNonBlocking), cudaSuccess);
  }
  void TearDown() override {
    cudaDeviceSynchronize();
    for (tpcoll_comm_t c : comms_) tpcoll_comm_destroy(c);
    for (auto& rank : streams_)
      for (cudaStream_t s : rank) cudaStreamDestroy(s);
    cudaStreamDestroy(origin_);
  }

  // Rank r's stream for op i: a pattern of its own, so that the ranks switch
  // streams at different ops.
  cudaStream_t stream_for(int r, int i) const {
    const int n = GetParam();
    return streams_[r][(i * (r + 1) + i / 7) % n];
  }

  // Issues ops [first, last) of every rank, ranks interleaved op by op.
  void issue(const OpMix& mix, int first, int last) {
    for (int i = first; i < last; ++i)
      for (int r = 0; r < kWorld; ++r)
        ASSERT_EQ(mix.issue(comms_[r], r, i, stream_for(r, i)), TPCOLL_SUCCESS)
            << "rank " << r << " op " << i << ": " << tpcoll_last_error();
  }

  void expect_done_and_right(const OpMix& mix) {
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    for (int r = 0; r < kWorld; ++r) {
      tpcoll_result_t async = TPCOLL_INTERNAL_ERROR;
      ASSERT_EQ(tpcoll_comm_get_async_error(comms_[r], &async), TPCOLL_SUCCESS);
      EXPECT_EQ(async, TPCOLL_SUCCESS) << "rank " << r << ": " << tpcoll_last_error();
      EXPECT_EQ(mix.check(r), "");
    }
  }

  // Captures body() into a graph forked from origin_ to every rank's streams.
  template <typename Body>
  cudaGraphExec_t capture(Body&& body) {
    cudaEvent_t fork, join;
    cudaEventCreateWithFlags(&fork, cudaEventDisableTiming);
    cudaEventCreateWithFlags(&join, cudaEventDisableTiming);
    EXPECT_EQ(cudaStreamBeginCapture(origin_, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    cudaEventRecord(fork, origin_);
    for (auto& rank : streams_)
      for (cudaStream_t s : rank) cudaStreamWaitEvent(s, fork);
    body();
    for (auto& rank : streams_)
      for (cudaStream_t s : rank) {
        cudaEventRecord(join, s);
        cudaStreamWaitEvent(origin_, join);
      }
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    EXPECT_EQ(cudaStreamEndCapture(origin_, &graph), cudaSuccess);
    EXPECT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    cudaGraphDestroy(graph);
    cudaEventDestroy(fork);
    cudaEventDestroy(join);
    return exec;
  }

  tpcoll_comm_t comms_[kWorld] = {};
  std::vector<std::vector<cudaStream_t>> streams_;
  cudaStream_t origin_ = nullptr;
};

TEST_P(Streams, EagerOpsFromEveryStreamCompleteInIssueOrder) {
  const OpMix mix(kWorld, kOps);
  ASSERT_TRUE(mix.allocated());
  issue(mix, 0, kOps);
  expect_done_and_right(mix);
}

TEST_P(Streams, CapturedOpsFromEveryStreamCompleteInIssueOrder) {
  const OpMix mix(kWorld, kOps);
  ASSERT_TRUE(mix.allocated());
  cudaGraphExec_t exec = capture([&] { issue(mix, 0, kOps); });
  ASSERT_NE(exec, nullptr);
  for (int replay = 0; replay < 2; ++replay) {
    ASSERT_EQ(cudaGraphLaunch(exec, origin_), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(origin_), cudaSuccess);
  }
  cudaGraphExecDestroy(exec);
  expect_done_and_right(mix);
}

TEST_P(Streams, EagerThenCapturedThenEagerAgain) {
  const OpMix mix(kWorld, 300);
  ASSERT_TRUE(mix.allocated());
  issue(mix, 0, 100);
  cudaGraphExec_t exec = capture([&] { issue(mix, 100, 200); });
  ASSERT_NE(exec, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // the eager ops, before the replay
  ASSERT_EQ(cudaGraphLaunch(exec, origin_), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(origin_), cudaSuccess);
  cudaGraphExecDestroy(exec);
  issue(mix, 200, 300);
  expect_done_and_right(mix);
}

INSTANTIATE_TEST_SUITE_P(StreamsPerRank, Streams, testing::Values(2, 4));

TEST(StreamsUnderCapture, EagerOpWhileThePreviousOpsStreamIsCapturedIsRefused) {
  const int device = 0;
  tpcoll_comm_t comm = nullptr;
  ASSERT_EQ(tpcoll_comm_create_local(1, &device, &comm), TPCOLL_SUCCESS) << tpcoll_last_error();
  cudaStream_t captured, eager;
  cudaStreamCreateWithFlags(&captured, cudaStreamNonBlocking);
  cudaStreamCreateWithFlags(&eager, cudaStreamNonBlocking);
  float *in = nullptr, *out = nullptr;
  ASSERT_EQ(cudaMalloc(&in, 4096), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&out, 4096), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(captured, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  EXPECT_EQ(tpcoll_all_reduce(comm, in, out, 1024, TPCOLL_FLOAT32, captured), TPCOLL_SUCCESS) << tpcoll_last_error();
  EXPECT_EQ(tpcoll_all_reduce(comm, in, out, 1024, TPCOLL_FLOAT32, eager), TPCOLL_INVALID_ARGUMENT);
  const std::string message = tpcoll_last_error();
  EXPECT_NE(message.find("being captured"), std::string::npos) << message;
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(captured, &graph), cudaSuccess);
  if (graph) cudaGraphDestroy(graph);
  // Once the capture ended, the eager op is ordered as usual.
  EXPECT_EQ(tpcoll_all_reduce(comm, in, out, 1024, TPCOLL_FLOAT32, eager), TPCOLL_SUCCESS) << tpcoll_last_error();
  EXPECT_EQ(cudaStreamSynchronize(eager), cudaSuccess);
  cudaFree(in);
  cudaFree(out);
  cudaStreamDestroy(captured);
  cudaStreamDestroy(eager);
  tpcoll_comm_destroy(comm);
}

}  // namespace

int main(int argc, char** argv) { return run_gpu_tests(argc, argv); }
