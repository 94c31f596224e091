// Issue 18, item 5 (vllm#46515: handles leaked per communicator): 1,000
// create/destroy cycles of a two-rank CUDA communicator (ranks as streams of
// this process on GPU 0), each running an op, leave device memory and file
// descriptors where they started. (IPC handles, opened only between
// processes, are counted by `reliability cycles`.)
#include "local_job.hpp"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <filesystem>

namespace {

std::size_t open_fds() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

std::size_t free_device_bytes() {
  std::size_t free = 0, total = 0;
  cudaMemGetInfo(&free, &total);
  return free;
}

void cycle(float* in, float* out, cudaStream_t stream) {
  const int devices[2] = {0, 0};
  tpcoll_comm_t comms[2];
  ASSERT_EQ(tpcoll_comm_create_local(2, devices, comms), TPCOLL_SUCCESS) << tpcoll_last_error();
  for (int r = 0; r < 2; ++r)
    ASSERT_EQ(tpcoll_all_reduce(comms[r], in + r * 1024, out + r * 1024, 1024, TPCOLL_FLOAT32, r ? stream : nullptr),
              TPCOLL_SUCCESS)
        << tpcoll_last_error();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  for (tpcoll_comm_t c : comms) ASSERT_EQ(tpcoll_comm_destroy(c), TPCOLL_SUCCESS) << tpcoll_last_error();
}

TEST(CreateDestroyHygiene, ThousandCyclesLeaveMemoryAndDescriptorsAsTheyWere) {
  float *in = nullptr, *out = nullptr;
  ASSERT_EQ(cudaMalloc(&in, 2 * 1024 * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&out, 2 * 1024 * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemset(in, 0, 2 * 1024 * sizeof(float)), cudaSuccess);
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  cycle(in, out, stream);  // lazily loaded kernels and libraries are not leaks
  const std::size_t fds = open_fds(), free_before = free_device_bytes();
  for (int i = 0; i < 1000 && !HasFatalFailure(); ++i) cycle(in, out, stream);
  EXPECT_EQ(open_fds(), fds);
  // One communicator holds over 8 MiB per rank: 2 MiB of slack is allocator
  // granularity, not a leak.
  const std::size_t free_after = free_device_bytes();
  EXPECT_LE(free_before > free_after ? free_before - free_after : 0, std::size_t{2} << 20)
      << "free device memory " << free_before << " -> " << free_after;
  cudaStreamDestroy(stream);
  cudaFree(in);
  cudaFree(out);
}

}  // namespace

int main(int argc, char** argv) { return run_gpu_tests(argc, argv); }
