// The CUDA reduce-scatter and the fused reduce-scatter + residual + RMSNorm,
// with every rank of a job as a stream of this process on GPU 0: each rank's
// share bit-identical to the same elements of our all-reduce (and of the
// contract computed on the host), and the fused op's rows to those of the
// full fused op; low-latency, staged and chunked, in place and unaligned,
// eager and replayed from a CUDA graph. Exits 77 (ctest: skipped) without a
// CUDA device.
#include "common/numerics.hpp"
#include "elements.hpp"
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

namespace nx = tpcoll::numerics;
using Bytes = std::vector<std::byte>;

#define CUDA_OK(call) ASSERT_EQ((call), cudaSuccess) << #call

constexpr tpcoll_dtype_t kDtypes[] = {TPCOLL_FLOAT32, TPCOLL_FLOAT16, TPCOLL_BFLOAT16};

Bytes download(const void* device, std::size_t bytes) {
  Bytes host(bytes);
  EXPECT_EQ(cudaMemcpy(host.data(), device, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  return host;
}

// Equal bytes, naming the first differing element.
::testing::AssertionResult same_bytes(const Bytes& got, const Bytes& expected, std::size_t elem) {
  if (got.size() != expected.size()) return ::testing::AssertionFailure() << "size " << got.size() << " vs " << expected.size();
  for (std::size_t i = 0; i < got.size(); i += elem)
    if (std::memcmp(&got[i], &expected[i], elem) != 0)
      return ::testing::AssertionFailure() << "element " << i / elem << " of " << got.size() / elem << " differs";
  return ::testing::AssertionSuccess();
}

// LocalJob whose out(r) holds the all-reduce's result at offset 0 and the
// reduce-scatter's share at share_offset (256-byte aligned, past the
// all-reduce's result).
class ScatterJob : public LocalJob {
 public:
  ScatterJob(int world, std::size_t max_bytes) : LocalJob(world, max_bytes) {}

  static std::size_t share_offset(std::size_t bytes) { return (bytes + 255) / 256 * 256; }
  std::byte* share_out(int r, std::size_t bytes) const { return static_cast<std::byte*>(out(r)) + share_offset(bytes); }

  // Fresh random inputs (some -0.0) on every rank; returns the contract's
  // sum of them, computed on the host.
  Bytes fill(tpcoll_dtype_t d, std::size_t count, std::uint32_t seed) {
    const std::size_t bytes = count * tpcoll_dtype_size(d);
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    std::vector<Bytes> inputs(world(), Bytes(bytes));
    for (int r = 0; r < world(); ++r) {
      for (std::size_t i = 0; i < count; ++i) narrow(d, inputs[r].data(), i, i % 97 == 0 ? -0.0f : dist(rng));
      EXPECT_EQ(cudaMemcpy(in(r), inputs[r].data(), bytes, cudaMemcpyHostToDevice), cudaSuccess);
    }
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // pageable copies may still be in flight
    Bytes sum(bytes);
    for (std::size_t i = 0; i < count; ++i) {
      float acc = widen(d, inputs[0].data(), i);
      for (int r = 1; r < world(); ++r) acc += widen(d, inputs[r].data(), i);
      narrow(d, sum.data(), i, acc);
    }
    return sum;
  }

  void all_reduce(tpcoll_dtype_t d, std::size_t count) {
    for (int r = 0; r < world(); ++r)
      tpcoll::check(tpcoll_all_reduce(comm(r), in(r), out(r), count, d, stream(r)));
  }
  void reduce_scatter(tpcoll_dtype_t d, std::size_t count) {
    const std::size_t bytes = count * tpcoll_dtype_size(d);
    for (int r = 0; r < world(); ++r)
      tpcoll::check(tpcoll_reduce_scatter(comm(r), in(r), share_out(r, bytes), count, d, stream(r)));
  }

  // Every rank's share equals its elements of the host's sum and of its
  // own all-reduce result, bit for bit.
  void expect_shares(tpcoll_dtype_t d, std::size_t count, const Bytes& sum) {
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const std::size_t elem = tpcoll_dtype_size(d), bytes = count * elem, share = bytes / world();
    for (int r = 0; r < world(); ++r) {
      const Bytes expected(sum.begin() + static_cast<std::ptrdiff_t>(share * r),
                           sum.begin() + static_cast<std::ptrdiff_t>(share * (r + 1)));
      const Bytes reduced = download(static_cast<std::byte*>(out(r)) + share * r, share);
      EXPECT_TRUE(same_bytes(reduced, expected, elem)) << "rank " << r << ": all-reduce against the host";
      EXPECT_TRUE(same_bytes(download(share_out(r, bytes), share), reduced, elem))
          << "rank " << r << " of " << world() << ": reduce-scatter against the all-reduce";
    }
  }
};

TEST(CudaReduceScatter, ShareIsTheAllReduceShareAtEveryWorldDtypeAndSize) {
  // Per-rank shares from one element past 256 KiB (staged), and odd sizes
  // (element-wide kernels); 8 and 1000 elements take the low-latency kernel
  // by input unit, 1 << 15 the one by share unit (more units than threads).
  const std::size_t per_rank_counts[] = {1, 7, 8, 1000, 4097, 65536 + 3, 1 << 15, 1 << 18};
  for (int world : {2, 3, 4, 8}) {
    ScatterJob job(world, (std::size_t{1} << 18) * 8 * 4);
    for (tpcoll_dtype_t d : kDtypes)
      for (std::size_t per_rank : per_rank_counts) {
        const std::size_t count = per_rank * static_cast<std::size_t>(world);
        SCOPED_TRACE(testing::Message() << "world " << world << " dtype " << tpcoll_dtype_name(d) << " count " << count);
        const Bytes sum = job.fill(d, count, static_cast<std::uint32_t>(count * 7 + world));
        job.all_reduce(d, count);
        job.reduce_scatter(d, count);
        job.expect_shares(d, count, sum);
      }
  }
}

TEST(CudaReduceScatter, ChunkedThroughSmallStaging) {
  // Many steps per kernel, a shorter last piece and a tail, repeated: a race
  // between steps that reuse a slot shows up as wrong bits sooner or later.
  setenv("TPCOLL_CUDA_BUFFER_BYTES", "65536", 1);
  for (int world : {2, 3, 4, 8}) {
    ScatterJob job(world, std::size_t{1} << 22);
    for (int repeat = 0; repeat < 4; ++repeat)
      for (tpcoll_dtype_t d : kDtypes) {
        // Even repeats: shares of whole 16-byte vectors (the 16-byte kernel); odd: the element-wide one.
        const std::size_t per_rank = repeat % 2 ? 100003 : 100000 + 1024 * static_cast<std::size_t>(repeat);
        const std::size_t count = per_rank * static_cast<std::size_t>(world);
        SCOPED_TRACE(testing::Message() << "world " << world << " repeat " << repeat << " dtype " << tpcoll_dtype_name(d));
        const Bytes sum = job.fill(d, count, static_cast<std::uint32_t>(3 + repeat));
        job.all_reduce(d, count);
        job.reduce_scatter(d, count);
        job.expect_shares(d, count, sum);
      }
  }
  unsetenv("TPCOLL_CUDA_BUFFER_BYTES");
}

TEST(CudaReduceScatter, InPlaceAndUnalignedBuffers) {
  const int world = 4;
  ScatterJob job(world, 1 << 23);
  for (tpcoll_dtype_t d : kDtypes)
    for (std::size_t count : {std::size_t{4 * 1000}, std::size_t{4 * 300001}}) {
      SCOPED_TRACE(testing::Message() << "in place, dtype " << tpcoll_dtype_name(d) << " count " << count);
      const std::size_t share = count / world * tpcoll_dtype_size(d);
      const Bytes sum = job.fill(d, count, 21);
      for (int r = 0; r < world; ++r)
        tpcoll::check(tpcoll_reduce_scatter(job.comm(r), job.in(r), static_cast<std::byte*>(job.in(r)) + share * r,
                                            count, d, job.stream(r)));
      CUDA_OK(cudaDeviceSynchronize());
      for (int r = 0; r < world; ++r)
        EXPECT_TRUE(same_bytes(download(static_cast<std::byte*>(job.in(r)) + share * r, share),
                               Bytes(sum.begin() + static_cast<std::ptrdiff_t>(share * r),
                                     sum.begin() + static_cast<std::ptrdiff_t>(share * (r + 1))),
                               tpcoll_dtype_size(d)))
            << "rank " << r;
    }
  // Buffers one element off 16-byte alignment take the element-wide kernel.
  const std::size_t count = 4 * 1001;
  const Bytes sum = job.fill(TPCOLL_FLOAT32, count, 5);
  Bytes host(count * 4);
  for (int r = 0; r < world; ++r) {
    CUDA_OK(cudaMemcpy(host.data(), job.in(r), host.size(), cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(static_cast<float*>(job.in(r)) + 1, host.data(), host.size(), cudaMemcpyHostToDevice));
  }
  CUDA_OK(cudaDeviceSynchronize());
  for (int r = 0; r < world; ++r)
    tpcoll::check(tpcoll_reduce_scatter(job.comm(r), static_cast<float*>(job.in(r)) + 1,
                                        static_cast<float*>(job.out(r)) + 1, count, TPCOLL_FLOAT32, job.stream(r)));
  CUDA_OK(cudaDeviceSynchronize());
  for (int r = 0; r < world; ++r)
    EXPECT_TRUE(same_bytes(download(static_cast<float*>(job.out(r)) + 1, 1001 * 4),
                           Bytes(sum.begin() + 1001 * 4 * r, sum.begin() + 1001 * 4 * (r + 1)), 4))
        << "unaligned, rank " << r;
}

TEST(CudaReduceScatter, GraphReplayWithNewDataEveryTime) {
  for (int world : {2, 4}) {
    ScatterJob job(world, 1 << 24);
    // Low-latency and staged, three ops per graph.
    for (std::size_t count : {std::size_t{12344}, std::size_t{1} << 20}) {
      const std::size_t total = count * static_cast<std::size_t>(world);
      cudaGraphExec_t exec = job.capture([&] {
        job.all_reduce(TPCOLL_BFLOAT16, total);
        for (int k = 0; k < 2; ++k) job.reduce_scatter(TPCOLL_BFLOAT16, total);
      });
      for (int replay = 0; replay < 10; ++replay) {
        SCOPED_TRACE(testing::Message() << "world " << world << " count " << total << " replay " << replay);
        const Bytes sum = job.fill(TPCOLL_BFLOAT16, total, static_cast<std::uint32_t>(100 + replay));
        job.replay(exec);
        job.expect_shares(TPCOLL_BFLOAT16, total, sum);
        // Eager calls between replays keep the sequence in step.
        const Bytes eager = job.fill(TPCOLL_BFLOAT16, 64 * world, static_cast<std::uint32_t>(200 + replay));
        job.all_reduce(TPCOLL_BFLOAT16, 64 * world);
        job.reduce_scatter(TPCOLL_BFLOAT16, 64 * world);
        job.expect_shares(TPCOLL_BFLOAT16, 64 * world, eager);
      }
      cudaGraphExecDestroy(exec);
    }
  }
}

TEST(CudaReduceScatter, BadInputIsRefused) {
  ScatterJob job(4, 1 << 16);
  EXPECT_EQ(tpcoll_reduce_scatter(job.comm(0), job.in(0), job.out(0), 10, TPCOLL_FLOAT32, job.stream(0)),
            TPCOLL_INVALID_ARGUMENT);
  EXPECT_NE(std::string(tpcoll_last_error()).find("count 10 is not a multiple of the world size 4"), std::string::npos)
      << tpcoll_last_error();
  std::vector<float> host(16);
  EXPECT_EQ(tpcoll_reduce_scatter(job.comm(0), host.data(), job.out(0), 16, TPCOLL_FLOAT32, job.stream(0)),
            TPCOLL_INVALID_ARGUMENT);
  EXPECT_NE(std::string(tpcoll_last_error()).find("host memory"), std::string::npos) << tpcoll_last_error();
}

TEST(CudaReduceScatter, RanksThatDisagreeGetAnErrorNotAHang) {
  setenv("TPCOLL_TIMEOUT_MS", "3000", 1);
  ScatterJob job(2, 1 << 16);
  unsetenv("TPCOLL_TIMEOUT_MS");
  job.fill(TPCOLL_FLOAT32, 208, 1);
  // Same launch shape (one block each), different counts.
  tpcoll::check(tpcoll_reduce_scatter(job.comm(0), job.in(0), job.out(0), 200, TPCOLL_FLOAT32, job.stream(0)));
  tpcoll::check(tpcoll_reduce_scatter(job.comm(1), job.in(1), job.out(1), 208, TPCOLL_FLOAT32, job.stream(1)));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  job.expect_mismatch_on_every_rank({"reduce_scatter", "shape [200]", "shape [208]"});
}

// The fused reduce-scatter against the rows of the full fused op.
class FusedScatterJob : public ScatterJob {
 public:
  FusedScatterJob(int world, std::size_t max_bytes) : ScatterJob(world, max_bytes) {
    for (void** p : {&residual_, &weight_, &residual_out_, &share_out_, &share_residual_out_}) cudaMalloc(p, max_bytes);
  }
  ~FusedScatterJob() {
    cudaDeviceSynchronize();
    for (void* p : {residual_, weight_, residual_out_, share_out_, share_residual_out_}) cudaFree(p);
  }

  // Random x on every rank, one residual and weight for all; then the full
  // fused op (out(r), residual_out) and the fused reduce-scatter of every
  // rank, whose rows must be the full op's rows of that rank.
  void run_and_check(tpcoll_dtype_t d, std::size_t tokens, std::size_t hidden, bool with_residual) {
    const std::size_t elem = tpcoll_dtype_size(d), bytes = tokens * hidden * elem, share = bytes / world();
    fill(d, tokens * hidden, static_cast<std::uint32_t>(tokens * 31 + hidden));
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    Bytes host(bytes);
    for (std::size_t i = 0; i < tokens * hidden; ++i) narrow(d, host.data(), i, dist(rng));
    ASSERT_EQ(cudaMemcpy(residual_, host.data(), bytes, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(weight_, host.data(), hidden * elem, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const float eps = 1e-6f;
    std::vector<Bytes> full_out(world());
    for (int r = 0; r < world(); ++r)
      tpcoll::check(tpcoll_fused_allreduce_residual_rmsnorm(comm(r), in(r), with_residual ? residual_ : nullptr,
                                                            weight_, out(r), residual_out_, tokens, hidden, d, eps,
                                                            stream(r)));
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    // Every rank wrote the same residual_out (the same bits): one buffer serves.
    const Bytes res = download(residual_out_, bytes);
    for (int r = 0; r < world(); ++r) full_out[r] = download(out(r), bytes);
    for (int r = 0; r < world(); ++r) {
      std::byte* residual_share = static_cast<std::byte*>(residual_) + share * r;
      tpcoll::check(tpcoll_fused_reduce_scatter_residual_rmsnorm(
          comm(r), in(r), with_residual ? residual_share : nullptr, weight_, static_cast<std::byte*>(share_out_) + share * r,
          static_cast<std::byte*>(share_residual_out_) + share * r, tokens, hidden, d, eps, stream(r)));
    }
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    for (int r = 0; r < world(); ++r) {
      const auto rows = [&](const Bytes& all) {
        return Bytes(all.begin() + static_cast<std::ptrdiff_t>(share * r),
                     all.begin() + static_cast<std::ptrdiff_t>(share * (r + 1)));
      };
      EXPECT_TRUE(same_bytes(download(static_cast<std::byte*>(share_out_) + share * r, share), rows(full_out[r]), elem))
          << "rank " << r << ": out";
      if (with_residual) {
        EXPECT_TRUE(same_bytes(download(static_cast<std::byte*>(share_residual_out_) + share * r, share), rows(res), elem))
            << "rank " << r << ": residual_out";
      }
    }
  }

 private:
  void* residual_ = nullptr;
  void* weight_ = nullptr;
  void* residual_out_ = nullptr;
  void* share_out_ = nullptr;
  void* share_residual_out_ = nullptr;
};

void check_fused_rows(int world) {
  FusedScatterJob job(world, std::size_t{64} << 20);
  for (tpcoll_dtype_t d : kDtypes)
    for (std::size_t per_rank : {1u, 8u, 128u})
      for (std::size_t hidden : {8u, 2880u, 4096u, 8192u, 7u})
        for (bool with_residual : {false, true}) {
          SCOPED_TRACE(testing::Message() << "world " << world << " dtype " << tpcoll_dtype_name(d) << " tokens "
                                          << per_rank * world << " hidden " << hidden
                                          << (with_residual ? " residual" : ""));
          job.run_and_check(d, per_rank * static_cast<std::size_t>(world), hidden, with_residual);
        }
}

TEST(CudaFusedReduceScatter, EqualsTheFullFusedOpsRows) {
  // 8 ranks timed out here until every kernel let the next one launch only
  // after a block barrier (commit 75d1e50): the add + RMSNorm kernels had
  // let it launch at their start, so the next kernels of 8 ranks parked on
  // the GPU while peers still had blocks to start.
  for (int world : {2, 3, 4, 8}) check_fused_rows(world);
}

}  // namespace

int main(int argc, char** argv) { return run_gpu_tests(argc, argv); }
