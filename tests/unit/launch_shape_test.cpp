// Issue 18, item 2 (flashinfer#3408, vllm#43616: ranks that sized a kernel
// differently hung): a CUDA kernel's launch shape is a pure function of the
// call's size and the world size, the same on every rank, and small enough
// that every rank's blocks fit one GPU together. The settings that pick the
// kernel (TPCOLL_CUDA_LOW_LATENCY_BYTES and the staging size) are agreed at
// creation (multiprocess: Settings.*), and the call tag covers the shape, so
// ranks that still differed would meet as a mismatch.
#include "cuda/cuda_backend.hpp"

#include <gtest/gtest.h>

#include <cstddef>
#include <type_traits>

namespace {

using tpcoll::cuda::CudaBackend;
using Shape = int (*)(std::size_t, int);

// No rank, device or environment among the inputs: every rank computes the same.
static_assert(std::is_same_v<decltype(&CudaBackend::blocks_for), Shape>);
static_assert(std::is_same_v<decltype(&CudaBackend::low_latency_blocks), Shape>);
static_assert(std::is_same_v<decltype(&CudaBackend::fused_low_latency_blocks), Shape>);

TEST(LaunchShape, EveryRanksBlocksFitOneGpuTogether) {
  for (int world = 1; world <= tpcoll::cuda::kMaxRanks; ++world)
    for (std::size_t bytes = 1; bytes <= (std::size_t{1} << 30); bytes = bytes * 3 + 1) {
      for (const Shape shape : {&CudaBackend::blocks_for, &CudaBackend::low_latency_blocks,
                                &CudaBackend::fused_low_latency_blocks}) {
        const int blocks = shape(bytes, world);
        EXPECT_GE(blocks, 1) << bytes << " B, " << world << " ranks";
        EXPECT_LE(blocks, tpcoll::cuda::kMaxBlocks);
        EXPECT_LE(blocks * world, 128) << bytes << " B, " << world << " ranks";  // 132 SMs on an H100
        EXPECT_EQ(blocks, shape(bytes, world));
      }
    }
}

}  // namespace
