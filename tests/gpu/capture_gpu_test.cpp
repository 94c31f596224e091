// Issue 18, item 3 (vllm#54626, pytorch#198140): a communicator created
// before capture whose very first ops are captured works; creating one during
// capture fails at once with a message that says so. Ranks are streams of
// this process on GPU 0.
#include "local_job.hpp"
#include "op_mix.hpp"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>

namespace {

void expect_refused_as_during_capture(tpcoll_result_t result) {
  EXPECT_EQ(result, TPCOLL_INVALID_ARGUMENT);
  const std::string message = tpcoll_last_error();
  EXPECT_NE(message.find("during CUDA graph capture is not allowed"), std::string::npos) << message;
}

void end_abandoned_capture(cudaStream_t stream) {
  cudaGraph_t graph = nullptr;
  cudaStreamEndCapture(stream, &graph);  // invalidated by the refused call: an error is expected
  if (graph) cudaGraphDestroy(graph);
  cudaGetLastError();
}

TEST(FirstUseUnderCapture, FirstOpsOfACommunicatorAreCapturedAndReplayed) {
  LocalJob job(2, 64);  // created eagerly; no op has run yet
  const OpMix mix(2, 3);  // one all-reduce, one all-gather, one fused op
  ASSERT_TRUE(mix.allocated());
  cudaGraphExec_t exec = job.capture([&] {
    for (int i = 0; i < 3; ++i)
      for (int r = 0; r < 2; ++r)
        EXPECT_EQ(mix.issue(job.comm(r), r, i, job.stream(r)), TPCOLL_SUCCESS) << tpcoll_last_error();
  });
  ASSERT_NE(exec, nullptr);
  job.replay(exec);
  job.replay(exec);
  cudaGraphExecDestroy(exec);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(job.async_error(r), TPCOLL_SUCCESS) << tpcoll_last_error();
    EXPECT_EQ(mix.check(r), "");
  }
}

TEST(FirstUseUnderCapture, CreationDuringThisThreadsCaptureIsRefused) {
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  const int devices[2] = {0, 0};
  tpcoll_comm_t comms[2];
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  expect_refused_as_during_capture(tpcoll_comm_create_local(2, devices, comms));
  end_abandoned_capture(stream);

  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  const tpcoll_comm_config_t config{0, 1, 0, "", nullptr, nullptr};
  tpcoll_comm_t comm = nullptr;
  expect_refused_as_during_capture(tpcoll_comm_create(&config, &comm));
  end_abandoned_capture(stream);

  // Afterwards creation works again.
  ASSERT_EQ(tpcoll_comm_create_local(2, devices, comms), TPCOLL_SUCCESS) << tpcoll_last_error();
  for (tpcoll_comm_t c : comms) tpcoll_comm_destroy(c);
  cudaStreamDestroy(stream);
}

TEST(FirstUseUnderCapture, CreationDuringAnotherThreadsGlobalCaptureIsRefused) {
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  // The capture must end on the thread that began it.
  std::atomic<int> phase{0};  // 1: capturing; 2: creation tried
  std::thread capturer([&] {
    EXPECT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
    phase = 1;
    while (phase.load() != 2) std::this_thread::yield();
    end_abandoned_capture(stream);
  });
  while (phase.load() != 1) std::this_thread::yield();
  const int devices[2] = {0, 0};
  tpcoll_comm_t comms[2];
  expect_refused_as_during_capture(tpcoll_comm_create_local(2, devices, comms));
  phase = 2;
  capturer.join();
  cudaStreamDestroy(stream);
}

}  // namespace

int main(int argc, char** argv) { return run_gpu_tests(argc, argv); }
