// The CUDA all-gather, with every rank of a job as a stream of this process
// on GPU 0: the output must be exactly the concatenation of the ranks'
// inputs along the gathered dim, byte for byte, for every element size,
// dim, odd row widths (narrower access words), the low-latency and the staged
// kernels, chunked messages, eager calls and graph replays; ranks that
// disagree on the shape get an error. Exits 77 (ctest: skipped) without a
// CUDA device.
#include "local_job.hpp"

#include <tpcoll/tpcoll.hpp>

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

// One gather: the per-rank shape, the dim, the element type.
struct Gather {
  std::vector<std::int64_t> shape;
  int dim;
  tpcoll_dtype_t dtype;

  std::size_t bytes() const {
    std::size_t n = tpcoll_dtype_size(dtype);
    for (std::int64_t s : shape) n *= static_cast<std::size_t>(s);
    return n;
  }
  // Bytes from `dim` on: one rank's contiguous piece of an output row.
  std::size_t inner() const {
    std::size_t n = tpcoll_dtype_size(dtype);
    for (std::size_t d = static_cast<std::size_t>(dim); d < shape.size(); ++d) n *= static_cast<std::size_t>(shape[d]);
    return n;
  }
};

class GatherJob : public LocalJob {
 public:
  using LocalJob::LocalJob;

  // Fresh random bytes on every rank; returns torch.cat(inputs, dim).
  std::vector<std::byte> fill(const Gather& g, std::uint32_t seed, std::size_t offset = 0) {
    const std::size_t bytes = g.bytes(), inner = g.inner(), outer = bytes / inner;
    std::mt19937 rng(seed);
    std::vector<std::byte> expected(bytes * world()), input(bytes);
    for (int r = 0; r < world(); ++r) {
      for (std::byte& b : input) b = static_cast<std::byte>(rng());
      EXPECT_EQ(cudaMemcpy(static_cast<std::byte*>(in(r)) + offset, input.data(), bytes, cudaMemcpyHostToDevice),
                cudaSuccess);
      for (std::size_t o = 0; o < outer; ++o)
        std::memcpy(expected.data() + (o * world() + r) * inner, input.data() + o * inner, inner);
    }
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    return expected;
  }

  void all_gather(const Gather& g, std::size_t offset = 0) {
    for (int r = 0; r < world(); ++r)
      tpcoll::check(tpcoll_all_gather(comm(r), static_cast<std::byte*>(in(r)) + offset,
                                      static_cast<std::byte*>(out(r)) + offset, g.dtype,
                                      static_cast<int>(g.shape.size()), g.shape.data(), g.dim, stream(r)));
  }

  void expect_all(const std::vector<std::byte>& expected, std::size_t offset = 0) {
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<std::byte> got(expected.size());
    for (int r = 0; r < world(); ++r) {
      ASSERT_EQ(cudaMemcpy(got.data(), static_cast<std::byte*>(out(r)) + offset, got.size(), cudaMemcpyDeviceToHost),
                cudaSuccess);
      ASSERT_EQ(std::memcmp(got.data(), expected.data(), got.size()), 0) << "rank " << r << " of " << world();
    }
  }
};

// Every element size, dims first, middle and last, rows of 16-byte
// multiples and odd ones, low-latency sizes and staged ones.
std::vector<Gather> cases() {
  std::vector<Gather> out;
  for (tpcoll_dtype_t d : {TPCOLL_INT8, TPCOLL_FLOAT8_E4M3, TPCOLL_BFLOAT16, TPCOLL_FLOAT16, TPCOLL_FLOAT32,
                           TPCOLL_INT32, TPCOLL_INT64}) {
    out.push_back({{1}, 0, d});
    out.push_back({{4096}, 0, d});
    out.push_back({{3, 5}, 1, d});
    out.push_back({{3, 5}, 0, d});
    out.push_back({{7, 3, 6}, 1, d});
    out.push_back({{2, 8, 9}, 2, d});
    out.push_back({{8, 1024}, 1, d});
    out.push_back({{33, 3000}, 1, d});   // staged: above the low-latency size
    out.push_back({{1, 100003}, 1, d});  // one long odd row
    out.push_back({{5, 2, 4001}, 0, d});
  }
  return out;
}

TEST(CudaAllGather, EveryDtypeDimShapeAndWorld) {
  for (int world : {2, 3, 4, 8}) {
    GatherJob job(world, 2u << 20);
    std::uint32_t seed = 1;
    for (const Gather& g : cases()) {
      SCOPED_TRACE(testing::Message() << "world " << world << " dtype " << tpcoll_dtype_name(g.dtype) << " dim "
                                      << g.dim << " bytes " << g.bytes());
      const auto expected = job.fill(g, seed++);
      job.all_gather(g);
      job.expect_all(expected);
    }
  }
}

TEST(CudaAllGather, UnalignedBuffersTakeNarrowerWords) {
  GatherJob job(3, 1 << 20);
  for (std::size_t offset : {1, 2, 4, 8}) {
    const Gather g{{16, 1000}, 1, TPCOLL_INT8};
    SCOPED_TRACE(testing::Message() << "offset " << offset);
    const auto expected = job.fill(g, static_cast<std::uint32_t>(offset), offset);
    job.all_gather(g, offset);
    job.expect_all(expected, offset);
  }
}

TEST(CudaAllGather, ChunkedThroughSmallStaging) {
  setenv("TPCOLL_CUDA_BUFFER_BYTES", "65536", 1);
  for (int world : {2, 3}) {
    GatherJob job(world, 4u << 20);
    for (int repeat = 0; repeat < 4; ++repeat)
      for (const Gather& g : {Gather{{300001 + 977 * repeat}, 0, TPCOLL_BFLOAT16},
                              Gather{{129, 4000 + 8 * repeat}, 1, TPCOLL_FLOAT32},
                              Gather{{7, 50001}, 1, TPCOLL_INT8}}) {
        SCOPED_TRACE(testing::Message() << "world " << world << " repeat " << repeat << " bytes " << g.bytes());
        const auto expected = job.fill(g, static_cast<std::uint32_t>(repeat * 10 + world));
        job.all_gather(g);
        job.expect_all(expected);
      }
  }
  unsetenv("TPCOLL_CUDA_BUFFER_BYTES");
}

TEST(CudaAllGather, GraphReplayWithNewDataEveryTime) {
  GatherJob job(4, 1 << 20);
  for (const Gather& g : {Gather{{4, 512}, 1, TPCOLL_BFLOAT16}, Gather{{64, 3000}, 1, TPCOLL_FLOAT32}}) {
    cudaGraphExec_t exec = job.capture([&] { job.all_gather(g); });
    for (int replay = 0; replay < 10; ++replay) {
      const auto expected = job.fill(g, 100 + replay);
      job.replay(exec);
      job.expect_all(expected);
      const Gather eager{{3, 7}, 1, TPCOLL_INT8};  // eager calls between replays
      const auto small = job.fill(eager, 200 + replay);
      job.all_gather(eager);
      job.expect_all(small);
    }
    cudaGraphExecDestroy(exec);
  }
}

TEST(CudaAllGather, RanksThatDisagreeOnTheShapeGetAnError) {
  setenv("TPCOLL_TIMEOUT_MS", "3000", 1);
  GatherJob job(2, 1 << 16);
  unsetenv("TPCOLL_TIMEOUT_MS");
  const std::int64_t a[2] = {4, 64}, b[2] = {8, 32};  // same bytes, another shape
  tpcoll::check(tpcoll_all_gather(job.comm(0), job.in(0), job.out(0), TPCOLL_FLOAT32, 2, a, 1, job.stream(0)));
  tpcoll::check(tpcoll_all_gather(job.comm(1), job.in(1), job.out(1), TPCOLL_FLOAT32, 2, b, 1, job.stream(1)));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  job.expect_mismatch_on_every_rank({"shape [4, 64], dim 1", "shape [8, 32], dim 1"});  // names both calls
}

}  // namespace

int main(int argc, char** argv) { return run_gpu_tests(argc, argv); }
