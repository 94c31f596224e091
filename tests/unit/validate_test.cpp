// Argument validation (src/core/validate.hpp): every bad input is
// TPCOLL_INVALID_ARGUMENT with a message naming the argument, and good input
// becomes a Call with the right derived fields.
#include "core/validate.hpp"

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>

namespace {

using tpcoll::test::throws_error;

constexpr auto kInvalid = TPCOLL_INVALID_ARGUMENT;

// 64-byte aligned scratch; offsets from it make misaligned pointers.
struct Scratch {
  alignas(64) unsigned char bytes[4096];
  const void* at(std::size_t offset) const { return bytes + offset; }
};

class Validate : public ::testing::Test {
 protected:
  Scratch a_, b_, c_, d_, e_;
  const void* in() const { return a_.at(0); }
  const void* out() const { return b_.at(0); }
};

TEST_F(Validate, AllReduceGoodCall) {
  const tpcoll::Call call = tpcoll::validate_all_reduce(in(), out(), 1000, TPCOLL_FLOAT16);
  EXPECT_EQ(call.op, TPCOLL_OP_ALL_REDUCE);
  EXPECT_EQ(call.dtype, TPCOLL_FLOAT16);
  EXPECT_EQ(call.count, 1000u);
  EXPECT_EQ(call.bytes, 2000u);
  EXPECT_EQ(call.ndim, 1);
  EXPECT_EQ(call.shape[0], 1000);
  EXPECT_FALSE(call.has_residual);
  // in == out is allowed.
  EXPECT_EQ(tpcoll::validate_all_reduce(in(), in(), 7, TPCOLL_FLOAT32).bytes, 28u);
  EXPECT_EQ(tpcoll::validate_all_reduce(in(), out(), 3, TPCOLL_BFLOAT16).bytes, 6u);
}

TEST_F(Validate, AllReduceNullBuffers) {
  EXPECT_TRUE(throws_error([&] { tpcoll::validate_all_reduce(nullptr, out(), 4, TPCOLL_FLOAT32); }, kInvalid,
                           {"in is NULL"}));
  EXPECT_TRUE(throws_error([&] { tpcoll::validate_all_reduce(in(), nullptr, 4, TPCOLL_FLOAT32); }, kInvalid,
                           {"out is NULL"}));
}

TEST_F(Validate, AllReduceCountZeroOrHuge) {
  EXPECT_TRUE(throws_error([&] { tpcoll::validate_all_reduce(in(), out(), 0, TPCOLL_FLOAT32); }, kInvalid,
                           {"count is 0"}));
  EXPECT_TRUE(throws_error([&] { tpcoll::validate_all_reduce(in(), out(), std::size_t{1} << 62, TPCOLL_FLOAT32); },
                           kInvalid, {"count"}));
  EXPECT_TRUE(throws_error([&] { tpcoll::validate_all_reduce(in(), out(), SIZE_MAX, TPCOLL_BFLOAT16); }, kInvalid,
                           {"count"}));
}

TEST_F(Validate, AllReduceUnsupportedDtypes) {
  for (const tpcoll_dtype_t d : {TPCOLL_INT8, TPCOLL_UINT8, TPCOLL_INT32, TPCOLL_INT64, TPCOLL_FLOAT64,
                                 TPCOLL_FLOAT8_E4M3, TPCOLL_FLOAT8_E5M2}) {
    EXPECT_TRUE(throws_error([&] { tpcoll::validate_all_reduce(in(), out(), 8, d); }, kInvalid,
                             {"all_reduce", "dtype", tpcoll_dtype_name(d)}))
        << tpcoll_dtype_name(d);
  }
}

TEST_F(Validate, DtypeOutsideTheEnum) {
  for (const int d : {-1, 10, 42, 1 << 20}) {
    const auto dtype = static_cast<tpcoll_dtype_t>(d);
    EXPECT_TRUE(throws_error([&] { tpcoll::validate_all_reduce(in(), out(), 8, dtype); }, kInvalid,
                             {"dtype", std::to_string(d)}));
    const std::int64_t shape[] = {8};
    EXPECT_TRUE(throws_error([&] { tpcoll::validate_all_gather(in(), out(), dtype, 1, shape, 0); }, kInvalid,
                             {"dtype", std::to_string(d)}));
    EXPECT_TRUE(throws_error(
        [&] {
          tpcoll::validate_rmsnorm(TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM,
                                   {in(), nullptr, c_.at(0), out(), nullptr}, 2, 8, dtype, 1e-5f);
        },
        kInvalid, {"dtype", std::to_string(d)}));
  }
}

TEST_F(Validate, MisalignedBuffers) {
  // A float buffer at byte offset 1, 2 and 3; a half buffer at offset 1.
  for (std::size_t off : {1u, 2u, 3u}) {
    EXPECT_TRUE(throws_error([&] { tpcoll::validate_all_reduce(a_.at(off), out(), 4, TPCOLL_FLOAT32); }, kInvalid,
                             {"in (", "aligned", "4-byte", "float32"}));
    EXPECT_TRUE(throws_error([&] { tpcoll::validate_all_reduce(in(), b_.at(off), 4, TPCOLL_FLOAT32); }, kInvalid,
                             {"out (", "aligned"}));
  }
  EXPECT_TRUE(throws_error([&] { tpcoll::validate_all_reduce(a_.at(1), out(), 4, TPCOLL_BFLOAT16); }, kInvalid,
                           {"in (", "aligned", "2-byte"}));
  // 2-byte alignment is enough for half types.
  EXPECT_NO_THROW(tpcoll::validate_all_reduce(a_.at(2), b_.at(6), 4, TPCOLL_FLOAT16));

  const std::int64_t shape[] = {4};
  EXPECT_TRUE(throws_error([&] { tpcoll::validate_all_gather(a_.at(4), out(), TPCOLL_INT64, 1, shape, 0); },
                           kInvalid, {"in (", "aligned", "8-byte", "int64"}));
  EXPECT_TRUE(throws_error([&] { tpcoll::validate_all_gather(in(), b_.at(8 + 4), TPCOLL_FLOAT64, 1, shape, 0); },
                           kInvalid, {"out (", "aligned"}));
  // Byte types have no alignment requirement.
  EXPECT_NO_THROW(tpcoll::validate_all_gather(a_.at(1), b_.at(3), TPCOLL_INT8, 1, shape, 0));
  EXPECT_NO_THROW(tpcoll::validate_all_gather(a_.at(5), b_.at(7), TPCOLL_FLOAT8_E5M2, 1, shape, 0));
}

TEST_F(Validate, AllGatherGoodCall) {
  const std::int64_t shape[] = {2, 3, 4};
  const tpcoll::Call c1 = tpcoll::validate_all_gather(in(), out(), TPCOLL_INT32, 3, shape, 1);
  EXPECT_EQ(c1.op, TPCOLL_OP_ALL_GATHER);
  EXPECT_EQ(c1.ndim, 3);
  EXPECT_EQ(c1.dim, 1);
  EXPECT_EQ(c1.count, 24u);
  EXPECT_EQ(c1.bytes, 96u);
  EXPECT_EQ(c1.outer, 2u);
  EXPECT_EQ(c1.inner_bytes, 48u);
  EXPECT_EQ(c1.shape[0], 2);
  EXPECT_EQ(c1.shape[1], 3);
  EXPECT_EQ(c1.shape[2], 4);

  const tpcoll::Call c0 = tpcoll::validate_all_gather(in(), out(), TPCOLL_INT32, 3, shape, 0);
  EXPECT_EQ(c0.outer, 1u);
  EXPECT_EQ(c0.inner_bytes, 96u);
  const tpcoll::Call c2 = tpcoll::validate_all_gather(in(), out(), TPCOLL_INT32, 3, shape, 2);
  EXPECT_EQ(c2.outer, 6u);
  EXPECT_EQ(c2.inner_bytes, 16u);

  const std::int64_t eight[] = {1, 2, 1, 3, 1, 1, 5, 1};
  const tpcoll::Call c8 = tpcoll::validate_all_gather(in(), out(), TPCOLL_UINT8, 8, eight, 6);
  EXPECT_EQ(c8.count, 30u);
  EXPECT_EQ(c8.outer, 6u);
  EXPECT_EQ(c8.inner_bytes, 5u);
}

TEST_F(Validate, AllGatherBadShapes) {
  const std::int64_t shape[] = {2, 3, 4, 1, 1, 1, 1, 1, 1};
  EXPECT_TRUE(throws_error([&] { tpcoll::validate_all_gather(in(), out(), TPCOLL_FLOAT32, 1, nullptr, 0); },
                           kInvalid, {"shape is NULL"}));
  EXPECT_TRUE(throws_error([&] { tpcoll::validate_all_gather(in(), out(), TPCOLL_FLOAT32, 0, shape, 0); }, kInvalid,
                           {"ndim 0"}));
  EXPECT_TRUE(throws_error([&] { tpcoll::validate_all_gather(in(), out(), TPCOLL_FLOAT32, 9, shape, 0); }, kInvalid,
                           {"ndim 9"}));
  EXPECT_TRUE(throws_error([&] { tpcoll::validate_all_gather(in(), out(), TPCOLL_FLOAT32, -1, shape, 0); },
                           kInvalid, {"ndim -1"}));
  EXPECT_TRUE(throws_error([&] { tpcoll::validate_all_gather(in(), out(), TPCOLL_FLOAT32, 3, shape, -1); },
                           kInvalid, {"dim -1"}));
  EXPECT_TRUE(throws_error([&] { tpcoll::validate_all_gather(in(), out(), TPCOLL_FLOAT32, 3, shape, 3); }, kInvalid,
                           {"dim 3"}));
  const std::int64_t zero[] = {2, 0, 4};
  EXPECT_TRUE(throws_error([&] { tpcoll::validate_all_gather(in(), out(), TPCOLL_FLOAT32, 3, zero, 0); }, kInvalid,
                           {"shape[1]", "0"}));
  const std::int64_t negative[] = {-3, 2};
  EXPECT_TRUE(throws_error([&] { tpcoll::validate_all_gather(in(), out(), TPCOLL_FLOAT32, 2, negative, 1); },
                           kInvalid, {"shape[0]", "-3"}));
  const std::int64_t huge[] = {std::int64_t{1} << 40, std::int64_t{1} << 40};
  EXPECT_TRUE(throws_error([&] { tpcoll::validate_all_gather(in(), out(), TPCOLL_INT8, 2, huge, 0); }, kInvalid,
                           {"shape"}));
  const std::int64_t overflow[] = {INT64_MAX, INT64_MAX, INT64_MAX};
  EXPECT_TRUE(throws_error([&] { tpcoll::validate_all_gather(in(), out(), TPCOLL_INT8, 3, overflow, 0); }, kInvalid,
                           {"shape"}));
}

TEST_F(Validate, AllGatherNullBuffers) {
  const std::int64_t shape[] = {4};
  EXPECT_TRUE(throws_error([&] { tpcoll::validate_all_gather(nullptr, out(), TPCOLL_INT32, 1, shape, 0); },
                           kInvalid, {"in is NULL"}));
  EXPECT_TRUE(throws_error([&] { tpcoll::validate_all_gather(in(), nullptr, TPCOLL_INT32, 1, shape, 0); },
                           kInvalid, {"out is NULL"}));
}

class ValidateRmsNorm : public Validate {
 protected:
  tpcoll::RmsNormBuffers good(bool residual) const {
    return {a_.at(0), residual ? c_.at(0) : nullptr, d_.at(0), b_.at(0), residual ? e_.at(0) : nullptr};
  }
  tpcoll::Call run(const tpcoll::RmsNormBuffers& b, std::size_t tokens = 3, std::size_t hidden = 5,
                   tpcoll_dtype_t dtype = TPCOLL_BFLOAT16, float eps = 1e-5f) const {
    return tpcoll::validate_rmsnorm(TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM, b, tokens, hidden, dtype, eps);
  }
};

TEST_F(ValidateRmsNorm, GoodCall) {
  const tpcoll::Call call = run(good(true), 3, 5, TPCOLL_BFLOAT16, 1e-5f);
  EXPECT_EQ(call.op, TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM);
  EXPECT_EQ(call.count, 15u);
  EXPECT_EQ(call.bytes, 30u);
  EXPECT_EQ(call.outer, 3u);
  EXPECT_EQ(call.inner_bytes, 10u);
  EXPECT_EQ(call.rows(), 3u);
  EXPECT_EQ(call.hidden(), 5u);
  EXPECT_TRUE(call.has_residual);
  EXPECT_EQ(call.eps, 1e-5f);
  EXPECT_FALSE(run(good(false)).has_residual);
  // eps 0 is fine; residual_out may alias residual and out may alias x.
  EXPECT_NO_THROW(run(good(true), 1, 1, TPCOLL_FLOAT32, 0.0f));
  EXPECT_NO_THROW(run({a_.at(0), c_.at(0), d_.at(0), a_.at(0), c_.at(0)}));
}

TEST_F(ValidateRmsNorm, NullBuffers) {
  auto b = good(true);
  b.x = nullptr;
  EXPECT_TRUE(throws_error([&] { run(b); }, kInvalid, {"x is NULL"}));
  b = good(true);
  b.weight = nullptr;
  EXPECT_TRUE(throws_error([&] { run(b); }, kInvalid, {"weight is NULL"}));
  b = good(true);
  b.out = nullptr;
  EXPECT_TRUE(throws_error([&] { run(b); }, kInvalid, {"out is NULL"}));
  b = good(true);
  b.residual_out = nullptr;
  EXPECT_TRUE(throws_error([&] { run(b); }, kInvalid, {"residual_out is NULL", "residual"}));
}

TEST_F(ValidateRmsNorm, Misaligned) {
  auto b = good(true);
  b.residual = c_.at(1);
  EXPECT_TRUE(throws_error([&] { run(b, 3, 5, TPCOLL_FLOAT32); }, kInvalid, {"residual (", "aligned"}));
  b = good(true);
  b.residual_out = e_.at(2);
  EXPECT_TRUE(throws_error([&] { run(b, 3, 5, TPCOLL_FLOAT32); }, kInvalid, {"residual_out (", "aligned"}));
  b = good(false);
  b.weight = d_.at(1);
  EXPECT_TRUE(throws_error([&] { run(b, 3, 5, TPCOLL_FLOAT16); }, kInvalid, {"weight (", "aligned"}));
  b = good(false);
  b.x = a_.at(3);
  EXPECT_TRUE(throws_error([&] { run(b, 3, 5, TPCOLL_BFLOAT16); }, kInvalid, {"x (", "aligned"}));
}

TEST_F(ValidateRmsNorm, BadSizesAndEps) {
  EXPECT_TRUE(throws_error([&] { run(good(false), 0, 5); }, kInvalid, {"tokens is 0"}));
  EXPECT_TRUE(throws_error([&] { run(good(false), 3, 0); }, kInvalid, {"hidden is 0"}));
  EXPECT_TRUE(throws_error([&] { run(good(false), std::size_t{1} << 40, std::size_t{1} << 40); }, kInvalid,
                           {"tokens", "hidden"}));
  EXPECT_TRUE(throws_error([&] { run(good(false), 3, 5, TPCOLL_FLOAT32, -1e-6f); }, kInvalid, {"eps"}));
  EXPECT_TRUE(throws_error([&] { run(good(false), 3, 5, TPCOLL_FLOAT32, std::nanf("")); }, kInvalid, {"eps"}));
  EXPECT_TRUE(throws_error(
      [&] { run(good(false), 3, 5, TPCOLL_FLOAT32, std::numeric_limits<float>::infinity()); }, kInvalid, {"eps"}));
  EXPECT_TRUE(throws_error([&] { run(good(false), 3, 5, TPCOLL_INT8); }, kInvalid, {"dtype", "int8"}));
  EXPECT_TRUE(throws_error([&] { run(good(false), 3, 5, TPCOLL_FLOAT64); }, kInvalid, {"dtype", "float64"}));
}

TEST_F(Validate, ReduceScatterSharesAndPlacement) {
  const tpcoll::Call call = tpcoll::validate_reduce_scatter(in(), out(), 1000, TPCOLL_BFLOAT16);
  EXPECT_EQ(call.op, TPCOLL_OP_REDUCE_SCATTER);
  EXPECT_EQ(call.count, 1000u);
  EXPECT_EQ(call.bytes, 2000u);
  tpcoll::require_equal_shares(call, 4);
  EXPECT_TRUE(throws_error([&] { tpcoll::require_equal_shares(call, 3); }, kInvalid,
                           {"reduce_scatter", "count 1000", "multiple of the world size 3"}));
  // Out of the input entirely, or exactly this rank's share of it (500 B at world 4).
  tpcoll::require_share_placement(call, in(), out(), 4, 2);
  tpcoll::require_share_placement(call, in(), a_.at(1000), 4, 2);
  EXPECT_TRUE(throws_error([&] { tpcoll::require_share_placement(call, in(), a_.at(500), 4, 2); }, kInvalid,
                           {"overlaps the input", "rank 2's share", "input + 1000 B"}));
  EXPECT_TRUE(throws_error([&] { tpcoll::require_share_placement(call, a_.at(100), in(), 4, 0); }, kInvalid,
                           {"overlaps the input"}));  // ends inside the input
  EXPECT_TRUE(throws_error([&] { tpcoll::validate_reduce_scatter(in(), out(), 8, TPCOLL_INT8); }, kInvalid,
                           {"reduce_scatter does not support dtype int8"}));

  const tpcoll::Call fused = tpcoll::validate_rmsnorm(TPCOLL_OP_FUSED_REDUCE_SCATTER_RMSNORM,
                                                      {in(), nullptr, c_.at(0), out(), nullptr}, 6, 8, TPCOLL_FLOAT32,
                                                      1e-6f);
  tpcoll::require_equal_shares(fused, 3);
  EXPECT_TRUE(throws_error([&] { tpcoll::require_equal_shares(fused, 4); }, kInvalid,
                           {"fused_reduce_scatter_residual_rmsnorm", "tokens 6", "world size 4"}));
}

TEST_F(Validate, PlanRequests) {
  const std::int64_t one[] = {1024};
  const tpcoll::Call r = tpcoll::validate_plan_request(TPCOLL_OP_ALL_REDUCE, TPCOLL_FLOAT32, 1, one, 0);
  EXPECT_EQ(r.bytes, 4096u);
  const std::int64_t two[] = {4, 6};
  const tpcoll::Call f = tpcoll::validate_plan_request(TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM, TPCOLL_BFLOAT16, 2, two, 0);
  EXPECT_EQ(f.rows(), 4u);
  EXPECT_EQ(f.hidden(), 6u);
  EXPECT_EQ(f.inner_bytes, 12u);
  const tpcoll::Call g = tpcoll::validate_plan_request(TPCOLL_OP_ALL_GATHER, TPCOLL_INT64, 2, two, 1);
  EXPECT_EQ(g.outer, 4u);
  EXPECT_EQ(g.inner_bytes, 48u);

  EXPECT_TRUE(throws_error(
      [&] { tpcoll::validate_plan_request(static_cast<tpcoll_op_t>(7), TPCOLL_FLOAT32, 1, one, 0); }, kInvalid,
      {"op 7"}));
  EXPECT_TRUE(throws_error(
      [&] { tpcoll::validate_plan_request(TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM, TPCOLL_FLOAT32, 1, one, 0); }, kInvalid,
      {"ndim 1"}));
  const std::int64_t zero_tokens[] = {0, 6};
  EXPECT_TRUE(throws_error(
      [&] { tpcoll::validate_plan_request(TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM, TPCOLL_FLOAT32, 2, zero_tokens, 0); },
      kInvalid, {"tokens"}));
  EXPECT_TRUE(throws_error(
      [&] { tpcoll::validate_plan_request(TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM, TPCOLL_FLOAT32, 2, nullptr, 0); },
      kInvalid, {"shape is NULL"}));
  EXPECT_TRUE(throws_error([&] { tpcoll::validate_plan_request(TPCOLL_OP_ALL_REDUCE, TPCOLL_INT32, 1, one, 0); },
                           kInvalid, {"dtype", "int32"}));
  EXPECT_TRUE(throws_error([&] { tpcoll::validate_plan_request(TPCOLL_OP_ALL_GATHER, TPCOLL_INT32, 2, two, 2); },
                           kInvalid, {"dim 2"}));
}

}  // namespace
