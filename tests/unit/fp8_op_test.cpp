// tpcoll_fused_allreduce_residual_rmsnorm_fp8 on CPU ranks of one process:
// bit for bit the fused op followed by the quantisation, computed here from
// the fused op's output with the test's own row maxima and a search-based
// E4M3 reference; every world size 1-4, dtype, scaling, with and without
// residual and out. Then the arguments it refuses.
#include "common/numerics.hpp"
#include "test_util.hpp"

#include <tpcoll/tpcoll.h>

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace nx = tpcoll::numerics;

std::size_t elem_size(tpcoll_dtype_t d) { return d == TPCOLL_FLOAT32 ? 4 : 2; }

float widen(tpcoll_dtype_t d, const std::byte* p) {
  if (d == TPCOLL_FLOAT32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  return d == TPCOLL_FLOAT16 ? nx::fp16_to_float(h) : nx::bf16_to_float(h);
}

void narrow(tpcoll_dtype_t d, float f, std::byte* p) {
  if (d == TPCOLL_FLOAT32) return std::memcpy(p, &f, 4), void();
  const std::uint16_t h = d == TPCOLL_FLOAT16 ? nx::float_to_fp16(f) : nx::float_to_bf16(f);
  std::memcpy(p, &h, 2);
}

// E4M3 by search over the format's values (ties to the even code), saturating.
std::uint8_t reference_e4m3(float f) {
  if (std::isnan(f)) return 0x7f;
  const std::uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  const double a = std::fabs(static_cast<double>(f));
  int best = 0;
  double best_distance = std::numeric_limits<double>::infinity();
  for (int code = 0; code < 127; ++code) {
    const int e = code >> 3, m = code & 7;
    const double v = e == 0 ? std::ldexp(m, -9) : std::ldexp(8 + m, e - 10);
    const double d = std::fabs(a - v);
    if (d < best_distance || (d == best_distance && code % 2 == 0)) best = code, best_distance = d;
  }
  return static_cast<std::uint8_t>(sign | (a >= 448.0 ? 0x7e : best));
}

struct Expected {
  std::vector<std::uint8_t> codes;
  std::vector<float> scales;
};

// The quantisation of the fused op's `out`, as tpcoll.h defines it.
Expected quantised(tpcoll_dtype_t d, const std::vector<std::byte>& out, std::size_t tokens, std::size_t hidden,
                   tpcoll_fp8_scaling_t scaling, float static_scale) {
  Expected x{std::vector<std::uint8_t>(tokens * hidden), std::vector<float>(tokens)};
  const std::size_t size = elem_size(d);
  for (std::size_t t = 0; t < tokens; ++t) {
    float scale = static_scale;
    if (scaling == TPCOLL_FP8_PER_TOKEN) {
      float max_abs = 0.0f;
      for (std::size_t e = 0; e < hidden; ++e) {
        const float v = std::fabs(widen(d, &out[(t * hidden + e) * size]));
        if (v > max_abs) max_abs = v;  // NaN never wins
      }
      scale = max_abs / 448.0f;
      x.scales[t] = scale;
    }
    const float divisor = scale == 0.0f ? 1.0f : scale;
    for (std::size_t e = 0; e < hidden; ++e)
      x.codes[t * hidden + e] = reference_e4m3(widen(d, &out[(t * hidden + e) * size]) / divisor);
  }
  return x;
}

class LocalRanks {
 public:
  explicit LocalRanks(int world) : comms_(world) {
    const std::vector<int> devices(world, TPCOLL_DEVICE_CPU);
    if (tpcoll_comm_create_local(world, devices.data(), comms_.data()) != TPCOLL_SUCCESS)
      throw std::runtime_error(tpcoll_last_error());
  }
  ~LocalRanks() {
    for (tpcoll_comm_t c : comms_) tpcoll_comm_destroy(c);
  }
  int world() const { return static_cast<int>(comms_.size()); }
  tpcoll_comm_t operator[](int r) const { return comms_[r]; }

  // f(rank) on a thread per rank; the results, with each failure's message.
  std::vector<std::string> run(const std::function<tpcoll_result_t(int)>& f) const {
    std::vector<std::string> failures(world());
    std::vector<std::thread> threads;
    for (int r = 0; r < world(); ++r)
      threads.emplace_back([&, r] {
        if (f(r) != TPCOLL_SUCCESS) failures[r] = std::string("rank ") + std::to_string(r) + ": " + tpcoll_last_error();
      });
    for (auto& t : threads) t.join();
    return failures;
  }

 private:
  std::vector<tpcoll_comm_t> comms_;
};

::testing::AssertionResult all_ok(const std::vector<std::string>& failures) {
  for (const std::string& f : failures)
    if (!f.empty()) return ::testing::AssertionFailure() << f;
  return ::testing::AssertionSuccess();
}

std::vector<std::byte> random_rows(tpcoll_dtype_t d, std::size_t n, unsigned seed, float range = 2.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-range, range);
  std::vector<std::byte> v(n * elem_size(d));
  for (std::size_t i = 0; i < n; ++i) narrow(d, dist(rng), &v[i * elem_size(d)]);
  return v;
}

struct Case {
  tpcoll_dtype_t dtype;
  std::size_t tokens, hidden;
  bool residual;
  tpcoll_fp8_scaling_t scaling;
  bool with_out;
  std::string name() const {
    return std::string(tpcoll_dtype_name(dtype)) + " " + std::to_string(tokens) + "x" + std::to_string(hidden) +
           (residual ? " residual" : "") + (scaling == TPCOLL_FP8_STATIC ? " static" : " per-token") +
           (with_out ? " out" : " no out");
  }
};

// Every rank runs the fused op, then the FP8 op on the same inputs; the FP8
// op's outputs must equal the fused op's out quantised here, bit for bit.
void check_case(const LocalRanks& ranks, const Case& c) {
  const int world = ranks.world();
  const std::size_t n = c.tokens * c.hidden, bytes = n * elem_size(c.dtype);
  constexpr float kStaticScale = 0.0123f, kEps = 1e-5f;
  std::vector<std::vector<std::byte>> x(world);
  for (int r = 0; r < world; ++r) {
    x[r] = random_rows(c.dtype, n, static_cast<unsigned>(n * 7 + r), 1.0f + r);
    // Row 0 is zero on every rank (an all-zero row: scale 0); with 3 or more
    // tokens rank 0's row 1 holds a NaN (a NaN row: every output NaN).
    std::memset(x[r].data(), 0, c.hidden * elem_size(c.dtype));
    if (c.tokens >= 3 && r == 0) narrow(c.dtype, std::numeric_limits<float>::quiet_NaN(), &x[r][c.hidden * elem_size(c.dtype)]);
  }
  auto residual = random_rows(c.dtype, n, static_cast<unsigned>(n + 3));
  std::memset(residual.data(), 0, c.hidden * elem_size(c.dtype));
  const auto weight = random_rows(c.dtype, c.hidden, static_cast<unsigned>(c.hidden), 3.0f);
  const void* res = c.residual ? residual.data() : nullptr;

  std::vector<std::vector<std::byte>> ref_out(world, std::vector<std::byte>(bytes)),
      ref_res(world, std::vector<std::byte>(bytes)), out(world, std::vector<std::byte>(bytes, std::byte{0x5a})),
      res_out(world, std::vector<std::byte>(bytes, std::byte{0x5a}));
  std::vector<std::vector<std::uint8_t>> codes(world, std::vector<std::uint8_t>(n, 0xa5));
  std::vector<std::vector<float>> scales(world, std::vector<float>(c.tokens, -1.0f));
  ASSERT_TRUE(all_ok(ranks.run([&](int r) {
    return tpcoll_fused_allreduce_residual_rmsnorm(ranks[r], x[r].data(), res, weight.data(), ref_out[r].data(),
                                                   ref_res[r].data(), c.tokens, c.hidden, c.dtype, kEps, nullptr);
  }))) << c.name();
  ASSERT_TRUE(all_ok(ranks.run([&](int r) {
    return tpcoll_fused_allreduce_residual_rmsnorm_fp8(
        ranks[r], x[r].data(), res, weight.data(), c.with_out ? out[r].data() : nullptr, res_out[r].data(),
        codes[r].data(), c.scaling, kStaticScale, scales[r].data(), c.tokens, c.hidden, c.dtype, kEps, nullptr);
  }))) << c.name();
  const Expected expected = quantised(c.dtype, ref_out[0], c.tokens, c.hidden, c.scaling, kStaticScale);
  for (int r = 0; r < world; ++r) {
    const std::string what = c.name() + ", rank " + std::to_string(r) + " of " + std::to_string(world);
    ASSERT_EQ(codes[r], expected.codes) << what;
    if (c.scaling == TPCOLL_FP8_PER_TOKEN) {
      for (std::size_t t = 0; t < c.tokens; ++t)
        ASSERT_EQ(std::bit_cast<std::uint32_t>(scales[r][t]), std::bit_cast<std::uint32_t>(expected.scales[t]))
            << what << ", token " << t;
      EXPECT_EQ(scales[r][0], 0.0f) << what << ": the all-zero row";
    } else {
      EXPECT_EQ(scales[r], std::vector<float>(c.tokens, -1.0f)) << what << ": row_scales untouched when static";
    }
    if (c.with_out) {
      EXPECT_EQ(out[r], ref_out[r]) << what;
    } else {
      EXPECT_EQ(out[r], std::vector<std::byte>(bytes, std::byte{0x5a})) << what;
    }
    if (c.residual) { EXPECT_EQ(res_out[r], ref_res[r]) << what; }
  }
  // The all-zero row quantises to +-0.
  for (std::size_t e = 0; e < c.hidden; ++e) ASSERT_EQ(expected.codes[e] & 0x7f, 0) << c.name();
}

std::vector<Case> cases() {
  std::vector<Case> all;
  for (const tpcoll_dtype_t d : {TPCOLL_FLOAT32, TPCOLL_FLOAT16, TPCOLL_BFLOAT16})
    for (const auto& [tokens, hidden] : {std::pair<std::size_t, std::size_t>{1, 8}, {3, 100}, {5, 2880}})
      for (const bool residual : {false, true})
        for (const tpcoll_fp8_scaling_t s : {TPCOLL_FP8_STATIC, TPCOLL_FP8_PER_TOKEN})
          for (const bool with_out : {true, false}) all.push_back({d, tokens, hidden, residual, s, with_out});
  return all;
}

TEST(FusedFp8, EqualsFusedThenQuantiseAtEveryWorldSize) {
  for (const int world : {1, 2, 3, 4}) {
    const LocalRanks ranks(world);
    for (const Case& c : cases()) {
      SCOPED_TRACE("world " + std::to_string(world));
      check_case(ranks, c);
      if (HasFatalFailure()) return;
    }
  }
}

TEST(FusedFp8, EveryForcedAlgorithmGivesTheSameBits) {
  const LocalRanks ranks(3);
  for (const int algo : {TPCOLL_ALGO_ONESHOT, TPCOLL_ALGO_TWOSHOT, TPCOLL_ALGO_UNFUSED, TPCOLL_ALGO_FALLBACK}) {
    for (int r = 0; r < 3; ++r) ASSERT_EQ(tpcoll_comm_force_algo(ranks[r], algo), TPCOLL_SUCCESS);
    SCOPED_TRACE("algo " + std::to_string(algo));
    check_case(ranks, {TPCOLL_BFLOAT16, 7, 2880, true, TPCOLL_FP8_PER_TOKEN, false});
    check_case(ranks, {TPCOLL_FLOAT16, 4, 24, false, TPCOLL_FP8_STATIC, true});
  }
}

TEST(FusedFp8, LargeValuesSaturate) {
  // A static scale far below the values: every code is +-448.
  const LocalRanks ranks(1);
  std::vector<float> x(16, 3.0f), w(16, 1.0f), out(16);
  x[5] = -3.0f;
  std::vector<std::uint8_t> codes(16);
  ASSERT_EQ(tpcoll_fused_allreduce_residual_rmsnorm_fp8(ranks[0], x.data(), nullptr, w.data(), out.data(), nullptr,
                                                        codes.data(), TPCOLL_FP8_STATIC, 1e-3f, nullptr, 1, 16,
                                                        TPCOLL_FLOAT32, 0.0f, nullptr),
            TPCOLL_SUCCESS)
      << tpcoll_last_error();
  for (int e = 0; e < 16; ++e) EXPECT_EQ(codes[e], e == 5 ? 0xfe : 0x7e) << e << " (out " << out[e] << ")";
}

TEST(FusedFp8, PlanIsTheFusedOpsPlan) {
  const LocalRanks ranks(1);
  const std::int64_t shape[] = {8, 4096};
  tpcoll_plan_info_t fused{}, fp8{};
  ASSERT_EQ(tpcoll_plan(ranks[0], TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM, TPCOLL_BFLOAT16, 2, shape, 0, &fused),
            TPCOLL_SUCCESS);
  ASSERT_EQ(tpcoll_plan(ranks[0], TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM_FP8, TPCOLL_BFLOAT16, 2, shape, 0, &fp8),
            TPCOLL_SUCCESS)
      << tpcoll_last_error();
  EXPECT_EQ(fp8.algo, fused.algo);
  EXPECT_STREQ(fp8.reason, fused.reason);
  EXPECT_EQ(tpcoll_plan(ranks[0], TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM_FP8, TPCOLL_BFLOAT16, 1, shape, 0, &fp8),
            TPCOLL_INVALID_ARGUMENT);
}

TEST(FusedFp8, RefusesBadArgumentsAndWritesNothing) {
  const LocalRanks ranks(1);
  std::vector<float> x(16, 1.0f), w(16, 1.0f), out(16, 7.0f), scales(2, 7.0f);
  std::vector<std::uint8_t> codes(16, 0xa5);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const auto call = [&](void* fp8, int scaling, float scale, float* row_scales) {
    return tpcoll_fused_allreduce_residual_rmsnorm_fp8(ranks[0], x.data(), nullptr, w.data(), out.data(), nullptr,
                                                       fp8, static_cast<tpcoll_fp8_scaling_t>(scaling), scale,
                                                       row_scales, 2, 8, TPCOLL_FLOAT32, 1e-6f, nullptr);
  };
  const auto expect_refused = [&](tpcoll_result_t got, const char* needle) {
    EXPECT_EQ(got, TPCOLL_INVALID_ARGUMENT) << needle;
    EXPECT_TRUE(tpcoll::test::message_has(tpcoll_last_error(), {needle}));
  };
  expect_refused(call(codes.data(), TPCOLL_FP8_STATIC, 0.0f, nullptr), "static_scale");
  expect_refused(call(codes.data(), TPCOLL_FP8_STATIC, -1.0f, nullptr), "static_scale");
  expect_refused(call(codes.data(), TPCOLL_FP8_STATIC, nan, nullptr), "static_scale");
  expect_refused(call(codes.data(), TPCOLL_FP8_STATIC, inf, nullptr), "static_scale");
  expect_refused(call(nullptr, TPCOLL_FP8_STATIC, 1.0f, nullptr), "out_fp8 is NULL");
  expect_refused(call(codes.data(), 7, 1.0f, scales.data()), "scaling 7");
  expect_refused(call(codes.data(), TPCOLL_FP8_PER_TOKEN, 1.0f, nullptr), "row_scales is NULL");
  expect_refused(call(codes.data(), TPCOLL_FP8_PER_TOKEN, 1.0f, reinterpret_cast<float*>(codes.data() + 1)),
                 "row_scales");
  EXPECT_EQ(tpcoll_fused_allreduce_residual_rmsnorm_fp8(ranks[0], x.data(), nullptr, w.data(), nullptr, nullptr,
                                                        codes.data(), TPCOLL_FP8_STATIC, 1.0f, nullptr, 2, 8,
                                                        TPCOLL_INT32, 1e-6f, nullptr),
            TPCOLL_INVALID_ARGUMENT);
  EXPECT_EQ(out, std::vector<float>(16, 7.0f));
  EXPECT_EQ(codes, std::vector<std::uint8_t>(16, 0xa5));
  EXPECT_EQ(scales, std::vector<float>(2, 7.0f));
  // A static call ignores row_scales, NULL or not.
  EXPECT_EQ(call(codes.data(), TPCOLL_FP8_STATIC, 0.5f, nullptr), TPCOLL_SUCCESS) << tpcoll_last_error();
}

}  // namespace
