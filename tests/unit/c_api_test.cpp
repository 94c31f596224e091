// The C API (tpcoll.h) in one process: errors, configuration, a world-1
// communicator running every op, and world-2 communicators whose ranks are
// threads joined by an allgather callback.
#include <tpcoll/tpcoll.h>
#include <tpcoll/tpcoll.hpp>

#include "common/numerics.hpp"
#include "test_util.hpp"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <mutex>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace nx = tpcoll::numerics;
using tpcoll::test::message_has;
using tpcoll::test::ScopedEnv;
using tpcoll::test::unique_key;
using Clock = std::chrono::steady_clock;

// Every variable the library reads at creation, cleared for one test.
struct CleanEnv {
  ScopedEnv algo{"TPCOLL_ALGO", nullptr}, disable{"TPCOLL_DISABLE", nullptr}, buffer{"TPCOLL_CPU_BUFFER_BYTES", nullptr},
      timeout{"TPCOLL_TIMEOUT_MS", nullptr}, boot{"TPCOLL_BOOTSTRAP_TIMEOUT_MS", nullptr},
      rank{"TPCOLL_RANK", nullptr}, world{"TPCOLL_WORLD_SIZE", nullptr}, job{"TPCOLL_JOB", nullptr};
};

::testing::AssertionResult fails_with(tpcoll_result_t got, tpcoll_result_t expected,
                                      std::initializer_list<std::string_view> needles = {}) {
  if (got != expected)
    return ::testing::AssertionFailure() << "returned " << tpcoll_result_string(got) << " (\"" << tpcoll_last_error()
                                         << "\"), expected " << tpcoll_result_string(expected);
  return message_has(tpcoll_last_error(), needles);
}

std::size_t elem_size(tpcoll_dtype_t d) { return tpcoll_dtype_size(d); }

// Random elements of a reducible dtype: finite, no NaN, some -0.0.
std::vector<std::byte> random_values(tpcoll_dtype_t dtype, std::size_t count, std::uint64_t seed, float scale = 4.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<std::byte> out(count * elem_size(dtype));
  for (std::size_t i = 0; i < count; ++i) {
    float v = dist(rng);
    if (i % 17 == 3) v = -0.0f;
    if (i % 29 == 5) v = std::ldexp(v, -20);  // small values: fp16 subnormals
    if (dtype == TPCOLL_FLOAT32) {
      std::memcpy(&out[i * 4], &v, 4);
    } else {
      const std::uint16_t h = dtype == TPCOLL_FLOAT16 ? nx::float_to_fp16(v) : nx::float_to_bf16(v);
      std::memcpy(&out[i * 2], &h, 2);
    }
  }
  return out;
}

std::vector<std::byte> random_bytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::byte> out(n);
  for (auto& b : out) b = static_cast<std::byte>(rng());
  return out;
}

// ---- errors, dtypes, configuration ----

TEST(CApi, ResultStrings) {
  const std::array<std::pair<tpcoll_result_t, const char*>, 10> expected{{
      {TPCOLL_SUCCESS, "success"},
      {TPCOLL_INVALID_ARGUMENT, "invalid argument"},
      {TPCOLL_UNSUPPORTED, "unsupported"},
      {TPCOLL_TIMEOUT, "timeout"},
      {TPCOLL_MISMATCH, "ranks mismatch"},
      {TPCOLL_BOOTSTRAP_ERROR, "bootstrap error"},
      {TPCOLL_SYSTEM_ERROR, "system error"},
      {TPCOLL_CUDA_ERROR, "CUDA error"},
      {TPCOLL_INTERNAL_ERROR, "internal error"},
      {TPCOLL_ABORTED, "aborted"},
  }};
  for (const auto& [code, text] : expected) EXPECT_STREQ(tpcoll_result_string(code), text) << code;
  EXPECT_STREQ(tpcoll_result_string(static_cast<tpcoll_result_t>(10)), "unknown result code");
  EXPECT_STREQ(tpcoll_result_string(static_cast<tpcoll_result_t>(-1)), "unknown result code");
}

TEST(CApi, LastErrorIsPerThreadAndNamesTheProblem) {
  std::string other_thread_before;
  std::thread([&] { other_thread_before = tpcoll_last_error(); }).join();
  EXPECT_EQ(other_thread_before, "");

  float x = 1.0f;
  EXPECT_EQ(tpcoll_all_reduce(nullptr, &x, &x, 1, TPCOLL_FLOAT32, nullptr), TPCOLL_INVALID_ARGUMENT);
  EXPECT_STREQ(tpcoll_last_error(), "comm is NULL");
  std::string other_thread_after;
  std::thread([&] { other_thread_after = tpcoll_last_error(); }).join();
  EXPECT_EQ(other_thread_after, "");

  // The C++ layer carries the same code and message.
  try {
    tpcoll::check(TPCOLL_INVALID_ARGUMENT);
    ADD_FAILURE() << "check did not throw";
  } catch (const tpcoll::Error& e) {
    EXPECT_EQ(e.code(), TPCOLL_INVALID_ARGUMENT);
    EXPECT_STREQ(e.what(), "comm is NULL");
  }
  EXPECT_NO_THROW(tpcoll::check(TPCOLL_SUCCESS));
}

TEST(CApi, DtypeSizesAndNames) {
  const std::array<std::tuple<tpcoll_dtype_t, std::size_t, const char*>, 10> expected{{
      {TPCOLL_FLOAT32, 4, "float32"},
      {TPCOLL_FLOAT16, 2, "float16"},
      {TPCOLL_BFLOAT16, 2, "bfloat16"},
      {TPCOLL_FLOAT64, 8, "float64"},
      {TPCOLL_FLOAT8_E4M3, 1, "float8_e4m3"},
      {TPCOLL_FLOAT8_E5M2, 1, "float8_e5m2"},
      {TPCOLL_INT8, 1, "int8"},
      {TPCOLL_UINT8, 1, "uint8"},
      {TPCOLL_INT32, 4, "int32"},
      {TPCOLL_INT64, 8, "int64"},
  }};
  for (const auto& [d, size, name] : expected) {
    EXPECT_EQ(tpcoll_dtype_size(d), size) << name;
    EXPECT_STREQ(tpcoll_dtype_name(d), name);
    EXPECT_EQ(tpcoll::dtype_size(static_cast<tpcoll::DType>(d)), size);
  }
  EXPECT_EQ(tpcoll_dtype_size(static_cast<tpcoll_dtype_t>(10)), 0u);
  EXPECT_EQ(tpcoll_dtype_size(static_cast<tpcoll_dtype_t>(-1)), 0u);
  EXPECT_STREQ(tpcoll_dtype_name(static_cast<tpcoll_dtype_t>(10)), "unknown");
}

TEST(CApi, ConfigFromEnvironment) {
  CleanEnv clean;
  tpcoll_comm_config_t c;
  std::memset(&c, 0xab, sizeof c);
  ASSERT_EQ(tpcoll_comm_config_from_env(&c), TPCOLL_SUCCESS) << tpcoll_last_error();
  EXPECT_EQ(c.rank, 0);
  EXPECT_EQ(c.world_size, 1);
  EXPECT_EQ(c.device, TPCOLL_DEVICE_CPU);
  ASSERT_NE(c.job_id, nullptr);
  EXPECT_STREQ(c.job_id, "");
  EXPECT_EQ(c.allgather, nullptr);
  EXPECT_EQ(c.allgather_user_data, nullptr);

  ScopedEnv rank("TPCOLL_RANK", "3"), world("TPCOLL_WORLD_SIZE", "8"), job("TPCOLL_JOB", "job-xyz");
  ASSERT_EQ(tpcoll_comm_config_from_env(&c), TPCOLL_SUCCESS) << tpcoll_last_error();
  EXPECT_EQ(c.rank, 3);
  EXPECT_EQ(c.world_size, 8);
  EXPECT_STREQ(c.job_id, "job-xyz");
  const tpcoll::Config cpp = tpcoll::Config::from_env();
  EXPECT_EQ(cpp.rank, 3);
  EXPECT_EQ(cpp.world_size, 8);
  EXPECT_EQ(cpp.job_id, "job-xyz");
  EXPECT_EQ(cpp.device, tpcoll::kCpuDevice);

  EXPECT_TRUE(fails_with(tpcoll_comm_config_from_env(nullptr), TPCOLL_INVALID_ARGUMENT, {"config"}));
  {
    ScopedEnv bad("TPCOLL_RANK", "two");
    EXPECT_TRUE(fails_with(tpcoll_comm_config_from_env(&c), TPCOLL_INVALID_ARGUMENT, {"TPCOLL_RANK"}));
  }
  {
    ScopedEnv bad("TPCOLL_WORLD_SIZE", "8x");
    EXPECT_TRUE(fails_with(tpcoll_comm_config_from_env(&c), TPCOLL_INVALID_ARGUMENT, {"TPCOLL_WORLD_SIZE"}));
  }
}

TEST(CApi, ConfigFromEnvironmentRejectsValuesOutsideInt) {
  CleanEnv clean;
  tpcoll_comm_config_t c{};
  {
    ScopedEnv rank("TPCOLL_RANK", "4294967296");
    EXPECT_TRUE(fails_with(tpcoll_comm_config_from_env(&c), TPCOLL_INVALID_ARGUMENT, {"TPCOLL_RANK"}))
        << "got rank " << c.rank;
  }
  {
    ScopedEnv world("TPCOLL_WORLD_SIZE", "4294967297");
    EXPECT_TRUE(fails_with(tpcoll_comm_config_from_env(&c), TPCOLL_INVALID_ARGUMENT, {"TPCOLL_WORLD_SIZE"}))
        << "got world " << c.world_size;
  }
}

tpcoll_comm_config_t world1_config(const std::string& job) {
  tpcoll_comm_config_t c{};
  c.rank = 0;
  c.world_size = 1;
  c.device = TPCOLL_DEVICE_CPU;
  c.job_id = job.c_str();
  return c;
}

TEST(CApi, CreateRejectsBadConfigs) {
  CleanEnv clean;
  const std::string job = unique_key("unit-create");
  tpcoll_comm_t comm = nullptr;
  auto c = world1_config(job);
  EXPECT_TRUE(fails_with(tpcoll_comm_create(nullptr, &comm), TPCOLL_INVALID_ARGUMENT, {"config is NULL"}));
  EXPECT_TRUE(fails_with(tpcoll_comm_create(&c, nullptr), TPCOLL_INVALID_ARGUMENT, {"comm is NULL"}));

  for (const int world : {0, -1, TPCOLL_MAX_RANKS + 1}) {
    c = world1_config(job);
    c.world_size = world;
    EXPECT_TRUE(fails_with(tpcoll_comm_create(&c, &comm), TPCOLL_INVALID_ARGUMENT,
                           {"world_size", std::to_string(world)}));
  }
  for (const auto& [rank, world] : {std::pair{-1, 1}, std::pair{1, 1}, std::pair{4, 4}}) {
    c = world1_config(job);
    c.rank = rank;
    c.world_size = world;
    EXPECT_TRUE(fails_with(tpcoll_comm_create(&c, &comm), TPCOLL_INVALID_ARGUMENT, {"rank", std::to_string(rank)}));
  }
  c = world1_config("");
  c.world_size = 2;
  EXPECT_TRUE(fails_with(tpcoll_comm_create(&c, &comm), TPCOLL_INVALID_ARGUMENT, {"job_id"}));
  c.job_id = nullptr;
  EXPECT_TRUE(fails_with(tpcoll_comm_create(&c, &comm), TPCOLL_INVALID_ARGUMENT, {"job_id"}));
  EXPECT_EQ(comm, nullptr) << "a failed create must not hand out a communicator";
}

TEST(CApi, GpuDeviceWithoutAGpuIsUnsupported) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0) GTEST_SKIP() << "this machine has a CUDA device";
  CleanEnv clean;
  const std::string job = unique_key("unit-device");
  tpcoll_comm_t comm = nullptr;
  for (const int device : {0, 3}) {
    auto c = world1_config(job);
    c.device = device;
    EXPECT_TRUE(fails_with(tpcoll_comm_create(&c, &comm), TPCOLL_UNSUPPORTED, {"device"})) << "device " << device;
    EXPECT_EQ(comm, nullptr);
  }
}

TEST(CApi, CreateRejectsBadEnvironment) {
  const std::string job = unique_key("unit-env");
  const auto c = world1_config(job);
  tpcoll_comm_t comm = nullptr;
  const std::vector<std::pair<const char*, const char*>> bad{
      {"TPCOLL_TIMEOUT_MS", "0"},         {"TPCOLL_TIMEOUT_MS", "-5"},       {"TPCOLL_TIMEOUT_MS", "soon"},
      {"TPCOLL_CPU_BUFFER_BYTES", "100"}, {"TPCOLL_CPU_BUFFER_BYTES", "4100"}, {"TPCOLL_CPU_BUFFER_BYTES", "big"},
      {"TPCOLL_ALGO", "ring"},            {"TPCOLL_DISABLE", "maybe"},        {"TPCOLL_BOOTSTRAP_TIMEOUT_MS", "x"},
  };
  for (const auto& [name, value] : bad) {
    CleanEnv clean;
    ScopedEnv env(name, value);
    EXPECT_TRUE(fails_with(tpcoll_comm_create(&c, &comm), TPCOLL_INVALID_ARGUMENT, {name})) << name << "=" << value;
  }
  EXPECT_EQ(comm, nullptr);
}

TEST(CApi, NullCommIsRejectedEverywhere) {
  float x[4] = {};
  int i = 0;
  const std::int64_t shape[] = {4};
  tpcoll_plan_info_t plan{};
  const std::initializer_list<std::string_view> needle{"comm is NULL"};
  EXPECT_TRUE(fails_with(tpcoll_comm_rank(nullptr, &i), TPCOLL_INVALID_ARGUMENT, needle));
  EXPECT_TRUE(fails_with(tpcoll_comm_world_size(nullptr, &i), TPCOLL_INVALID_ARGUMENT, needle));
  EXPECT_TRUE(fails_with(tpcoll_comm_force_algo(nullptr, TPCOLL_ALGO_ONESHOT), TPCOLL_INVALID_ARGUMENT, needle));
  EXPECT_TRUE(fails_with(tpcoll_comm_force_algo(nullptr, TPCOLL_ALGO_AUTO), TPCOLL_INVALID_ARGUMENT, needle));
  EXPECT_TRUE(fails_with(tpcoll_all_reduce(nullptr, x, x, 4, TPCOLL_FLOAT32, nullptr), TPCOLL_INVALID_ARGUMENT, needle));
  EXPECT_TRUE(fails_with(tpcoll_all_gather(nullptr, x, x, TPCOLL_FLOAT32, 1, shape, 0, nullptr),
                         TPCOLL_INVALID_ARGUMENT, needle));
  EXPECT_TRUE(fails_with(tpcoll_fused_allreduce_residual_rmsnorm(nullptr, x, nullptr, x, x, nullptr, 1, 4,
                                                                 TPCOLL_FLOAT32, 1e-5f, nullptr),
                         TPCOLL_INVALID_ARGUMENT, needle));
  EXPECT_TRUE(fails_with(tpcoll_add_rmsnorm(nullptr, x, nullptr, x, x, nullptr, 1, 4, TPCOLL_FLOAT32, 1e-5f, nullptr),
                         TPCOLL_INVALID_ARGUMENT, needle));
  EXPECT_TRUE(fails_with(tpcoll_plan(nullptr, TPCOLL_OP_ALL_REDUCE, TPCOLL_FLOAT32, 1, shape, 0, &plan),
                         TPCOLL_INVALID_ARGUMENT, needle));
  EXPECT_EQ(tpcoll_comm_destroy(nullptr), TPCOLL_SUCCESS);
}

// ---- a world-1 communicator ----

class World1 : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string job = unique_key("unit-w1");
    const auto c = world1_config(job);
    ASSERT_EQ(tpcoll_comm_create(&c, &comm_), TPCOLL_SUCCESS) << tpcoll_last_error();
  }
  void TearDown() override { EXPECT_EQ(tpcoll_comm_destroy(comm_), TPCOLL_SUCCESS); }

  void force(int algo) { ASSERT_EQ(tpcoll_comm_force_algo(comm_, algo), TPCOLL_SUCCESS) << tpcoll_last_error(); }

  CleanEnv clean_;
  tpcoll_comm_t comm_ = nullptr;
};

constexpr std::array kReducible{TPCOLL_FLOAT32, TPCOLL_FLOAT16, TPCOLL_BFLOAT16};
constexpr std::array kAllDtypes{TPCOLL_FLOAT32,     TPCOLL_FLOAT16,     TPCOLL_BFLOAT16, TPCOLL_FLOAT64,
                                TPCOLL_FLOAT8_E4M3, TPCOLL_FLOAT8_E5M2, TPCOLL_INT8,     TPCOLL_UINT8,
                                TPCOLL_INT32,       TPCOLL_INT64};
constexpr std::array kReduceAlgos{TPCOLL_ALGO_AUTO, static_cast<int>(TPCOLL_ALGO_ONESHOT),
                                  static_cast<int>(TPCOLL_ALGO_TWOSHOT), static_cast<int>(TPCOLL_ALGO_FALLBACK)};
constexpr std::array kFusedAlgos{TPCOLL_ALGO_AUTO, static_cast<int>(TPCOLL_ALGO_ONESHOT),
                                 static_cast<int>(TPCOLL_ALGO_TWOSHOT), static_cast<int>(TPCOLL_ALGO_UNFUSED),
                                 static_cast<int>(TPCOLL_ALGO_FALLBACK)};

TEST_F(World1, RankAndWorldSize) {
  int rank = -1, world = -1;
  ASSERT_EQ(tpcoll_comm_rank(comm_, &rank), TPCOLL_SUCCESS);
  ASSERT_EQ(tpcoll_comm_world_size(comm_, &world), TPCOLL_SUCCESS);
  EXPECT_EQ(rank, 0);
  EXPECT_EQ(world, 1);
  EXPECT_TRUE(fails_with(tpcoll_comm_rank(comm_, nullptr), TPCOLL_INVALID_ARGUMENT, {"rank is NULL"}));
  EXPECT_TRUE(fails_with(tpcoll_comm_world_size(comm_, nullptr), TPCOLL_INVALID_ARGUMENT, {"world_size is NULL"}));
}

TEST_F(World1, AllReduceEqualsInput) {
  for (const int algo : kReduceAlgos) {
    force(algo);
    for (const tpcoll_dtype_t dtype : kReducible) {
      for (const std::size_t count : {1u, 7u, 1000u, 300001u}) {
        const auto in = random_values(dtype, count, count * 31 + dtype);
        std::vector<std::byte> out(in.size(), std::byte{0x5a});
        ASSERT_EQ(tpcoll_all_reduce(comm_, in.data(), out.data(), count, dtype, nullptr), TPCOLL_SUCCESS)
            << tpcoll_last_error();
        EXPECT_EQ(std::memcmp(in.data(), out.data(), in.size()), 0)
            << tpcoll_dtype_name(dtype) << " count " << count << " algo " << algo;
        auto inplace = in;
        ASSERT_EQ(tpcoll_all_reduce(comm_, inplace.data(), inplace.data(), count, dtype, nullptr), TPCOLL_SUCCESS);
        EXPECT_EQ(inplace, in) << "in place, " << tpcoll_dtype_name(dtype) << " count " << count << " algo " << algo;
      }
    }
  }
}

TEST_F(World1, AllGatherEqualsInput) {
  const std::vector<std::vector<std::int64_t>> shapes{{1}, {13}, {5, 3}, {3, 5, 7}};
  for (const int algo : kFusedAlgos) {  // twoshot/unfused do not apply to a gather: the table decides
    force(algo);
    for (const tpcoll_dtype_t dtype : kAllDtypes) {
      for (const auto& shape : shapes) {
        for (int dim = 0; dim < static_cast<int>(shape.size()); ++dim) {
          std::size_t count = 1;
          for (auto e : shape) count *= static_cast<std::size_t>(e);
          // Arbitrary bytes, NaN payloads included: a gather copies, it never converts.
          const auto in = random_bytes(count * elem_size(dtype), count + dim * 7 + dtype);
          std::vector<std::byte> out(in.size(), std::byte{0x5a});
          ASSERT_EQ(tpcoll_all_gather(comm_, in.data(), out.data(), dtype, static_cast<int>(shape.size()),
                                      shape.data(), dim, nullptr),
                    TPCOLL_SUCCESS)
              << tpcoll_last_error();
          EXPECT_EQ(out, in) << tpcoll_dtype_name(dtype) << " dim " << dim << " algo " << algo;
        }
      }
    }
  }
}

// The add + RMSNorm contract written out from common/numerics.hpp: s = x +
// residual rounded to dtype; 32 partial sums of squares, element e in
// partial (e / 8) % 32, acc = acc + v * v with two roundings; halving-tree
// combine; mean = sum / hidden; out = (s * (1 / sqrt(mean + eps))) * weight.
template <typename Load, typename Store>
void reference_add_rmsnorm(const std::byte* x, const std::byte* residual, const std::byte* weight, std::byte* out,
                           std::byte* residual_out, std::size_t tokens, std::size_t hidden, std::size_t esize,
                           float eps, Load load, Store store) {
  std::vector<std::byte> s(hidden * esize);
  for (std::size_t t = 0; t < tokens; ++t) {
    const std::size_t row = t * hidden * esize;
    for (std::size_t e = 0; e < hidden; ++e) {
      float v = load(x + row + e * esize);
      if (residual) v = v + load(residual + row + e * esize);
      store(v, &s[e * esize]);
    }
    if (residual) std::memcpy(residual_out + row, s.data(), s.size());
    float partial[nx::kNormPartials] = {};
    for (std::size_t e = 0; e < hidden; ++e) {
      const float v = load(&s[e * esize]);
      float& acc = partial[(e / nx::kNormGroup) % nx::kNormPartials];
      const float sq = v * v;
      acc = acc + sq;
    }
    for (int half = nx::kNormPartials / 2; half >= 1; half /= 2)
      for (int i = 0; i < half; ++i) partial[i] = partial[i] + partial[i + half];
    const float mean = partial[0] / static_cast<float>(hidden);
    const float inv = 1.0f / std::sqrt(mean + eps);
    for (std::size_t e = 0; e < hidden; ++e) {
      const float scaled = load(&s[e * esize]) * inv;
      store(scaled * load(weight + e * esize), out + row + e * esize);
    }
  }
}

void reference_add_rmsnorm(tpcoll_dtype_t dtype, const std::byte* x, const std::byte* residual,
                           const std::byte* weight, std::byte* out, std::byte* residual_out, std::size_t tokens,
                           std::size_t hidden, float eps) {
  switch (dtype) {
    case TPCOLL_FLOAT32:
      return reference_add_rmsnorm(
          x, residual, weight, out, residual_out, tokens, hidden, 4, eps,
          [](const std::byte* p) { float f; std::memcpy(&f, p, 4); return f; },
          [](float f, std::byte* p) { std::memcpy(p, &f, 4); });
    case TPCOLL_FLOAT16:
      return reference_add_rmsnorm(
          x, residual, weight, out, residual_out, tokens, hidden, 2, eps,
          [](const std::byte* p) { std::uint16_t h; std::memcpy(&h, p, 2); return nx::fp16_to_float(h); },
          [](float f, std::byte* p) { const std::uint16_t h = nx::float_to_fp16(f); std::memcpy(p, &h, 2); });
    default:
      return reference_add_rmsnorm(
          x, residual, weight, out, residual_out, tokens, hidden, 2, eps,
          [](const std::byte* p) { std::uint16_t h; std::memcpy(&h, p, 2); return nx::bf16_to_float(h); },
          [](float f, std::byte* p) { const std::uint16_t h = nx::float_to_bf16(f); std::memcpy(p, &h, 2); });
  }
}

struct FusedCase {
  tpcoll_dtype_t dtype;
  std::size_t tokens, hidden;
  bool residual;
};

std::vector<FusedCase> fused_cases() {
  std::vector<FusedCase> cases;
  for (const tpcoll_dtype_t dtype : kReducible)
    for (const std::size_t tokens : {1u, 3u, 64u})
      for (const std::size_t hidden : {7u, 8u, 2880u, 5000u})
        for (const bool residual : {false, true}) cases.push_back({dtype, tokens, hidden, residual});
  return cases;
}

TEST_F(World1, AddRmsNormFollowsTheNumericContract) {
  for (const FusedCase& fc : fused_cases()) {
    const std::size_t n = fc.tokens * fc.hidden, bytes = n * elem_size(fc.dtype);
    const auto x = random_values(fc.dtype, n, n + 1);
    const auto residual = random_values(fc.dtype, n, n + 2);
    const auto weight = random_values(fc.dtype, fc.hidden, n + 3, 2.0f);
    std::vector<std::byte> out(bytes), res_out(bytes), ref_out(bytes), ref_res(bytes);
    const void* r = fc.residual ? residual.data() : nullptr;
    ASSERT_EQ(tpcoll_add_rmsnorm(comm_, x.data(), r, weight.data(), out.data(), fc.residual ? res_out.data() : nullptr,
                                 fc.tokens, fc.hidden, fc.dtype, 1e-6f, nullptr),
              TPCOLL_SUCCESS)
        << tpcoll_last_error();
    reference_add_rmsnorm(fc.dtype, x.data(), fc.residual ? residual.data() : nullptr, weight.data(), ref_out.data(),
                          ref_res.data(), fc.tokens, fc.hidden, 1e-6f);
    const std::string what = std::string(tpcoll_dtype_name(fc.dtype)) + " " + std::to_string(fc.tokens) + "x" +
                             std::to_string(fc.hidden) + (fc.residual ? " residual" : "");
    EXPECT_EQ(out, ref_out) << what;
    if (fc.residual) { EXPECT_EQ(res_out, ref_res) << what; }
  }
}

TEST_F(World1, RmsNormIsCloseToTheMathematicalValue) {
  // A sanity check of the formula itself, in double precision.
  const std::size_t tokens = 3, hidden = 4096;
  const auto x = random_values(TPCOLL_FLOAT32, tokens * hidden, 11);
  const auto w = random_values(TPCOLL_FLOAT32, hidden, 12);
  std::vector<float> out(tokens * hidden);
  const float eps = 1e-5f;
  ASSERT_EQ(tpcoll_add_rmsnorm(comm_, x.data(), nullptr, w.data(), out.data(), nullptr, tokens, hidden,
                               TPCOLL_FLOAT32, eps, nullptr),
            TPCOLL_SUCCESS);
  const auto* xf = reinterpret_cast<const float*>(x.data());
  const auto* wf = reinterpret_cast<const float*>(w.data());
  for (std::size_t t = 0; t < tokens; ++t) {
    double sq = 0;
    for (std::size_t e = 0; e < hidden; ++e) sq += double(xf[t * hidden + e]) * xf[t * hidden + e];
    const double inv = 1.0 / std::sqrt(sq / hidden + eps);
    for (std::size_t e = 0; e < hidden; ++e) {
      const double expected = xf[t * hidden + e] * inv * wf[e];
      EXPECT_NEAR(out[t * hidden + e], expected, 1e-5 * std::max(1.0, std::fabs(expected))) << t << "," << e;
    }
  }
}

TEST_F(World1, FusedEqualsAddRmsNormForEveryAlgorithm) {
  for (const int algo : kFusedAlgos) {
    force(algo);
    for (const FusedCase& fc : fused_cases()) {
      const std::size_t n = fc.tokens * fc.hidden, bytes = n * elem_size(fc.dtype);
      const auto x = random_values(fc.dtype, n, n * 3 + fc.dtype);
      const auto residual = random_values(fc.dtype, n, n * 5 + 1);
      const auto weight = random_values(fc.dtype, fc.hidden, fc.hidden + 9, 2.0f);
      const void* r = fc.residual ? residual.data() : nullptr;
      std::vector<std::byte> ref_out(bytes), ref_res(bytes, std::byte{0x11});
      ASSERT_EQ(tpcoll_add_rmsnorm(comm_, x.data(), r, weight.data(), ref_out.data(), ref_res.data(), fc.tokens,
                                   fc.hidden, fc.dtype, 1e-5f, nullptr),
                TPCOLL_SUCCESS)
          << tpcoll_last_error();
      const std::string what = std::string(tpcoll_dtype_name(fc.dtype)) + " " + std::to_string(fc.tokens) + "x" +
                               std::to_string(fc.hidden) + (fc.residual ? " residual" : "") + " algo " +
                               std::to_string(algo);

      std::vector<std::byte> out(bytes, std::byte{0x22}), res(bytes, std::byte{0x11});
      ASSERT_EQ(tpcoll_fused_allreduce_residual_rmsnorm(comm_, x.data(), r, weight.data(), out.data(), res.data(),
                                                        fc.tokens, fc.hidden, fc.dtype, 1e-5f, nullptr),
                TPCOLL_SUCCESS)
          << tpcoll_last_error() << " " << what;
      EXPECT_EQ(out, ref_out) << what;
      EXPECT_EQ(res, ref_res) << what << (fc.residual ? "" : " (residual_out must be left alone without residual)");

      // out aliasing x, residual_out aliasing residual.
      auto xa = x;
      auto ra = residual;
      ASSERT_EQ(tpcoll_fused_allreduce_residual_rmsnorm(comm_, xa.data(), fc.residual ? ra.data() : nullptr,
                                                        weight.data(), xa.data(), fc.residual ? ra.data() : nullptr,
                                                        fc.tokens, fc.hidden, fc.dtype, 1e-5f, nullptr),
                TPCOLL_SUCCESS)
          << tpcoll_last_error() << " " << what;
      EXPECT_EQ(xa, ref_out) << "aliased, " << what;
      if (fc.residual) { EXPECT_EQ(ra, ref_res) << "aliased, " << what; }
    }
  }
}

TEST_F(World1, NonNullStreamIsRejected) {
  float x[8] = {}, y[8] = {}, w[8] = {};
  const std::int64_t shape[] = {8};
  int fake_stream = 0;
  void* stream = &fake_stream;
  const std::initializer_list<std::string_view> needle{"stream"};
  EXPECT_TRUE(fails_with(tpcoll_all_reduce(comm_, x, y, 8, TPCOLL_FLOAT32, stream), TPCOLL_INVALID_ARGUMENT, needle));
  EXPECT_TRUE(fails_with(tpcoll_all_gather(comm_, x, y, TPCOLL_FLOAT32, 1, shape, 0, stream), TPCOLL_INVALID_ARGUMENT,
                         needle));
  EXPECT_TRUE(fails_with(tpcoll_fused_allreduce_residual_rmsnorm(comm_, x, nullptr, w, y, nullptr, 1, 8,
                                                                 TPCOLL_FLOAT32, 1e-5f, stream),
                         TPCOLL_INVALID_ARGUMENT, needle));
  EXPECT_TRUE(fails_with(tpcoll_add_rmsnorm(comm_, x, nullptr, w, y, nullptr, 1, 8, TPCOLL_FLOAT32, 1e-5f, stream),
                         TPCOLL_INVALID_ARGUMENT, needle));
  // The communicator is still fine afterwards.
  x[0] = 2.5f;
  ASSERT_EQ(tpcoll_all_reduce(comm_, x, y, 8, TPCOLL_FLOAT32, nullptr), TPCOLL_SUCCESS);
  EXPECT_EQ(y[0], 2.5f);
}

TEST_F(World1, FailingCallsLeaveOutputUntouched) {
  alignas(64) std::array<std::byte, 256> in{}, w{}, out{}, res_out{};
  for (std::size_t i = 0; i < in.size(); ++i) in[i] = std::byte{static_cast<unsigned char>(i % 50)};
  const auto sentinel = std::byte{0xa5};
  const auto untouched = [&] {
    return std::all_of(out.begin(), out.end(), [&](std::byte b) { return b == sentinel; }) &&
           std::all_of(res_out.begin(), res_out.end(), [&](std::byte b) { return b == sentinel; });
  };
  int fake_stream = 0;
  const std::int64_t shape[] = {8, 4};
  const std::int64_t zero_shape[] = {8, 0};
  std::vector<std::pair<const char*, std::function<tpcoll_result_t()>>> bad_calls{
      {"all_reduce count 0", [&] { return tpcoll_all_reduce(comm_, in.data(), out.data(), 0, TPCOLL_FLOAT32, nullptr); }},
      {"all_reduce int8", [&] { return tpcoll_all_reduce(comm_, in.data(), out.data(), 8, TPCOLL_INT8, nullptr); }},
      {"all_reduce misaligned in",
       [&] { return tpcoll_all_reduce(comm_, in.data() + 1, out.data(), 8, TPCOLL_FLOAT32, nullptr); }},
      {"all_reduce NULL in", [&] { return tpcoll_all_reduce(comm_, nullptr, out.data(), 8, TPCOLL_FLOAT32, nullptr); }},
      {"all_reduce stream",
       [&] { return tpcoll_all_reduce(comm_, in.data(), out.data(), 8, TPCOLL_FLOAT32, &fake_stream); }},
      {"all_reduce dtype 99",
       [&] { return tpcoll_all_reduce(comm_, in.data(), out.data(), 8, static_cast<tpcoll_dtype_t>(99), nullptr); }},
      {"all_gather dim 2",
       [&] { return tpcoll_all_gather(comm_, in.data(), out.data(), TPCOLL_INT32, 2, shape, 2, nullptr); }},
      {"all_gather shape 0",
       [&] { return tpcoll_all_gather(comm_, in.data(), out.data(), TPCOLL_INT32, 2, zero_shape, 0, nullptr); }},
      {"all_gather ndim 9",
       [&] { return tpcoll_all_gather(comm_, in.data(), out.data(), TPCOLL_INT32, 9, shape, 0, nullptr); }},
      {"fused eps NaN",
       [&] {
         return tpcoll_fused_allreduce_residual_rmsnorm(comm_, in.data(), in.data(), w.data(), out.data(),
                                                        res_out.data(), 2, 8, TPCOLL_FLOAT32, std::nanf(""), nullptr);
       }},
      {"fused residual without residual_out",
       [&] {
         return tpcoll_fused_allreduce_residual_rmsnorm(comm_, in.data(), in.data(), w.data(), out.data(), nullptr, 2,
                                                        8, TPCOLL_FLOAT32, 1e-5f, nullptr);
       }},
      {"fused tokens 0",
       [&] {
         return tpcoll_fused_allreduce_residual_rmsnorm(comm_, in.data(), in.data(), w.data(), out.data(),
                                                        res_out.data(), 0, 8, TPCOLL_FLOAT32, 1e-5f, nullptr);
       }},
      {"fused NULL weight",
       [&] {
         return tpcoll_fused_allreduce_residual_rmsnorm(comm_, in.data(), in.data(), nullptr, out.data(),
                                                        res_out.data(), 2, 8, TPCOLL_FLOAT32, 1e-5f, nullptr);
       }},
      {"add_rmsnorm hidden 0",
       [&] {
         return tpcoll_add_rmsnorm(comm_, in.data(), in.data(), w.data(), out.data(), res_out.data(), 2, 0,
                                   TPCOLL_FLOAT32, 1e-5f, nullptr);
       }},
      {"add_rmsnorm eps -1",
       [&] {
         return tpcoll_add_rmsnorm(comm_, in.data(), in.data(), w.data(), out.data(), res_out.data(), 2, 8,
                                   TPCOLL_BFLOAT16, -1.0f, nullptr);
       }},
  };
  for (const auto& [what, call] : bad_calls) {
    out.fill(sentinel);
    res_out.fill(sentinel);
    EXPECT_EQ(call(), TPCOLL_INVALID_ARGUMENT) << what << ": " << tpcoll_last_error();
    EXPECT_TRUE(untouched()) << what << " wrote to its output";
  }
}

TEST_F(World1, PlanDescribesEveryOp) {
  const std::int64_t reduce_shape[] = {1000};
  const std::int64_t gather_shape[] = {3, 5, 7};
  const std::int64_t fused_shape[] = {64, 5000};
  tpcoll_plan_info_t p{};
  for (const int algo : kFusedAlgos) {
    force(algo);
    for (const auto& [op, dtype, ndim, shape, dim] :
         {std::tuple{TPCOLL_OP_ALL_REDUCE, TPCOLL_BFLOAT16, 1, reduce_shape, 0},
          std::tuple{TPCOLL_OP_ALL_GATHER, TPCOLL_INT8, 3, gather_shape, 2},
          std::tuple{TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM, TPCOLL_FLOAT32, 2, fused_shape, 0}}) {
      std::memset(&p, 0x7f, sizeof p);
      ASSERT_EQ(tpcoll_plan(comm_, op, dtype, ndim, shape, dim, &p), TPCOLL_SUCCESS) << tpcoll_last_error();
      const std::array<const char*, 4> names{"oneshot", "twoshot", "unfused", "fallback"};
      ASSERT_GE(static_cast<int>(p.algo), 0);
      ASSERT_LT(static_cast<int>(p.algo), 4);
      EXPECT_STREQ(p.algorithm, names[p.algo]);
      EXPECT_STREQ(p.backend, p.algo == TPCOLL_ALGO_FALLBACK ? "cpu-fallback" : "cpu-shm");
      EXPECT_GT(std::strlen(p.reason), 0u);
      EXPECT_LT(std::strlen(p.reason), sizeof p.reason);
      EXPECT_GE(p.steps, 1u);
      EXPECT_GT(p.chunk_bytes, 0u);
      // A forced algorithm that applies to the op is the one planned.
      const bool applies = algo == TPCOLL_ALGO_AUTO ? false
                           : algo == TPCOLL_ALGO_UNFUSED ? op == TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM
                           : algo == TPCOLL_ALGO_TWOSHOT ? op != TPCOLL_OP_ALL_GATHER
                                                         : true;
      if (applies) { EXPECT_EQ(static_cast<int>(p.algo), algo) << "op " << op << " forced " << algo; }
    }
  }
  EXPECT_TRUE(fails_with(tpcoll_plan(comm_, TPCOLL_OP_ALL_REDUCE, TPCOLL_FLOAT32, 1, reduce_shape, 0, nullptr),
                         TPCOLL_INVALID_ARGUMENT, {"plan is NULL"}));
  EXPECT_TRUE(fails_with(tpcoll_plan(comm_, TPCOLL_OP_ALL_REDUCE, TPCOLL_INT32, 1, reduce_shape, 0, &p),
                         TPCOLL_INVALID_ARGUMENT, {"int32"}));
  EXPECT_TRUE(fails_with(tpcoll_plan(comm_, TPCOLL_OP_ALL_GATHER, TPCOLL_INT32, 3, gather_shape, 3, &p),
                         TPCOLL_INVALID_ARGUMENT, {"dim 3"}));
  EXPECT_TRUE(fails_with(tpcoll_plan(comm_, TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM, TPCOLL_FLOAT32, 3, gather_shape, 0, &p),
                         TPCOLL_INVALID_ARGUMENT, {"ndim 3"}));
  EXPECT_TRUE(fails_with(tpcoll_plan(comm_, static_cast<tpcoll_op_t>(99), TPCOLL_FLOAT32, 1, reduce_shape, 0, &p),
                         TPCOLL_INVALID_ARGUMENT, {"op 99"}));
}

TEST_F(World1, ForceAlgoRejectsUnknownValues) {
  for (const int bad : {4, 5, -2, 100}) {
    EXPECT_TRUE(fails_with(tpcoll_comm_force_algo(comm_, bad), TPCOLL_INVALID_ARGUMENT, {std::to_string(bad)}));
  }
  EXPECT_EQ(tpcoll_comm_force_algo(comm_, TPCOLL_ALGO_AUTO), TPCOLL_SUCCESS);
}

TEST(CApiEnv, DisableAndAlgoVariablesSteerThePlan) {
  const std::int64_t shape[] = {1000};
  tpcoll_plan_info_t p{};
  // Runs `check` on a world-1 communicator created with variable=value set
  // and no other TPCOLL_* variable.
  const auto with_variable = [](const char* variable, const char* value, const char* tag, auto&& check) {
    CleanEnv clean;
    ScopedEnv env(variable, value);
    const std::string job = unique_key(tag);
    const auto c = world1_config(job);
    tpcoll_comm_t comm = nullptr;
    ASSERT_EQ(tpcoll_comm_create(&c, &comm), TPCOLL_SUCCESS) << tpcoll_last_error();
    check(comm);
    tpcoll_comm_destroy(comm);
  };
  with_variable("TPCOLL_DISABLE", "1", "unit-disable", [&](tpcoll_comm_t comm) {
    ASSERT_EQ(tpcoll_plan(comm, TPCOLL_OP_ALL_REDUCE, TPCOLL_FLOAT32, 1, shape, 0, &p), TPCOLL_SUCCESS);
    EXPECT_EQ(p.algo, TPCOLL_ALGO_FALLBACK);
    EXPECT_STREQ(p.backend, "cpu-fallback");
    EXPECT_TRUE(message_has(p.reason, {"TPCOLL_DISABLE"}));
    std::vector<float> x(1000, 1.5f), y(1000);
    ASSERT_EQ(tpcoll_all_reduce(comm, x.data(), y.data(), 1000, TPCOLL_FLOAT32, nullptr), TPCOLL_SUCCESS);
    EXPECT_EQ(y, x);
  });
  with_variable("TPCOLL_ALGO", "twoshot", "unit-algo", [&](tpcoll_comm_t comm) {
    ASSERT_EQ(tpcoll_plan(comm, TPCOLL_OP_ALL_REDUCE, TPCOLL_FLOAT32, 1, shape, 0, &p), TPCOLL_SUCCESS);
    EXPECT_EQ(p.algo, TPCOLL_ALGO_TWOSHOT);  // the table alone would say oneshot for 4000 B
    EXPECT_TRUE(message_has(p.reason, {"forced"}));
    // The communicator's own force_algo overrides the variable, and AUTO
    // restores the default, which is TPCOLL_ALGO when it is set.
    ASSERT_EQ(tpcoll_comm_force_algo(comm, TPCOLL_ALGO_FALLBACK), TPCOLL_SUCCESS);
    ASSERT_EQ(tpcoll_plan(comm, TPCOLL_OP_ALL_REDUCE, TPCOLL_FLOAT32, 1, shape, 0, &p), TPCOLL_SUCCESS);
    EXPECT_EQ(p.algo, TPCOLL_ALGO_FALLBACK);
    ASSERT_EQ(tpcoll_comm_force_algo(comm, TPCOLL_ALGO_AUTO), TPCOLL_SUCCESS);
    ASSERT_EQ(tpcoll_plan(comm, TPCOLL_OP_ALL_REDUCE, TPCOLL_FLOAT32, 1, shape, 0, &p), TPCOLL_SUCCESS);
    EXPECT_EQ(p.algo, TPCOLL_ALGO_TWOSHOT);
  });
  with_variable("TPCOLL_CPU_BUFFER_BYTES", "4096", "unit-buffer", [&](tpcoll_comm_t comm) {
    ASSERT_EQ(tpcoll_plan(comm, TPCOLL_OP_ALL_REDUCE, TPCOLL_FLOAT32, 1, shape, 0, &p), TPCOLL_SUCCESS);
    EXPECT_EQ(p.chunk_bytes, 4000u);
    const std::int64_t big[] = {10000};
    ASSERT_EQ(tpcoll_plan(comm, TPCOLL_OP_ALL_REDUCE, TPCOLL_FLOAT32, 1, big, 0, &p), TPCOLL_SUCCESS);
    EXPECT_EQ(p.chunk_bytes, 4096u);
    EXPECT_EQ(p.steps, 10u);  // 40000 B in 4096 B chunks
    std::vector<float> x(10000), y(10000);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i) * 0.25f - 7.0f;
    ASSERT_EQ(tpcoll_all_reduce(comm, x.data(), y.data(), x.size(), TPCOLL_FLOAT32, nullptr), TPCOLL_SUCCESS);
    EXPECT_EQ(y, x);
  });
}

TEST(CApiEnv, CommunicatorWithoutJobIdAtWorldOne) {
  CleanEnv clean;
  tpcoll_comm_config_t c = world1_config("");
  c.job_id = nullptr;
  tpcoll_comm_t comm = nullptr;
  ASSERT_EQ(tpcoll_comm_create(&c, &comm), TPCOLL_SUCCESS) << tpcoll_last_error();
  const double x[2] = {1.0, -2.0};
  double y[2] = {};
  const std::int64_t shape[] = {2};
  ASSERT_EQ(tpcoll_all_gather(comm, x, y, TPCOLL_FLOAT64, 1, shape, 0, nullptr), TPCOLL_SUCCESS);
  EXPECT_EQ(y[1], -2.0);
  EXPECT_EQ(tpcoll_comm_destroy(comm), TPCOLL_SUCCESS);
}

TEST(CApiEnv, RankThatNeverArrivesTimesOutNamingIt) {
  CleanEnv clean;
  ScopedEnv boot("TPCOLL_BOOTSTRAP_TIMEOUT_MS", "500");
  const std::string job = unique_key("unit-absent");
  tpcoll_comm_config_t c = world1_config(job);
  c.world_size = 2;
  tpcoll_comm_t comm = nullptr;
  const auto start = Clock::now();
  const tpcoll_result_t rc = tpcoll_comm_create(&c, &comm);
  const auto elapsed = Clock::now() - start;
  EXPECT_EQ(rc, TPCOLL_TIMEOUT) << tpcoll_last_error();
  EXPECT_TRUE(std::regex_search(std::string(tpcoll_last_error()), std::regex(R"(rank(\(s\))? 1\b)")))
      << tpcoll_last_error();
  EXPECT_GE(elapsed, std::chrono::milliseconds(450));
  EXPECT_LT(elapsed, std::chrono::milliseconds(3000));
  EXPECT_EQ(comm, nullptr);

  // The C++ layer throws the same.
  tpcoll::Config cfg;
  cfg.world_size = 2;
  cfg.job_id = unique_key("unit-absent-cpp");
  try {
    tpcoll::Communicator comm2(cfg);
    ADD_FAILURE() << "created a world-2 communicator alone";
  } catch (const tpcoll::Error& e) {
    EXPECT_EQ(e.code(), TPCOLL_TIMEOUT) << e.what();
  }
}

// ---- world-2 communicators whose ranks are threads ----

// An all-gather across threads, for the allgather callback; gives up (and
// returns non-zero) after a timeout so that a test with a bug fails rather
// than hangs.
class ThreadGroup {
 public:
  explicit ThreadGroup(int world, std::chrono::milliseconds timeout = std::chrono::seconds(10))
      : world_(world), timeout_(timeout), contributions_(static_cast<std::size_t>(world)) {}

  int all_gather(int rank, const void* send, void* recv, std::size_t bytes) {
    std::unique_lock lock(mutex_);
    const std::uint64_t round = round_;
    contributions_[static_cast<std::size_t>(rank)].assign(static_cast<const char*>(send),
                                                          static_cast<const char*>(send) + bytes);
    if (++arrived_ == world_) {
      result_.clear();
      for (const auto& c : contributions_) {
        if (c.size() != bytes) failed_ = true;
        result_.insert(result_.end(), c.begin(), c.end());
      }
      arrived_ = 0;
      ++round_;
      cv_.notify_all();
    } else if (!cv_.wait_for(lock, timeout_, [&] { return round_ != round; })) {
      return 2;  // a peer never came
    }
    if (failed_) return 3;
    std::memcpy(recv, result_.data(), bytes * static_cast<std::size_t>(world_));
    return 0;
  }

  struct Member {
    ThreadGroup* group;
    int rank;
  };
  static int callback(const void* send, void* recv, std::size_t bytes, void* user) {
    auto* m = static_cast<Member*>(user);
    return m->group->all_gather(m->rank, send, recv, bytes);
  }

 private:
  int world_;
  std::chrono::milliseconds timeout_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::uint64_t round_ = 0;
  int arrived_ = 0;
  bool failed_ = false;
  std::vector<std::vector<char>> contributions_;
  std::vector<char> result_;
};

struct RankResult {
  tpcoll_result_t code = TPCOLL_SUCCESS;
  std::string message;
};

// Creates a world-`world` communicator per thread and runs body(rank, comm) on each.
std::vector<RankResult> run_threads(int world, const std::function<tpcoll_result_t(int, tpcoll_comm_t)>& body,
                                    std::chrono::milliseconds group_timeout = std::chrono::seconds(10)) {
  ThreadGroup group(world, group_timeout);
  std::vector<RankResult> results(static_cast<std::size_t>(world));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      ThreadGroup::Member member{&group, r};
      tpcoll_comm_config_t c{};
      c.rank = r;
      c.world_size = world;
      c.device = TPCOLL_DEVICE_CPU;
      c.allgather = &ThreadGroup::callback;
      c.allgather_user_data = &member;
      tpcoll_comm_t comm = nullptr;
      RankResult& out = results[static_cast<std::size_t>(r)];
      out.code = tpcoll_comm_create(&c, &comm);
      if (out.code == TPCOLL_SUCCESS) out.code = body(r, comm);
      if (out.code != TPCOLL_SUCCESS) out.message = tpcoll_last_error();
      tpcoll_comm_destroy(comm);
    });
  }
  for (auto& t : threads) t.join();
  return results;
}

TEST(ThreadRanks, CallbackCommunicatorRunsEveryOp) {
  CleanEnv clean;
  constexpr int kWorld = 3;
  const std::size_t count = 5001;
  std::vector<std::vector<float>> outs(kWorld);
  const auto results = run_threads(kWorld, [&](int rank, tpcoll_comm_t comm) {
    std::vector<float> x(count);
    for (std::size_t i = 0; i < count; ++i) x[i] = static_cast<float>(rank + 1) * 0.5f + static_cast<float>(i);
    auto& y = outs[static_cast<std::size_t>(rank)];
    y.assign(count, 0.0f);
    for (const int algo : kReduceAlgos) {
      if (const auto rc = tpcoll_comm_force_algo(comm, algo); rc != TPCOLL_SUCCESS) return rc;
      if (const auto rc = tpcoll_all_reduce(comm, x.data(), y.data(), count, TPCOLL_FLOAT32, nullptr); rc)
        return rc;
      for (std::size_t i = 0; i < count; ++i)
        if (y[i] != ((0.5f + static_cast<float>(i)) + (1.0f + static_cast<float>(i))) + (1.5f + static_cast<float>(i)))
          return TPCOLL_INTERNAL_ERROR;
    }
    const std::int64_t shape[] = {2, 3};
    const std::int32_t mine[6] = {rank, rank, rank, rank + 10, rank + 10, rank + 10};
    std::int32_t all[18] = {};
    if (const auto rc = tpcoll_all_gather(comm, mine, all, TPCOLL_INT32, 2, shape, 1, nullptr); rc) return rc;
    const std::int32_t expected[18] = {0, 0, 0, 1, 1, 1, 2, 2, 2, 10, 10, 10, 11, 11, 11, 12, 12, 12};
    if (std::memcmp(all, expected, sizeof all) != 0) return TPCOLL_INTERNAL_ERROR;
    return TPCOLL_SUCCESS;
  });
  for (int r = 0; r < kWorld; ++r)
    EXPECT_EQ(results[r].code, TPCOLL_SUCCESS) << "rank " << r << ": " << results[r].message;
  EXPECT_EQ(outs[0], outs[1]);
  EXPECT_EQ(outs[0], outs[2]);
}

TEST(ThreadRanks, FailingCallbackFailsCreation) {
  CleanEnv clean;
  tpcoll_comm_config_t c{};
  c.rank = 0;
  c.world_size = 2;
  c.device = TPCOLL_DEVICE_CPU;
  c.allgather = [](const void*, void*, std::size_t, void*) { return 7; };
  tpcoll_comm_t comm = nullptr;
  EXPECT_TRUE(fails_with(tpcoll_comm_create(&c, &comm), TPCOLL_BOOTSTRAP_ERROR, {"returned 7"}));
  EXPECT_EQ(comm, nullptr);

  // Through the C++ API: an exception from the callback becomes the same error.
  tpcoll::Config cfg;
  cfg.world_size = 2;
  cfg.allgather = [](const void*, void*, std::size_t) { throw std::runtime_error("framework is down"); };
  try {
    tpcoll::Communicator cpp(cfg);
    ADD_FAILURE() << "created a communicator with a failing callback";
  } catch (const tpcoll::Error& e) {
    EXPECT_EQ(e.code(), TPCOLL_BOOTSTRAP_ERROR) << e.what();
  }
}

TEST(ThreadRanks, RanksForcingDifferentAlgorithmsGetAnErrorNotAHang) {
  CleanEnv clean;
  ScopedEnv timeout("TPCOLL_TIMEOUT_MS", "500");
  const auto results = run_threads(
      2,
      [](int rank, tpcoll_comm_t comm) {
        if (auto rc = tpcoll_comm_force_algo(comm, rank == 0 ? TPCOLL_ALGO_FALLBACK : TPCOLL_ALGO_ONESHOT)) return rc;
        float x[4] = {1, 2, 3, 4}, y[4];
        return tpcoll_all_reduce(comm, x, y, 4, TPCOLL_FLOAT32, nullptr);
      },
      std::chrono::milliseconds(2000));
  // The two algorithms use different transports, so neither sees the other's
  // signature: each gives up at the timeout instead of hanging.
  for (int r = 0; r < 2; ++r)
    EXPECT_NE(results[r].code, TPCOLL_SUCCESS) << "rank " << r << ": " << results[r].message;
}

TEST(ThreadRanks, HugeTimeoutDoesNotExpireImmediately) {
  CleanEnv clean;
  ScopedEnv timeout("TPCOLL_TIMEOUT_MS", "10000000000000");
  const auto results = run_threads(2, [](int rank, tpcoll_comm_t comm) {
    if (rank == 1) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    float x[4] = {1, 2, 3, 4}, y[4];
    return tpcoll_all_reduce(comm, x, y, 4, TPCOLL_FLOAT32, nullptr);
  });
  for (int r = 0; r < 2; ++r) EXPECT_EQ(results[r].code, TPCOLL_SUCCESS) << "rank " << r << ": " << results[r].message;
}

}  // namespace
