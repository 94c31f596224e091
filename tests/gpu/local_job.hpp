// All ranks of one job in this process, each a stream on GPU 0 with its own
// input and output buffers: the placement the in-process GPU tests use.
#pragma once

#include <tpcoll/tpcoll.hpp>

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <initializer_list>
#include <string>
#include <optional>
#include <vector>

// main() of a GPU test binary: exit code 77 (ctest: skipped) without a CUDA
// device, so that CPU-only machines never report these tests as passed.
inline int run_gpu_tests(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

class LocalJob {
 public:
  LocalJob(int world, std::size_t max_bytes) : comms_(world), streams_(world), in_(world), out_(world) {
    std::vector<int> devices(world, 0);
    tpcoll::check(tpcoll_comm_create_local(world, devices.data(), comms_.data()));
    for (int r = 0; r < world; ++r) {
      cudaStreamCreateWithFlags(&streams_[r], cudaStreamNonBlocking);
      cudaMalloc(&in_[r], max_bytes);
      cudaMalloc(&out_[r], max_bytes * world);  // room for a gather
    }
  }
  ~LocalJob() {
    cudaDeviceSynchronize();
    for (std::size_t r = 0; r < comms_.size(); ++r) {
      tpcoll_comm_destroy(comms_[r]);
      cudaStreamDestroy(streams_[r]);
      cudaFree(in_[r]);
      cudaFree(out_[r]);
    }
    if (origin_ != nullptr) cudaStreamDestroy(origin_);
  }
  LocalJob(const LocalJob&) = delete;
  LocalJob& operator=(const LocalJob&) = delete;

  int world() const { return static_cast<int>(comms_.size()); }
  tpcoll_comm_t comm(int r) const { return comms_[r]; }
  cudaStream_t stream(int r) const { return streams_[r]; }
  void* in(int r) const { return in_[r]; }
  void* out(int r) const { return out_[r]; }

  void force(std::optional<tpcoll::Algo> algo) {
    for (tpcoll_comm_t c : comms_)
      tpcoll::check(tpcoll_comm_force_algo(c, algo ? static_cast<int>(*algo) : TPCOLL_ALGO_AUTO));
  }

  // Rank r's error from enqueued work, TPCOLL_SUCCESS if none; its message
  // is then tpcoll_last_error().
  tpcoll_result_t async_error(int r) const {
    tpcoll_result_t async = TPCOLL_INTERNAL_ERROR;
    tpcoll::check(tpcoll_comm_get_async_error(comms_[r], &async));
    return async;
  }

  // After a call that ranks disagreed on: every rank's enqueued work ended in
  // TPCOLL_MISMATCH, with each of `phrases` in its message.
  void expect_mismatch_on_every_rank(std::initializer_list<const char*> phrases) const {
    for (int r = 0; r < world(); ++r) {
      EXPECT_EQ(async_error(r), TPCOLL_MISMATCH) << "rank " << r << ": " << tpcoll_last_error();
      const std::string message = tpcoll_last_error();
      for (const char* phrase : phrases) EXPECT_NE(message.find(phrase), std::string::npos) << message;
    }
  }

  // Captures `body` (which enqueues ops on every rank's stream) into a graph
  // forked from and joined to one origin stream.
  template <typename Body>
  cudaGraphExec_t capture(Body&& body) {
    if (origin_ == nullptr) cudaStreamCreateWithFlags(&origin_, cudaStreamNonBlocking);
    cudaEvent_t fork, join;
    cudaEventCreate(&fork);
    cudaEventCreate(&join);
    cudaGraph_t graph;
    cudaGraphExec_t exec = nullptr;
    EXPECT_EQ(cudaStreamBeginCapture(origin_, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    cudaEventRecord(fork, origin_);
    for (cudaStream_t s : streams_) cudaStreamWaitEvent(s, fork);
    body();
    for (cudaStream_t s : streams_) {
      cudaEventRecord(join, s);
      cudaStreamWaitEvent(origin_, join);
    }
    EXPECT_EQ(cudaStreamEndCapture(origin_, &graph), cudaSuccess);
    EXPECT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    cudaGraphDestroy(graph);
    cudaEventDestroy(fork);
    cudaEventDestroy(join);
    return exec;
  }
  void replay(cudaGraphExec_t exec) {
    EXPECT_EQ(cudaGraphLaunch(exec, origin_), cudaSuccess);
    EXPECT_EQ(cudaStreamSynchronize(origin_), cudaSuccess);
  }

 private:
  std::vector<tpcoll_comm_t> comms_;
  std::vector<cudaStream_t> streams_;
  std::vector<void*> in_, out_;
  cudaStream_t origin_ = nullptr;
};
