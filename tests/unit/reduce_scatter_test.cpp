// Reduce-scatter and the fused reduce-scatter + residual + RMSNorm on CPU
// ranks made by tpcoll_comm_create_local (a thread each), against this
// library's own all-reduce and full fused op: the share must be their bits.
#include <tpcoll/tpcoll.h>

#include "common/numerics.hpp"
#include "test_util.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace nx = tpcoll::numerics;
using tpcoll::test::message_has;
using tpcoll::test::ScopedEnv;
using Bytes = std::vector<std::byte>;

constexpr tpcoll_dtype_t kDtypes[] = {TPCOLL_FLOAT32, TPCOLL_FLOAT16, TPCOLL_BFLOAT16};

// All ranks of a CPU job in this process; run() drives each from its thread.
class LocalCpuJob {
 public:
  explicit LocalCpuJob(int world) : comms_(world) {
    const std::vector<int> devices(world, TPCOLL_DEVICE_CPU);
    EXPECT_EQ(tpcoll_comm_create_local(world, devices.data(), comms_.data()), TPCOLL_SUCCESS) << tpcoll_last_error();
  }
  ~LocalCpuJob() {
    for (tpcoll_comm_t c : comms_) tpcoll_comm_destroy(c);
  }
  LocalCpuJob(const LocalCpuJob&) = delete;
  LocalCpuJob& operator=(const LocalCpuJob&) = delete;

  int world() const { return static_cast<int>(comms_.size()); }
  tpcoll_comm_t comm(int r) const { return comms_[r]; }

  // fn(rank, comm) on every rank at once; every call must succeed.
  void run(const std::function<tpcoll_result_t(int, tpcoll_comm_t)>& fn) {
    std::vector<tpcoll_result_t> results(comms_.size());
    std::vector<std::string> errors(comms_.size());
    std::vector<std::thread> threads;
    for (int r = 0; r < world(); ++r)
      threads.emplace_back([&, r] {
        results[r] = fn(r, comms_[r]);
        errors[r] = tpcoll_last_error();
      });
    for (auto& t : threads) t.join();
    for (int r = 0; r < world(); ++r) EXPECT_EQ(results[r], TPCOLL_SUCCESS) << "rank " << r << ": " << errors[r];
  }

  void force(int algo) {
    for (tpcoll_comm_t c : comms_) ASSERT_EQ(tpcoll_comm_force_algo(c, algo), TPCOLL_SUCCESS);
  }

 private:
  std::vector<tpcoll_comm_t> comms_;
};

// Finite values of mixed magnitude and sign in `dtype`, with -0 at fixed
// places on every rank (their sum must stay -0).
Bytes random_values(tpcoll_dtype_t dtype, std::size_t count, std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> mantissa(-1.0f, 1.0f);
  std::uniform_int_distribution<int> exponent(-12, 4);
  const std::size_t elem = tpcoll_dtype_size(dtype);
  Bytes b(count * elem);
  for (std::size_t i = 0; i < count; ++i) {
    const float f = i % 97 == 13 ? -0.0f : std::ldexp(mantissa(gen), exponent(gen));
    if (dtype == TPCOLL_FLOAT32) {
      std::memcpy(&b[i * 4], &f, 4);
    } else {
      const std::uint16_t h = dtype == TPCOLL_FLOAT16 ? nx::float_to_fp16(f) : nx::float_to_bf16(f);
      std::memcpy(&b[i * 2], &h, 2);
    }
  }
  return b;
}

Bytes slice(const Bytes& all, std::size_t share_bytes, int rank) {
  const auto begin = all.begin() + static_cast<std::ptrdiff_t>(share_bytes * rank);
  return Bytes(begin, begin + static_cast<std::ptrdiff_t>(share_bytes));
}

// Byte equality naming the first differing element.
::testing::AssertionResult same_bytes(const Bytes& got, const Bytes& expected, std::size_t elem) {
  if (got.size() != expected.size()) return ::testing::AssertionFailure() << "size " << got.size() << " vs " << expected.size();
  for (std::size_t i = 0; i < got.size(); i += elem)
    if (std::memcmp(&got[i], &expected[i], elem) != 0)
      return ::testing::AssertionFailure() << "element " << i / elem << " of " << got.size() / elem << " differs";
  return ::testing::AssertionSuccess();
}

std::string label(tpcoll_dtype_t dtype, int world, std::size_t count) {
  return std::string(tpcoll_dtype_name(dtype)) + " world " + std::to_string(world) + " count " + std::to_string(count);
}

TEST(ReduceScatter, ShareIsTheAllReduceShareBitForBitAtWorld1To8) {
  // 4 KiB staging: the larger counts take many steps.
  ScopedEnv staging("TPCOLL_CPU_BUFFER_BYTES", "4096");
  for (int world = 1; world <= 8; ++world) {
    LocalCpuJob job(world);
    for (const tpcoll_dtype_t dtype : kDtypes) {
      const std::size_t elem = tpcoll_dtype_size(dtype);
      for (const std::size_t per_rank : {1u, 5u, 64u, 1000u, 6007u}) {
        const std::size_t count = per_rank * static_cast<std::size_t>(world), share = per_rank * elem;
        std::vector<Bytes> in(world), reduced(world), out(world), in_place(world), fallback(world);
        for (int r = 0; r < world; ++r) {
          in[r] = random_values(dtype, count, static_cast<std::uint32_t>(count * 31 + r));
          reduced[r] = Bytes(count * elem);
          out[r] = Bytes(share, std::byte{0x5a});
          in_place[r] = in[r];
          fallback[r] = Bytes(share, std::byte{0x5a});
        }
        job.force(TPCOLL_ALGO_AUTO);
        job.run([&](int r, tpcoll_comm_t c) {
          return tpcoll_all_reduce(c, in[r].data(), reduced[r].data(), count, dtype, nullptr);
        });
        job.run([&](int r, tpcoll_comm_t c) {
          return tpcoll_reduce_scatter(c, in[r].data(), out[r].data(), count, dtype, nullptr);
        });
        job.run([&](int r, tpcoll_comm_t c) {
          return tpcoll_reduce_scatter(c, in_place[r].data(), in_place[r].data() + share * r, count, dtype, nullptr);
        });
        job.force(TPCOLL_ALGO_FALLBACK);
        job.run([&](int r, tpcoll_comm_t c) {
          return tpcoll_reduce_scatter(c, in[r].data(), fallback[r].data(), count, dtype, nullptr);
        });
        for (int r = 0; r < world; ++r) {
          const Bytes expected = slice(reduced[r], share, r);
          EXPECT_TRUE(same_bytes(out[r], expected, elem)) << label(dtype, world, count) << " rank " << r;
          EXPECT_TRUE(same_bytes(slice(in_place[r], share, r), expected, elem))
              << label(dtype, world, count) << " rank " << r << ", in place";
          EXPECT_TRUE(same_bytes(fallback[r], expected, elem))
              << label(dtype, world, count) << " rank " << r << ", fallback";
        }
      }
    }
  }
}

TEST(ReduceScatter, FusedEqualsTheFullFusedOpsRowsBitForBit) {
  ScopedEnv staging("TPCOLL_CPU_BUFFER_BYTES", "4096");
  const float eps = 1e-5f;
  for (const int world : {1, 2, 3, 4, 8}) {
    LocalCpuJob job(world);
    for (const tpcoll_dtype_t dtype : kDtypes) {
      const std::size_t elem = tpcoll_dtype_size(dtype);
      for (const std::size_t hidden : {8u, 7u, 1000u}) {
        const std::size_t tokens = 3 * static_cast<std::size_t>(world), n = tokens * hidden;
        const std::size_t share = n / world * elem;
        const Bytes residual = random_values(dtype, n, 7);
        const Bytes weight = random_values(dtype, hidden, 8);
        std::vector<Bytes> x(world);
        for (int r = 0; r < world; ++r) x[r] = random_values(dtype, n, static_cast<std::uint32_t>(n + r));
        for (const bool with_residual : {false, true}) {
          const std::string what = label(dtype, world, n) + " hidden " + std::to_string(hidden) +
                                   (with_residual ? " with residual" : " without residual");
          std::vector<Bytes> full_out(world, Bytes(n * elem)), full_res(world, Bytes(n * elem));
          std::vector<Bytes> out(world, Bytes(share, std::byte{0x44})), res_out(world, Bytes(share, std::byte{0x33}));
          job.force(TPCOLL_ALGO_AUTO);
          job.run([&](int r, tpcoll_comm_t c) {
            return tpcoll_fused_allreduce_residual_rmsnorm(c, x[r].data(), with_residual ? residual.data() : nullptr,
                                                           weight.data(), full_out[r].data(), full_res[r].data(),
                                                           tokens, hidden, dtype, eps, nullptr);
          });
          for (const int algo : {TPCOLL_ALGO_AUTO, static_cast<int>(TPCOLL_ALGO_FALLBACK)}) {
            job.force(algo);
            job.run([&](int r, tpcoll_comm_t c) {
              const Bytes my_residual = slice(residual, share, r);
              return tpcoll_fused_reduce_scatter_residual_rmsnorm(
                  c, x[r].data(), with_residual ? my_residual.data() : nullptr, weight.data(), out[r].data(),
                  res_out[r].data(), tokens, hidden, dtype, eps, nullptr);
            });
            for (int r = 0; r < world; ++r) {
              EXPECT_TRUE(same_bytes(out[r], slice(full_out[r], share, r), elem)) << what << " rank " << r << " algo " << algo;
              const Bytes expected_res = with_residual ? slice(full_res[r], share, r) : Bytes(share, std::byte{0x33});
              EXPECT_TRUE(same_bytes(res_out[r], expected_res, elem))
                  << what << " rank " << r << " algo " << algo
                  << (with_residual ? ": residual_out" : ": residual_out written without a residual");
            }
          }
          // In place: out is this rank's rows of x, residual_out is residual.
          job.force(TPCOLL_ALGO_AUTO);
          std::vector<Bytes> xs = x, residuals(world);
          job.run([&](int r, tpcoll_comm_t c) {
            residuals[r] = slice(residual, share, r);
            void* res = with_residual ? residuals[r].data() : nullptr;
            return tpcoll_fused_reduce_scatter_residual_rmsnorm(c, xs[r].data(), res, weight.data(),
                                                                xs[r].data() + share * r, res, tokens, hidden, dtype,
                                                                eps, nullptr);
          });
          for (int r = 0; r < world; ++r) {
            EXPECT_TRUE(same_bytes(slice(xs[r], share, r), slice(full_out[r], share, r), elem)) << what << " in place";
            if (with_residual) {
              EXPECT_TRUE(same_bytes(residuals[r], slice(full_res[r], share, r), elem)) << what << " in place residual";
            }
          }
        }
      }
    }
  }
}

TEST(ReduceScatter, RefusesBadArgumentsNamingThem) {
  LocalCpuJob job(4);
  const tpcoll_comm_t c = job.comm(1);
  std::vector<float> in(40), out(10);
  const auto refused = [&](tpcoll_result_t result, std::initializer_list<std::string_view> needles) {
    EXPECT_EQ(result, TPCOLL_INVALID_ARGUMENT) << tpcoll_last_error();
    EXPECT_TRUE(message_has(tpcoll_last_error(), needles));
  };
  refused(tpcoll_reduce_scatter(c, in.data(), out.data(), 10, TPCOLL_FLOAT32, nullptr),
          {"reduce_scatter", "count 10", "multiple of the world size 4"});
  refused(tpcoll_reduce_scatter(c, nullptr, out.data(), 40, TPCOLL_FLOAT32, nullptr), {"in is NULL"});
  refused(tpcoll_reduce_scatter(c, in.data(), nullptr, 40, TPCOLL_FLOAT32, nullptr), {"out is NULL"});
  refused(tpcoll_reduce_scatter(c, in.data(), out.data(), 0, TPCOLL_FLOAT32, nullptr), {"count is 0"});
  refused(tpcoll_reduce_scatter(c, in.data(), out.data(), 40, TPCOLL_INT32, nullptr),
          {"reduce_scatter does not support dtype int32"});
  // Rank 1's share in place is in + 10; anything else inside the input is refused.
  refused(tpcoll_reduce_scatter(c, in.data(), in.data() + 3, 40, TPCOLL_FLOAT32, nullptr),
          {"overlaps the input", "rank 1's share", "input + 40 B"});
  refused(tpcoll_reduce_scatter(c, in.data(), in.data(), 40, TPCOLL_FLOAT32, nullptr), {"overlaps the input"});

  std::vector<float> x(6 * 8), weight(8), fused_out(8), residual(8);
  refused(tpcoll_fused_reduce_scatter_residual_rmsnorm(c, x.data(), nullptr, weight.data(), fused_out.data(), nullptr,
                                                       6, 8, TPCOLL_FLOAT32, 1e-6f, nullptr),
          {"fused_reduce_scatter_residual_rmsnorm", "tokens 6", "multiple of the world size 4"});
  refused(tpcoll_fused_reduce_scatter_residual_rmsnorm(c, x.data(), residual.data(), weight.data(), fused_out.data(),
                                                       nullptr, 4, 8, TPCOLL_FLOAT32, 1e-6f, nullptr),
          {"residual_out is NULL"});
  refused(tpcoll_fused_reduce_scatter_residual_rmsnorm(c, x.data(), nullptr, weight.data(), x.data(), nullptr, 4, 8,
                                                       TPCOLL_FLOAT32, 1e-6f, nullptr),
          {"overlaps the input"});
  // Nothing was written on failure.
  for (float v : out) EXPECT_EQ(v, 0.0f);
  for (float v : fused_out) EXPECT_EQ(v, 0.0f);
}

TEST(ReduceScatter, PlanAnswersForBothOps) {
  ScopedEnv staging("TPCOLL_CPU_BUFFER_BYTES", "4096");
  LocalCpuJob job(4);
  const tpcoll_comm_t c = job.comm(0);
  tpcoll_plan_info_t plan{};
  const std::int64_t count[] = {4 * 10000};
  ASSERT_EQ(tpcoll_plan(c, TPCOLL_OP_REDUCE_SCATTER, TPCOLL_FLOAT32, 1, count, 0, &plan), TPCOLL_SUCCESS)
      << tpcoll_last_error();
  EXPECT_EQ(plan.algo, TPCOLL_ALGO_ONESHOT) << plan.reason;
  EXPECT_STREQ(plan.backend, "cpu-shm");
  // A step moves a 1024 B piece of each of the 4 shares (4096 B of staging).
  EXPECT_EQ(plan.chunk_bytes, 4096u);
  EXPECT_EQ(plan.steps, 40u);  // a share of 40000 B in 1024 B pieces
  EXPECT_TRUE(message_has(plan.reason, {"table"}));

  const std::int64_t rows[] = {8, 4096};
  ASSERT_EQ(tpcoll_plan(c, TPCOLL_OP_FUSED_REDUCE_SCATTER_RMSNORM, TPCOLL_BFLOAT16, 2, rows, 0, &plan), TPCOLL_SUCCESS)
      << tpcoll_last_error();
  EXPECT_EQ(plan.algo, TPCOLL_ALGO_UNFUSED) << plan.reason;
  EXPECT_STREQ(plan.algorithm, "unfused");

  // Forced two-shot does not apply to a reduce-scatter; forced fallback does.
  job.force(TPCOLL_ALGO_TWOSHOT);
  ASSERT_EQ(tpcoll_plan(c, TPCOLL_OP_REDUCE_SCATTER, TPCOLL_FLOAT32, 1, count, 0, &plan), TPCOLL_SUCCESS);
  EXPECT_EQ(plan.algo, TPCOLL_ALGO_ONESHOT) << plan.reason;
  EXPECT_TRUE(message_has(plan.reason, {"twoshot does not apply to reduce_scatter"}));
  job.force(TPCOLL_ALGO_FALLBACK);
  ASSERT_EQ(tpcoll_plan(c, TPCOLL_OP_FUSED_REDUCE_SCATTER_RMSNORM, TPCOLL_FLOAT32, 2, rows, 0, &plan), TPCOLL_SUCCESS);
  EXPECT_EQ(plan.algo, TPCOLL_ALGO_FALLBACK);

  const std::int64_t odd[] = {10};
  EXPECT_EQ(tpcoll_plan(c, TPCOLL_OP_REDUCE_SCATTER, TPCOLL_FLOAT32, 1, odd, 0, &plan), TPCOLL_INVALID_ARGUMENT);
  EXPECT_TRUE(message_has(tpcoll_last_error(), {"count 10", "world size 4"}));
  const std::int64_t odd_rows[] = {6, 8};
  EXPECT_EQ(tpcoll_plan(c, TPCOLL_OP_FUSED_REDUCE_SCATTER_RMSNORM, TPCOLL_FLOAT32, 2, odd_rows, 0, &plan),
            TPCOLL_INVALID_ARGUMENT);
  EXPECT_TRUE(message_has(tpcoll_last_error(), {"tokens 6", "world size 4"}));
}

}  // namespace
