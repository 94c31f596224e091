// The CUDA all-reduce, with every rank of a job as a stream of this process
// on GPU 0 (so several ranks share the GPU): results bit-identical to the
// numeric contract computed on the host, on every rank, for one-shot and
// two-shot, chunked or not, eager and replayed from a CUDA graph, and bad
// input refused. Exits 77 (ctest: skipped) without a CUDA device.
#include "common/numerics.hpp"
#include "elements.hpp"
#include "local_job.hpp"

#include <tpcoll/tpcoll.hpp>

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace {

namespace nx = tpcoll::numerics;

#define CUDA_OK(call) ASSERT_EQ((call), cudaSuccess) << #call

// LocalJob with the all-reduce's inputs and expected results.
class ReduceJob : public LocalJob {
 public:
  using LocalJob::LocalJob;

  // Uploads fresh random inputs (some -0.0) and returns the expected output:
  // rank 0's value, plus ranks 1..n-1 in order in fp32, rounded once.
  std::vector<std::byte> fill(tpcoll_dtype_t d, std::size_t count, std::uint32_t seed) {
    const std::size_t bytes = count * tpcoll_dtype_size(d);
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    std::vector<std::vector<std::byte>> inputs(world(), std::vector<std::byte>(bytes));
    for (int r = 0; r < world(); ++r) {
      for (std::size_t i = 0; i < count; ++i) narrow(d, inputs[r].data(), i, i % 97 == 0 ? -0.0f : dist(rng));
      EXPECT_EQ(cudaMemcpy(in(r), inputs[r].data(), bytes, cudaMemcpyHostToDevice), cudaSuccess);
    }
    // A copy from pageable memory may still be in flight when cudaMemcpy
    // returns, and the ranks' non-blocking streams would not wait for it.
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<std::byte> expected(bytes);
    for (std::size_t i = 0; i < count; ++i) {
      float acc = widen(d, inputs[0].data(), i);
      for (int r = 1; r < world(); ++r) acc += widen(d, inputs[r].data(), i);
      narrow(d, expected.data(), i, acc);
    }
    return expected;
  }

  void all_reduce(tpcoll_dtype_t d, std::size_t count, bool in_place = false) {
    for (int r = 0; r < world(); ++r)
      tpcoll::check(tpcoll_all_reduce(comm(r), in(r), in_place ? in(r) : out(r), count, d, stream(r)));
  }

  // Every rank's output equals `expected`, bit for bit.
  void expect_all(const std::vector<std::byte>& expected, bool in_place = false) {
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<std::byte> got(expected.size());
    for (int r = 0; r < world(); ++r) {
      ASSERT_EQ(cudaMemcpy(got.data(), in_place ? in(r) : out(r), got.size(), cudaMemcpyDeviceToHost), cudaSuccess);
      ASSERT_EQ(std::memcmp(got.data(), expected.data(), got.size()), 0) << "rank " << r << " of " << world();
    }
  }
};

constexpr tpcoll_dtype_t kDtypes[] = {TPCOLL_FLOAT32, TPCOLL_FLOAT16, TPCOLL_BFLOAT16};

TEST(CudaAllReduce, EveryWorldDtypeCountAndAlgorithm) {
  const std::size_t counts[] = {1, 7, 8, 1000, 4097, 65536 + 3, 1 << 20};
  for (int world : {2, 3, 4, 8}) {
    ReduceJob job(world, (std::size_t{1} << 20) * 4);
    for (tpcoll_dtype_t d : kDtypes)
      for (std::size_t count : counts)
        for (auto algo : {tpcoll::Algo::kOneShot, tpcoll::Algo::kTwoShot}) {
          SCOPED_TRACE(testing::Message() << "world " << world << " dtype " << tpcoll_dtype_name(d) << " count "
                                          << count << " algo " << static_cast<int>(algo));
          const auto expected = job.fill(d, count, static_cast<std::uint32_t>(count * 7 + world));
          job.force(algo);
          job.all_reduce(d, count);
          job.expect_all(expected);
        }
  }
}

TEST(CudaAllReduce, InPlaceAndUnalignedBuffers) {
  ReduceJob job(2, 1 << 20);
  for (tpcoll_dtype_t d : kDtypes) {
    const auto expected = job.fill(d, 5003, 11);
    job.all_reduce(d, 5003, /*in_place=*/true);
    job.expect_all(expected, /*in_place=*/true);
  }
  // Buffers one element off 16-byte alignment take the element-wide kernels.
  const auto expected = job.fill(TPCOLL_FLOAT32, 1001, 5);
  std::vector<std::byte> host(1001 * 4);
  for (int r = 0; r < 2; ++r) {
    CUDA_OK(cudaMemcpy(host.data(), job.in(r), host.size(), cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(static_cast<float*>(job.in(r)) + 1, host.data(), host.size(), cudaMemcpyHostToDevice));
  }
  CUDA_OK(cudaDeviceSynchronize());
  for (int r = 0; r < 2; ++r)
    tpcoll::check(tpcoll_all_reduce(job.comm(r), static_cast<float*>(job.in(r)) + 1,
                                    static_cast<float*>(job.out(r)) + 1, 1001, TPCOLL_FLOAT32, job.stream(r)));
  CUDA_OK(cudaDeviceSynchronize());
  for (int r = 0; r < 2; ++r) {
    CUDA_OK(cudaMemcpy(host.data(), static_cast<float*>(job.out(r)) + 1, host.size(), cudaMemcpyDeviceToHost));
    ASSERT_EQ(std::memcmp(host.data(), expected.data(), host.size()), 0) << "rank " << r;
  }
}

TEST(CudaAllReduce, ChunkedThroughSmallStaging) {
  // Many steps per kernel, a shorter last chunk and a tail, repeated: a race
  // between steps that reuse a slot shows up as wrong bits sooner or later.
  setenv("TPCOLL_CUDA_BUFFER_BYTES", "65536", 1);
  for (int world : {2, 3, 4}) {
    ReduceJob job(world, 1 << 22);
    for (int repeat = 0; repeat < 8; ++repeat)
      for (tpcoll_dtype_t d : kDtypes)
        for (auto algo : {tpcoll::Algo::kOneShot, tpcoll::Algo::kTwoShot}) {
          const std::size_t count = 300001 + 977 * repeat;
          SCOPED_TRACE(testing::Message() << "world " << world << " repeat " << repeat << " dtype "
                                          << tpcoll_dtype_name(d) << " algo " << static_cast<int>(algo));
          const auto expected = job.fill(d, count, static_cast<std::uint32_t>(3 + repeat));
          job.force(algo);
          job.all_reduce(d, count);
          job.expect_all(expected);
        }
  }
  unsetenv("TPCOLL_CUDA_BUFFER_BYTES");
}

TEST(CudaAllReduce, GraphReplayWithNewDataEveryTime) {
  ReduceJob job(4, 1 << 20);
  const std::size_t count = 12345;
  for (auto algo : {tpcoll::Algo::kOneShot, tpcoll::Algo::kTwoShot}) {
    job.force(algo);
    cudaGraphExec_t exec = job.capture([&] {
      for (int k = 0; k < 3; ++k) job.all_reduce(TPCOLL_BFLOAT16, count);  // the same op three times
    });
    for (int replay = 0; replay < 20; ++replay) {
      const auto expected = job.fill(TPCOLL_BFLOAT16, count, 100 + replay);
      job.replay(exec);
      job.expect_all(expected);
      // Eager calls between replays keep the sequence in step.
      const auto eager = job.fill(TPCOLL_BFLOAT16, 77, 200 + replay);
      job.all_reduce(TPCOLL_BFLOAT16, 77);
      job.expect_all(eager);
    }
    cudaGraphExecDestroy(exec);
  }
  job.force(std::nullopt);
}

TEST(CudaAllReduce, TenThousandBackToBackCalls) {
  ReduceJob job(2, 1 << 16);
  const auto expected = job.fill(TPCOLL_FLOAT16, 1024, 9);
  for (int i = 0; i < 10000; ++i) job.all_reduce(TPCOLL_FLOAT16, 1024);
  job.expect_all(expected);
  EXPECT_EQ(job.async_error(0), TPCOLL_SUCCESS);
}

TEST(CudaAllReduce, BadInputIsRefusedWithoutLaunching) {
  ReduceJob job(2, 1 << 16);
  std::vector<float> host(16);
  EXPECT_EQ(tpcoll_all_reduce(job.comm(0), host.data(), job.out(0), 16, TPCOLL_FLOAT32, job.stream(0)),
            TPCOLL_INVALID_ARGUMENT);
  EXPECT_NE(std::string(tpcoll_last_error()).find("host memory"), std::string::npos) << tpcoll_last_error();
  EXPECT_EQ(tpcoll_all_reduce(job.comm(0), job.in(0), job.out(0), 16, TPCOLL_INT32, job.stream(0)),
            TPCOLL_INVALID_ARGUMENT);
}

TEST(CudaAllReduce, RanksThatDisagreeGetAnErrorNotAHang) {
  setenv("TPCOLL_TIMEOUT_MS", "3000", 1);
  ReduceJob job(2, 1 << 16);
  unsetenv("TPCOLL_TIMEOUT_MS");
  job.fill(TPCOLL_FLOAT32, 256, 1);
  // Same launch shape (one block each), different counts.
  tpcoll::check(tpcoll_all_reduce(job.comm(0), job.in(0), job.out(0), 256, TPCOLL_FLOAT32, job.stream(0)));
  tpcoll::check(tpcoll_all_reduce(job.comm(1), job.in(1), job.out(1), 255, TPCOLL_FLOAT32, job.stream(1)));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  job.expect_mismatch_on_every_rank({"shape [256]", "shape [255]"});  // names both calls
  EXPECT_EQ(tpcoll_all_reduce(job.comm(0), job.in(0), job.out(0), 256, TPCOLL_FLOAT32, job.stream(0)), TPCOLL_MISMATCH);
}

TEST(CudaAllReduce, BuffersAlignedOnOneRankOnlyAreAMismatch) {
  // The kernel variant follows each rank's alignment (low-latency units when
  // 16-byte aligned, element-wide otherwise): ranks must not mix them.
  setenv("TPCOLL_TIMEOUT_MS", "3000", 1);
  ReduceJob job(2, 1 << 16);
  unsetenv("TPCOLL_TIMEOUT_MS");
  job.fill(TPCOLL_FLOAT32, 257, 1);
  tpcoll::check(tpcoll_all_reduce(job.comm(0), job.in(0), job.out(0), 256, TPCOLL_FLOAT32, job.stream(0)));
  tpcoll::check(tpcoll_all_reduce(job.comm(1), static_cast<float*>(job.in(1)) + 1, job.out(1), 256, TPCOLL_FLOAT32,
                                  job.stream(1)));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  job.expect_mismatch_on_every_rank({"aligned on one of them only"});
}

TEST(NcclEngine, ServesOneRankAndRefusesRanksSharingAGpu) {
  setenv("TPCOLL_DISABLE", "1", 1);
  {
    ReduceJob job(1, 1 << 20);
    tpcoll_plan_info_t plan{};
    const std::int64_t shape[1] = {4097};
    tpcoll::check(tpcoll_plan(job.comm(0), TPCOLL_OP_ALL_REDUCE, TPCOLL_BFLOAT16, 1, shape, 0, &plan));
    EXPECT_STREQ(plan.backend, "nccl");
    const auto expected = job.fill(TPCOLL_BFLOAT16, 4097, 3);
    job.all_reduce(TPCOLL_BFLOAT16, 4097);
    job.expect_all(expected);
    // A gather along an inner dim goes through the scratch and 2-D copies.
    const std::int64_t matrix[2] = {3, 5};
    tpcoll::check(tpcoll_all_gather(job.comm(0), job.in(0), job.out(0), TPCOLL_FLOAT32, 2, matrix, 1, job.stream(0)));
    std::vector<float> in(15), out(15);
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaMemcpy(in.data(), job.in(0), 60, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(out.data(), job.out(0), 60, cudaMemcpyDeviceToHost));
    EXPECT_EQ(in, out);
  }
  try {
    ReduceJob job(2, 1 << 16);
    ADD_FAILURE() << "two ranks on one GPU were given to NCCL";
  } catch (const tpcoll::Error& e) {
    EXPECT_EQ(e.code(), TPCOLL_UNSUPPORTED);
    EXPECT_NE(std::string(e.what()).find("share a GPU"), std::string::npos) << e.what();
  }
  unsetenv("TPCOLL_DISABLE");
}

}  // namespace

int main(int argc, char** argv) { return run_gpu_tests(argc, argv); }
