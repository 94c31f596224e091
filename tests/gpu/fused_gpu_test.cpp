// The fused all-reduce + residual add + RMSNorm on the CUDA backend, every
// rank a stream of this process on GPU 0, and the local add + RMSNorm: bit
// for bit the CPU backend's arithmetic (the host reduces in rank order, then
// runs the CPU add + RMSNorm kernel), for every dtype, world sizes 1-4, hidden
// sizes with and without whole 8-element groups, with and without a
// residual, in place, and replayed from a CUDA graph. The FP8 op likewise:
// its codes and per-token scales bit for bit the CPU quantisation of that
// out, with and without out, every path (fused one-shot epilogue, add +
// RMSNorm epilogue after our all-reduce, two-shot then the quantisation
// kernel), eagerly and replayed. Exits 77 (ctest: skipped) without a CUDA
// device.
#include "common/numerics.hpp"
#include "cpu/kernels.hpp"
#include "local_job.hpp"

#include <tpcoll/tpcoll.hpp>

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <random>
#include <utility>
#include <vector>

namespace {

constexpr float kEps = 1e-6f;
// The FP8 op's static scale: the test data's outputs reach past 448 times it,
// so saturation is exercised too.
constexpr float kFp8Scale = 0.01f;
constexpr tpcoll_fp8_scaling_t kScalings[] = {TPCOLL_FP8_STATIC, TPCOLL_FP8_PER_TOKEN};

// A fused call's shape and options.
struct Norm {
  std::size_t tokens, hidden;
  tpcoll_dtype_t dtype;
  bool residual;
  std::size_t bytes() const { return tokens * hidden * tpcoll_dtype_size(dtype); }
};

class NormJob : public LocalJob {
 public:
  NormJob(int world, std::size_t max_bytes) : LocalJob(world, max_bytes), codes_(world), scales_(world) {
    for (void** p : {&residual_, &weight_, &residual_out_}) cudaMalloc(p, max_bytes);
    // One byte more than the largest call's codes, for a misaligned out_fp8.
    for (int r = 0; r < world; ++r)
      for (void** p : {&codes_[r], &scales_[r]}) cudaMalloc(p, max_bytes + 1);
  }
  ~NormJob() {
    cudaDeviceSynchronize();
    for (void* p : {residual_, weight_, residual_out_}) cudaFree(p);
    for (int r = 0; r < world(); ++r)
      for (void* p : {codes_[r], scales_[r]}) cudaFree(p);
  }

  // Random inputs (x per rank; residual and weight shared, as in tensor
  // parallelism), with `first_weight` as the weight's element 0 if given;
  // returns {out, residual_out} as the CPU computes them.
  std::pair<std::vector<std::byte>, std::vector<std::byte>> fill(const Norm& n, std::uint32_t seed,
                                                                 std::optional<float> first_weight = std::nullopt) {
    const std::size_t bytes = n.bytes(), count = n.tokens * n.hidden;
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> small(-64, 64);  // exact in every dtype
    const auto random = [&](std::size_t elements) {
      std::vector<std::byte> v(elements * tpcoll_dtype_size(n.dtype));
      std::vector<float> f(elements);
      for (float& x : f) x = static_cast<float>(small(rng)) / 16.0f + 1.0f / 1024.0f * static_cast<float>(small(rng));
      narrow_all(n.dtype, f, v.data());
      return v;
    };
    std::vector<std::vector<std::byte>> xs;
    for (int r = 0; r < world(); ++r) {
      xs.push_back(random(count));
      EXPECT_EQ(cudaMemcpy(in(r), xs.back().data(), bytes, cudaMemcpyHostToDevice), cudaSuccess);
    }
    const auto residual = random(count);
    auto weight = random(n.hidden);
    if (first_weight) narrow_all(n.dtype, {*first_weight}, weight.data());
    EXPECT_EQ(cudaMemcpy(residual_, residual.data(), bytes, cudaMemcpyHostToDevice), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(weight_, weight.data(), weight.size(), cudaMemcpyHostToDevice), cudaSuccess);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);

    std::vector<const void*> sources;
    for (const auto& x : xs) sources.push_back(x.data());
    std::vector<std::byte> sum(bytes), out(bytes), residual_out(bytes);
    tpcoll::cpu::reduce(n.dtype, sources.data(), world(), sum.data(), count);
    tpcoll::cpu::add_rmsnorm(n.dtype, tpcoll::RmsNormRows{sum.data(), n.residual ? residual.data() : nullptr,
                                                               weight.data(), out.data(), residual_out.data(),
                                                               n.tokens, n.hidden, kEps});
    if (!n.residual) residual_out.clear();
    return {out, residual_out};
  }

  void fused(const Norm& n) {
    for (int r = 0; r < world(); ++r)
      tpcoll::check(tpcoll_fused_allreduce_residual_rmsnorm(comm(r), in(r), n.residual ? residual_ : nullptr, weight_,
                                                            out(r), n.residual ? residual_out_ : nullptr, n.tokens,
                                                            n.hidden, n.dtype, kEps, stream(r)));
  }

  // The FP8 op on every rank; out written if with_out; codes at byte
  // `codes_offset` of each rank's codes buffer.
  void fused_fp8(const Norm& n, tpcoll_fp8_scaling_t scaling, bool with_out, std::size_t codes_offset = 0) {
    for (int r = 0; r < world(); ++r)
      tpcoll::check(tpcoll_fused_allreduce_residual_rmsnorm_fp8(
          comm(r), in(r), n.residual ? residual_ : nullptr, weight_, with_out ? out(r) : nullptr,
          n.residual ? residual_out_ : nullptr, static_cast<std::byte*>(codes_[r]) + codes_offset, scaling,
          kFp8Scale, static_cast<float*>(scales_[r]), n.tokens, n.hidden, n.dtype, kEps, stream(r)));
  }

  // Every rank's codes (and per-token scales) equal the CPU quantisation of
  // the expected out, and so do out (if written) and residual_out.
  void expect_fp8(const Norm& n, const std::pair<std::vector<std::byte>, std::vector<std::byte>>& expected,
                  tpcoll_fp8_scaling_t scaling, bool with_out, std::size_t codes_offset = 0) {
    const std::size_t count = n.tokens * n.hidden;
    std::vector<std::uint8_t> codes(count), got_codes(count);
    std::vector<float> scales(n.tokens), got_scales(n.tokens);
    tpcoll::cpu::quantise_fp8(n.dtype, expected.first.data(), n.tokens, n.hidden,
                              tpcoll::fp8::Fp8Output{codes.data(), scales.data(), scaling, kFp8Scale});
    if (with_out) expect(expected);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    for (int r = 0; r < world(); ++r) {
      ASSERT_EQ(cudaMemcpy(got_codes.data(), static_cast<std::byte*>(codes_[r]) + codes_offset, count,
                           cudaMemcpyDeviceToHost),
                cudaSuccess);
      ASSERT_EQ(got_codes, codes) << "codes of rank " << r;
      if (scaling != TPCOLL_FP8_PER_TOKEN) continue;
      ASSERT_EQ(cudaMemcpy(got_scales.data(), scales_[r], n.tokens * sizeof(float), cudaMemcpyDeviceToHost),
                cudaSuccess);
      ASSERT_EQ(std::memcmp(got_scales.data(), scales.data(), n.tokens * sizeof(float)), 0) << "scales of rank " << r;
    }
    if (expected.second.empty()) return;
    std::vector<std::byte> got(expected.second.size());
    ASSERT_EQ(cudaMemcpy(got.data(), residual_out_, got.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    ASSERT_EQ(std::memcmp(got.data(), expected.second.data(), got.size()), 0) << "residual_out";
  }

  void expect(const std::pair<std::vector<std::byte>, std::vector<std::byte>>& expected) {
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<std::byte> got(expected.first.size());
    for (int r = 0; r < world(); ++r) {
      ASSERT_EQ(cudaMemcpy(got.data(), out(r), got.size(), cudaMemcpyDeviceToHost), cudaSuccess);
      ASSERT_EQ(std::memcmp(got.data(), expected.first.data(), got.size()), 0) << "out of rank " << r;
    }
    if (expected.second.empty()) return;
    // Every rank wrote the same residual_out (the shared buffer).
    ASSERT_EQ(cudaMemcpy(got.data(), residual_out_, got.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    ASSERT_EQ(std::memcmp(got.data(), expected.second.data(), got.size()), 0) << "residual_out";
  }

  void* residual() const { return residual_; }
  void* weight() const { return weight_; }
  void* residual_out() const { return residual_out_; }

 private:
  static void narrow_all(tpcoll_dtype_t d, const std::vector<float>& f, std::byte* out) {
    namespace nx = tpcoll::numerics;
    for (std::size_t i = 0; i < f.size(); ++i) {
      if (d == TPCOLL_FLOAT32) {
        std::memcpy(out + 4 * i, &f[i], 4);
        continue;
      }
      const std::uint16_t v = d == TPCOLL_BFLOAT16 ? nx::float_to_bf16(f[i]) : nx::float_to_fp16(f[i]);
      std::memcpy(out + 2 * i, &v, 2);
    }
  }

  void* residual_ = nullptr;
  void* weight_ = nullptr;
  void* residual_out_ = nullptr;
  std::vector<void*> codes_, scales_;
};

TEST(CudaFused, EqualsTheCpuArithmeticForEveryShape) {
  for (int world : {1, 2, 3, 4}) {
    NormJob job(world, 33 * 20480 * 4);
    std::uint32_t seed = 1;
    for (tpcoll_dtype_t d : {TPCOLL_BFLOAT16, TPCOLL_FLOAT16, TPCOLL_FLOAT32})
      // Rows held in registers with 2 (1024-4096: also the fused kernel's),
      // 4 (5120, 7168) and 8 (16384) groups a thread, some padded (2880,
      // 5120, 7168); 20480: the shared-memory row (fp32: 80 KiB of it); 8
      // and 100: element-wise.
      for (std::size_t hidden : {8, 100, 1024, 2880, 4096, 5120, 7168, 16384, 20480})
        for (std::size_t tokens : {1, 3, 33})
          for (bool residual : {true, false}) {
            const Norm n{tokens, hidden, d, residual};
            SCOPED_TRACE(testing::Message() << "world " << world << " " << tpcoll_dtype_name(d) << " " << tokens << "x"
                                            << hidden << (residual ? " residual" : ""));
            const auto expected = job.fill(n, seed++);
            job.fused(n);
            job.expect(expected);
          }
  }
}

TEST(CudaFused, TwoShotInManyStepsThroughSmallStaging) {
  setenv("TPCOLL_CUDA_BUFFER_BYTES", "65536", 1);  // 5 rows of 2880 bf16 per step
  setenv("TPCOLL_ALGO", "twoshot", 1);              // the table prefers unfused at these sizes
  for (int world : {2, 3}) {
    NormJob job(world, 101 * 2880 * 4);
    for (tpcoll_dtype_t d : {TPCOLL_BFLOAT16, TPCOLL_FLOAT32})
      for (bool residual : {true, false}) {
        const Norm n{101, 2880, d, residual};
        SCOPED_TRACE(testing::Message() << "world " << world << " " << tpcoll_dtype_name(d) << (residual ? " residual" : ""));
        tpcoll_plan_info_t plan{};
        const std::int64_t shape[2] = {101, 2880};
        tpcoll::check(tpcoll_plan(job.comm(0), TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM, d, 2, shape, 0, &plan));
        EXPECT_STREQ(plan.algorithm, "twoshot");
        const auto expected = job.fill(n, 7 + world);
        job.fused(n);
        job.expect(expected);
      }
  }
  unsetenv("TPCOLL_ALGO");
  unsetenv("TPCOLL_CUDA_BUFFER_BYTES");
}

TEST(CudaFused, GraphReplayWithNewDataEveryTime) {
  NormJob job(2, 64 * 8192 * 2);
  const Norm small{8, 4096, TPCOLL_BFLOAT16, true}, large{64, 8192, TPCOLL_BFLOAT16, true};
  for (const auto& [n, algo] : {std::pair{small, tpcoll::Algo::kOneShot}, std::pair{large, tpcoll::Algo::kTwoShot},
                                std::pair{large, tpcoll::Algo::kUnfused}}) {
    job.force(algo);
    cudaGraphExec_t exec = job.capture([&] { job.fused(n); });
    for (int replay = 0; replay < 10; ++replay) {
      const auto expected = job.fill(n, 50 + replay);
      job.replay(exec);
      job.expect(expected);
    }
    cudaGraphExecDestroy(exec);
  }
  job.force(std::nullopt);
}

TEST(CudaFusedFp8, EqualsTheCpuQuantisationForEveryShape) {
  for (int world : {1, 2, 4}) {
    NormJob job(world, 33 * 20480 * 4);
    std::uint32_t seed = 1000;
    for (tpcoll_dtype_t d : {TPCOLL_BFLOAT16, TPCOLL_FLOAT16, TPCOLL_FLOAT32})
      // 8 and 100: element-wise; 2880 and 4096: held rows (and the fused
      // one-shot); 5120: held, 4 groups a thread; 20480: the shared-memory row.
      for (std::size_t hidden : {8, 100, 2880, 4096, 5120, 20480})
        for (std::size_t tokens : {1, 3, 33})
          for (tpcoll_fp8_scaling_t scaling : kScalings)
            for (bool with_out : {true, false}) {
              const Norm n{tokens, hidden, d, /*residual=*/tokens != 3};
              SCOPED_TRACE(testing::Message() << "world " << world << " " << tpcoll_dtype_name(d) << " " << tokens
                                              << "x" << hidden << (n.residual ? " residual" : "")
                                              << (scaling == TPCOLL_FP8_STATIC ? " static" : " per-token")
                                              << (with_out ? " out" : " no out"));
              const auto expected = job.fill(n, seed++);
              job.fused_fp8(n, scaling, with_out);
              job.expect_fp8(n, expected, scaling, with_out);
            }
  }
}

TEST(CudaFusedFp8, EveryAlgorithmEagerAndReplayed) {
  NormJob job(2, 64 * 8192 * 2 + 1);
  const Norm small{8, 4096, TPCOLL_BFLOAT16, true}, large{64, 8192, TPCOLL_BFLOAT16, true};
  for (const auto& [n, algo] : {std::pair{small, tpcoll::Algo::kOneShot}, std::pair{small, tpcoll::Algo::kUnfused},
                                std::pair{large, tpcoll::Algo::kTwoShot}, std::pair{large, tpcoll::Algo::kUnfused}})
    for (tpcoll_fp8_scaling_t scaling : kScalings)
      for (bool with_out : {true, false}) {
        SCOPED_TRACE(testing::Message() << n.tokens << "x" << n.hidden << " algo " << static_cast<int>(algo)
                                        << (scaling == TPCOLL_FP8_STATIC ? " static" : " per-token")
                                        << (with_out ? " out" : " no out"));
        job.force(algo);
        auto expected = job.fill(n, 70);
        job.fused_fp8(n, scaling, with_out);
        job.expect_fp8(n, expected, scaling, with_out);
        // A misaligned out_fp8 takes the element-wise paths.
        expected = job.fill(n, 71);
        job.fused_fp8(n, scaling, with_out, 1);
        job.expect_fp8(n, expected, scaling, with_out, 1);
        cudaGraphExec_t exec = job.capture([&] { job.fused_fp8(n, scaling, with_out); });
        for (int replay = 0; replay < 3; ++replay) {
          expected = job.fill(n, 80 + replay);
          job.replay(exec);
          job.expect_fp8(n, expected, scaling, with_out);
        }
        cudaGraphExecDestroy(exec);
      }
  job.force(std::nullopt);
}

TEST(CudaFusedFp8, PerTokenRowsWithAnInfiniteOrNanWeight) {
  // An infinite or a NaN weight: rows whose scale is infinite, and NaN
  // outputs that the row's maximum ignores.
  for (int world : {1, 2}) {
    NormJob job(world, 8 * 5120 * 2);
    for (tpcoll_dtype_t d : {TPCOLL_BFLOAT16, TPCOLL_FLOAT16})
      for (std::size_t hidden : {4096, 5120})
        for (float weight : {INFINITY, NAN}) {
          const Norm n{8, hidden, d, true};
          SCOPED_TRACE(testing::Message() << "world " << world << " " << tpcoll_dtype_name(d) << " 8x" << hidden
                                          << " weight[0] " << weight);
          const auto expected = job.fill(n, 90, weight);
          job.fused_fp8(n, TPCOLL_FP8_PER_TOKEN, /*with_out=*/false);
          job.expect_fp8(n, expected, TPCOLL_FP8_PER_TOKEN, false);
        }
  }
}

TEST(CudaAddRmsNorm, InPlaceMatchesTheCpu) {
  NormJob job(1, 5 * 2880 * 4);
  for (tpcoll_dtype_t d : {TPCOLL_BFLOAT16, TPCOLL_FLOAT32}) {
    const Norm n{5, 2880, d, true};
    const auto expected = job.fill(n, 7);
    // x is its own output and the residual its own residual_out.
    tpcoll::check(tpcoll_add_rmsnorm(job.comm(0), job.in(0), job.residual(), job.weight(), job.in(0), job.residual(),
                                     n.tokens, n.hidden, d, kEps, job.stream(0)));
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<std::byte> got(n.bytes());
    ASSERT_EQ(cudaMemcpy(got.data(), job.in(0), got.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(std::memcmp(got.data(), expected.first.data(), got.size()), 0) << tpcoll_dtype_name(d);
    ASSERT_EQ(cudaMemcpy(got.data(), job.residual(), got.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(std::memcmp(got.data(), expected.second.data(), got.size()), 0) << tpcoll_dtype_name(d);
  }
}

}  // namespace

int main(int argc, char** argv) { return run_gpu_tests(argc, argv); }
