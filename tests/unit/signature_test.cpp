// Call signatures (src/core/signature.hpp): what ranks compare to detect that
// they called different operations.
#include "core/signature.hpp"
#include "core/validate.hpp"

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <bit>
#include <functional>
#include <set>
#include <string>
#include <vector>

namespace {

using tpcoll::CallSignature;
using tpcoll::test::message_has;
using tpcoll::test::throws_error;

CallSignature base() {
  const std::int64_t shape[] = {4, 6, 10};
  const tpcoll::Call call = tpcoll::validate_plan_request(TPCOLL_OP_ALL_GATHER, TPCOLL_BFLOAT16, 3, shape, 1);
  return tpcoll::make_signature(call, TPCOLL_ALGO_ONESHOT, 5);
}

TEST(Signature, MakeSignatureCopiesTheCall) {
  const CallSignature s = base();
  EXPECT_EQ(s.step, 5u);
  EXPECT_EQ(s.op, static_cast<std::uint32_t>(TPCOLL_OP_ALL_GATHER));
  EXPECT_EQ(s.dtype, static_cast<std::uint32_t>(TPCOLL_BFLOAT16));
  EXPECT_EQ(s.algo, static_cast<std::uint32_t>(TPCOLL_ALGO_ONESHOT));
  EXPECT_EQ(s.ndim, 3);
  EXPECT_EQ(s.dim, 1);
  EXPECT_EQ(s.count, 240u);
  EXPECT_EQ(s.shape[0], 4);
  EXPECT_EQ(s.shape[1], 6);
  EXPECT_EQ(s.shape[2], 10);
  EXPECT_EQ(s.shape[3], 0);
  EXPECT_EQ(s.has_residual, 0u);

  const std::int64_t fused[] = {3, 8};
  tpcoll::Call call = tpcoll::validate_plan_request(TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM, TPCOLL_FLOAT16, 2, fused, 0);
  call.eps = 1e-6f;
  call.has_residual = true;
  const CallSignature f = tpcoll::make_signature(call, TPCOLL_ALGO_TWOSHOT, 0);
  EXPECT_EQ(f.eps_bits, std::bit_cast<std::uint32_t>(1e-6f));
  EXPECT_EQ(f.has_residual, 1u);
}

TEST(Signature, HashIgnoresTheStep) {
  const CallSignature a = base();
  CallSignature b = a;
  for (const std::uint64_t step : {0ull, 1ull, 6ull, 1ull << 40, ~0ull}) {
    b.step = step;
    EXPECT_EQ(a.call_hash(), b.call_hash()) << step;
    EXPECT_TRUE(a.same_call(b));
  }
}

TEST(Signature, EveryFieldChangesTheHash) {
  const CallSignature a = base();
  const std::vector<std::pair<const char*, std::function<void(CallSignature&)>>> changes{
      {"op", [](CallSignature& s) { s.op = TPCOLL_OP_ALL_REDUCE; }},
      {"dtype", [](CallSignature& s) { s.dtype = TPCOLL_FLOAT16; }},
      {"algo", [](CallSignature& s) { s.algo = TPCOLL_ALGO_FALLBACK; }},
      {"count", [](CallSignature& s) { s.count += 1; }},
      {"shape[0]", [](CallSignature& s) { s.shape[0] = 5; }},
      {"shape[1]", [](CallSignature& s) { s.shape[1] = 7; }},
      {"shape[2]", [](CallSignature& s) { s.shape[2] = 11; }},
      {"shape swapped", [](CallSignature& s) { std::swap(s.shape[0], s.shape[2]); }},
      {"ndim", [](CallSignature& s) { s.ndim = 2; }},
      {"dim", [](CallSignature& s) { s.dim = 2; }},
      {"eps", [](CallSignature& s) { s.eps_bits = std::bit_cast<std::uint32_t>(1e-5f); }},
      {"eps by one ulp", [](CallSignature& s) { s.eps_bits += 1; }},
      {"residual", [](CallSignature& s) { s.has_residual = 1; }},
  };
  std::set<std::uint64_t> hashes{a.call_hash()};
  for (const auto& [what, change] : changes) {
    CallSignature b = a;
    change(b);
    EXPECT_NE(a.call_hash(), b.call_hash()) << what;
    EXPECT_FALSE(a.same_call(b)) << what;
    EXPECT_FALSE(b.same_call(a)) << what;
    hashes.insert(b.call_hash());
  }
  EXPECT_EQ(hashes.size(), changes.size() + 1) << "two different changes collided";
}

TEST(Signature, CountsAndShapesAcrossManyCallsDoNotCollide) {
  std::set<std::uint64_t> hashes;
  int calls = 0;
  for (std::int64_t n = 1; n <= 3000; ++n) {
    for (const tpcoll_dtype_t dtype : {TPCOLL_FLOAT32, TPCOLL_FLOAT16, TPCOLL_BFLOAT16}) {
      const std::int64_t shape[] = {n};
      const tpcoll::Call call = tpcoll::validate_plan_request(TPCOLL_OP_ALL_REDUCE, dtype, 1, shape, 0);
      for (const tpcoll_algo_t algo : {TPCOLL_ALGO_ONESHOT, TPCOLL_ALGO_TWOSHOT}) {
        hashes.insert(tpcoll::make_signature(call, algo, static_cast<std::uint64_t>(n)).call_hash());
        ++calls;
      }
    }
  }
  EXPECT_EQ(hashes.size(), static_cast<std::size_t>(calls));
}

TEST(Signature, DescribeNamesOpDtypeShapeAndAlgorithm) {
  const std::string d = tpcoll::describe(base());
  EXPECT_TRUE(message_has(d, {"all_gather", "bfloat16", "[4, 6, 10]", "dim 1", "oneshot"})) << d;

  const std::int64_t one[] = {1024};
  const CallSignature r = tpcoll::make_signature(
      tpcoll::validate_plan_request(TPCOLL_OP_ALL_REDUCE, TPCOLL_FLOAT32, 1, one, 0), TPCOLL_ALGO_TWOSHOT, 1);
  EXPECT_EQ(tpcoll::describe(r), "all_reduce(float32, shape [1024]) by twoshot");

  const std::int64_t fused[] = {3, 8};
  tpcoll::Call call = tpcoll::validate_plan_request(TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM, TPCOLL_FLOAT16, 2, fused, 0);
  call.eps = 0.5f;
  call.has_residual = true;
  const std::string f = tpcoll::describe(tpcoll::make_signature(call, TPCOLL_ALGO_UNFUSED, 0));
  EXPECT_TRUE(message_has(f, {"fused_allreduce_residual_rmsnorm", "float16", "[3, 8]", "residual", "eps 0.5",
                              "unfused"}))
      << f;
  // describe(Call) agrees on the op, dtype and shape.
  EXPECT_TRUE(message_has(tpcoll::describe(call), {"fused_allreduce_residual_rmsnorm", "float16", "[3, 8]"}));
}

TEST(Signature, DescribeSurvivesAGarbledSignature) {
  CallSignature s = base();
  s.ndim = 1000;  // as read from a corrupt peer: must not read past shape[]
  s.op = 99;
  s.dtype = 77;
  const std::string d = tpcoll::describe(s);
  EXPECT_FALSE(d.empty());
  EXPECT_TRUE(message_has(d, {"unknown"})) << d;
}

TEST(Signature, FailMismatchNamesBothRanksAndCalls) {
  const CallSignature mine = base();
  CallSignature theirs = mine;
  theirs.shape[1] = 7;
  theirs.count = 280;
  EXPECT_TRUE(throws_error([&] { tpcoll::fail_mismatch(2, mine, 5, theirs); }, TPCOLL_MISMATCH,
                           {"rank 2", "rank 5", "[4, 6, 10]", "[4, 7, 10]"}));
}

}  // namespace
