// make_plan (src/core/plan.hpp) and the tuning table (tune_table.hpp): a pure
// function of the call and the context, so every rank computes the same plan.
#include "core/host_cpu.hpp"
#include "core/plan.hpp"
#include "core/plan_cache.hpp"
#include "core/tune_table.hpp"
#include "core/validate.hpp"

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace {

constexpr std::size_t kMiB = 1024 * 1024;

tpcoll::Call reduce_call(std::size_t count, tpcoll_dtype_t dtype = TPCOLL_FLOAT32) {
  const std::int64_t shape[] = {static_cast<std::int64_t>(count)};
  return tpcoll::validate_plan_request(TPCOLL_OP_ALL_REDUCE, dtype, 1, shape, 0);
}

tpcoll::Call gather_call(std::initializer_list<std::int64_t> shape, int dim, tpcoll_dtype_t dtype = TPCOLL_FLOAT32) {
  return tpcoll::validate_plan_request(TPCOLL_OP_ALL_GATHER, dtype, static_cast<int>(shape.size()), shape.begin(),
                                       dim);
}

tpcoll::Call fused_call(std::int64_t tokens, std::int64_t hidden, tpcoll_dtype_t dtype = TPCOLL_FLOAT32) {
  const std::int64_t shape[] = {tokens, hidden};
  return tpcoll::validate_plan_request(TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM, dtype, 2, shape, 0);
}

// A fixed table, so that these expectations do not move when the built-in
// table is re-measured: all-reduce one-shot up to 32 KiB per rank (bfloat16:
// up to 1 KiB), two-shot above; all-gather one-shot; fused one-shot up to
// 32 KiB, two-shot above.
constexpr std::size_t kAnyBytes = std::numeric_limits<std::size_t>::max();
constexpr std::array kTestRows{
    tpcoll::TableRow{TPCOLL_OP_ALL_REDUCE, TPCOLL_BFLOAT16, 1, 64, 1024, TPCOLL_ALGO_ONESHOT},
    tpcoll::TableRow{TPCOLL_OP_ALL_REDUCE, TPCOLL_BFLOAT16, 1, 64, kAnyBytes, TPCOLL_ALGO_TWOSHOT},
    tpcoll::TableRow{TPCOLL_OP_ALL_REDUCE, tpcoll::kAnyDtype, 1, 64, 32 * 1024, TPCOLL_ALGO_ONESHOT},
    tpcoll::TableRow{TPCOLL_OP_ALL_REDUCE, tpcoll::kAnyDtype, 1, 64, kAnyBytes, TPCOLL_ALGO_TWOSHOT},
    tpcoll::TableRow{TPCOLL_OP_ALL_GATHER, tpcoll::kAnyDtype, 1, 64, kAnyBytes, TPCOLL_ALGO_ONESHOT},
    tpcoll::TableRow{TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM, tpcoll::kAnyDtype, 1, 64, 32 * 1024, TPCOLL_ALGO_ONESHOT},
    tpcoll::TableRow{TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM, tpcoll::kAnyDtype, 1, 64, kAnyBytes, TPCOLL_ALGO_TWOSHOT},
};
const tpcoll::TuneTable kTestTable{"test-table", "plan_test.cpp", kTestRows};

tpcoll::PlanContext context(int world = 4, std::size_t staging = kMiB) {
  tpcoll::PlanContext c;
  c.world = world;
  c.staging_bytes = staging;
  c.table = &kTestTable;
  return c;
}

bool same_plan(const tpcoll::Plan& a, const tpcoll::Plan& b) {
  return a.algo == b.algo && std::strcmp(a.backend, b.backend) == 0 && a.chunk_bytes == b.chunk_bytes &&
         a.steps == b.steps && a.reason == b.reason;
}

TEST(Plan, DisabledTakesTheFallback) {
  auto ctx = context();
  ctx.disabled = true;
  ctx.forced = TPCOLL_ALGO_TWOSHOT;  // TPCOLL_DISABLE wins over a forced algorithm
  for (const tpcoll::Call& call : {reduce_call(1000), gather_call({3, 5}, 1), fused_call(4, 64)}) {
    const tpcoll::Plan p = tpcoll::make_plan(call, ctx, true);
    EXPECT_EQ(p.algo, TPCOLL_ALGO_FALLBACK);
    EXPECT_STREQ(p.backend, tpcoll::kFallbackBackend);
    EXPECT_EQ(p.steps, 1u);
    EXPECT_EQ(p.chunk_bytes, call.bytes);
    EXPECT_NE(p.reason.find("TPCOLL_DISABLE"), std::string::npos) << p.reason;
  }
}

TEST(Plan, FastPathUnavailableTakesTheFallbackWithTheReason) {
  auto ctx = context();
  ctx.fast_available = false;
  ctx.fast_unavailable_reason = "shared memory unavailable: /dev/shm is full";
  ctx.forced = TPCOLL_ALGO_ONESHOT;
  const tpcoll::Plan p = tpcoll::make_plan(reduce_call(1 << 20), ctx, true);
  EXPECT_EQ(p.algo, TPCOLL_ALGO_FALLBACK);
  EXPECT_STREQ(p.backend, "cpu-fallback");
  EXPECT_EQ(p.reason, ctx.fast_unavailable_reason);
  EXPECT_EQ(p.steps, 1u);
}

TEST(Plan, RowsPastTheFusedOneShotsLimitGoUnfused) {
  auto ctx = context();
  ctx.fused_max_hidden = 4096;
  ctx.forced = TPCOLL_ALGO_ONESHOT;
  const tpcoll::Plan longer = tpcoll::make_plan(fused_call(4, 8192), ctx, true);
  EXPECT_EQ(longer.algo, TPCOLL_ALGO_UNFUSED);
  EXPECT_NE(longer.reason.find("4096"), std::string::npos) << longer.reason;
  EXPECT_EQ(tpcoll::make_plan(fused_call(1, 4096), ctx, false).algo, TPCOLL_ALGO_ONESHOT);
  ctx.forced = TPCOLL_ALGO_TWOSHOT;  // the two-shot takes long rows
  EXPECT_EQ(tpcoll::make_plan(fused_call(4, 8192), ctx, false).algo, TPCOLL_ALGO_TWOSHOT);
  const tpcoll::Plan odd = tpcoll::make_plan(fused_call(4, 100), ctx, true);  // not whole groups of 8
  EXPECT_EQ(odd.algo, TPCOLL_ALGO_UNFUSED);
  EXPECT_NE(odd.reason.find("8-element groups"), std::string::npos) << odd.reason;
}

TEST(Plan, TheFallbackIsTheEngineTheBackendNames) {
  auto ctx = context();
  ctx.fast_backend = tpcoll::kCudaBackend;
  ctx.fallback_backend = tpcoll::kNcclBackend;
  ctx.fast_available = false;
  ctx.fast_unavailable_reason = "16 ranks: tpcoll's kernels serve at most 8, NCCL serves the rest";
  const tpcoll::Plan p = tpcoll::make_plan(reduce_call(4096), ctx, true);
  EXPECT_EQ(p.algo, TPCOLL_ALGO_FALLBACK);
  EXPECT_STREQ(p.backend, "nccl");
  EXPECT_EQ(p.reason, ctx.fast_unavailable_reason);
}

TEST(Plan, TableChoiceWithoutForcing) {
  const auto ctx = context();
  // all_reduce: one-shot up to 32 KiB per rank (inclusive), two-shot above.
  EXPECT_EQ(tpcoll::make_plan(reduce_call(8192), ctx, false).algo, TPCOLL_ALGO_ONESHOT);   // 32768 B
  EXPECT_EQ(tpcoll::make_plan(reduce_call(8193), ctx, false).algo, TPCOLL_ALGO_TWOSHOT);   // 32772 B
  // Rows may be per dtype: bfloat16 has its own crossover.
  EXPECT_EQ(tpcoll::make_plan(reduce_call(512, TPCOLL_BFLOAT16), ctx, false).algo, TPCOLL_ALGO_ONESHOT);
  EXPECT_EQ(tpcoll::make_plan(reduce_call(513, TPCOLL_BFLOAT16), ctx, false).algo, TPCOLL_ALGO_TWOSHOT);
  EXPECT_EQ(tpcoll::make_plan(reduce_call(513, TPCOLL_FLOAT16), ctx, false).algo, TPCOLL_ALGO_ONESHOT);
  EXPECT_EQ(tpcoll::make_plan(gather_call({1 << 22}, 0), ctx, false).algo, TPCOLL_ALGO_ONESHOT);
  EXPECT_EQ(tpcoll::make_plan(fused_call(8, 1024), ctx, false).algo, TPCOLL_ALGO_ONESHOT);   // 32768 B
  EXPECT_EQ(tpcoll::make_plan(fused_call(9, 1024), ctx, false).algo, TPCOLL_ALGO_TWOSHOT);
  const tpcoll::Plan p = tpcoll::make_plan(reduce_call(8193), ctx, true);
  EXPECT_STREQ(p.backend, "cpu-shm");
  EXPECT_TRUE(tpcoll::test::message_has(p.reason, {"twoshot: table test-table", "32772 B of float32",
                                                    "lies above the 32768 B grid point"}));
  const tpcoll::Plan first = tpcoll::make_plan(reduce_call(100, TPCOLL_BFLOAT16), ctx, true);
  EXPECT_TRUE(tpcoll::test::message_has(first.reason, {"oneshot: table test-table", "at or below the first grid "
                                                       "point, 1024 B", "bfloat16 row"}));
}

TEST(Plan, ForcedAlgorithmIsHonouredWhereItApplies) {
  auto ctx = context();
  for (const tpcoll_algo_t algo : {TPCOLL_ALGO_ONESHOT, TPCOLL_ALGO_TWOSHOT, TPCOLL_ALGO_FALLBACK}) {
    ctx.forced = algo;
    for (const std::size_t count : {std::size_t{1}, std::size_t{100}, std::size_t{1} << 20}) {
      const tpcoll::Plan p = tpcoll::make_plan(reduce_call(count), ctx, true);
      EXPECT_EQ(p.algo, algo) << count;
      EXPECT_NE(p.reason.find(std::string("forced to ") + tpcoll::algo_name(algo)), std::string::npos) << p.reason;
    }
  }
  for (const tpcoll_algo_t algo :
       {TPCOLL_ALGO_ONESHOT, TPCOLL_ALGO_TWOSHOT, TPCOLL_ALGO_UNFUSED, TPCOLL_ALGO_FALLBACK}) {
    ctx.forced = algo;
    EXPECT_EQ(tpcoll::make_plan(fused_call(64, 4096), ctx, false).algo, algo);
    EXPECT_EQ(tpcoll::make_plan(fused_call(1, 8, TPCOLL_FLOAT16), ctx, false).algo, algo);
  }
  ctx.forced = TPCOLL_ALGO_FALLBACK;
  EXPECT_EQ(tpcoll::make_plan(gather_call({3, 5, 7}, 2), ctx, false).algo, TPCOLL_ALGO_FALLBACK);
}

TEST(Plan, ForcedTwoShotOnAllGatherFallsBackToTheTableWithAnExplanation) {
  auto ctx = context();
  ctx.forced = TPCOLL_ALGO_TWOSHOT;
  const tpcoll::Plan p = tpcoll::make_plan(gather_call({64, 1024}, 1), ctx, true);
  EXPECT_EQ(p.algo, TPCOLL_ALGO_ONESHOT);  // the table's choice
  EXPECT_STREQ(p.backend, "cpu-shm");
  EXPECT_NE(p.reason.find("twoshot does not apply to all_gather"), std::string::npos) << p.reason;
  EXPECT_NE(p.reason.find("test-table"), std::string::npos) << p.reason;

  // unfused applies to the fused op only.
  ctx.forced = TPCOLL_ALGO_UNFUSED;
  const tpcoll::Plan r = tpcoll::make_plan(reduce_call(1 << 20), ctx, true);
  EXPECT_EQ(r.algo, TPCOLL_ALGO_TWOSHOT);
  EXPECT_NE(r.reason.find("unfused does not apply to all_reduce"), std::string::npos) << r.reason;
  EXPECT_EQ(tpcoll::make_plan(gather_call({5}, 0), ctx, false).algo, TPCOLL_ALGO_ONESHOT);
}

TEST(Plan, FusedWithFewerRowsThanRanksFollowsTheTable) {
  const auto ctx = context(4, kMiB);
  // 3 rows of 4096 floats = 48 KiB: the table says two-shot, and one rank then reduces no row.
  const tpcoll::Plan p = tpcoll::make_plan(fused_call(3, 4096), ctx, true);
  EXPECT_EQ(p.algo, TPCOLL_ALGO_TWOSHOT);
  EXPECT_NE(p.reason.find("test-table"), std::string::npos) << p.reason;
  EXPECT_EQ(tpcoll::make_plan(fused_call(4, 4096), ctx, false).algo, TPCOLL_ALGO_TWOSHOT);
}

TEST(Plan, FusedRowLargerThanHalfTheStagingIsUnfused) {
  const std::size_t staging = 64 * 1024;
  auto ctx = context(2, staging);
  // 8192 floats = 32768 B = exactly half: still fused. 8193 floats: unfused.
  EXPECT_EQ(tpcoll::make_plan(fused_call(2, 8192), ctx, false).algo, TPCOLL_ALGO_TWOSHOT);
  const tpcoll::Plan p = tpcoll::make_plan(fused_call(2, 8193), ctx, true);
  EXPECT_EQ(p.algo, TPCOLL_ALGO_UNFUSED);
  EXPECT_NE(p.reason.find("32772"), std::string::npos) << p.reason;
  EXPECT_NE(p.reason.find("half"), std::string::npos) << p.reason;
  // Also when one-shot or two-shot is forced; a forced fallback still wins.
  for (const tpcoll_algo_t algo : {TPCOLL_ALGO_ONESHOT, TPCOLL_ALGO_TWOSHOT, TPCOLL_ALGO_UNFUSED}) {
    ctx.forced = algo;
    EXPECT_EQ(tpcoll::make_plan(fused_call(2, 8193), ctx, false).algo, TPCOLL_ALGO_UNFUSED);
  }
  ctx.forced = TPCOLL_ALGO_FALLBACK;
  EXPECT_EQ(tpcoll::make_plan(fused_call(2, 8193), ctx, false).algo, TPCOLL_ALGO_FALLBACK);
  // The unfused path chunks like an all-reduce.
  ctx.forced.reset();
  const tpcoll::Plan u = tpcoll::make_plan(fused_call(3, 20000), ctx, false);
  EXPECT_EQ(u.algo, TPCOLL_ALGO_UNFUSED);
  EXPECT_EQ(u.chunk_bytes, staging);
  EXPECT_EQ(u.steps, (3u * 20000 * 4 + staging - 1) / staging);
}

TEST(Plan, ChunkArithmetic) {
  auto ctx = context(2, kMiB);
  // 3 MiB of floats with a 1 MiB staging buffer: three full chunks.
  const tpcoll::Plan a = tpcoll::make_plan(reduce_call(3 * kMiB / 4), ctx, false);
  EXPECT_EQ(a.algo, TPCOLL_ALGO_TWOSHOT);
  EXPECT_EQ(a.chunk_bytes, kMiB);
  EXPECT_EQ(a.steps, 3u);
  // One element more: a fourth, short chunk.
  EXPECT_EQ(tpcoll::make_plan(reduce_call(3 * kMiB / 4 + 1), ctx, false).steps, 4u);
  // Smaller than the buffer: one chunk of exactly the message.
  const tpcoll::Plan small = tpcoll::make_plan(reduce_call(7, TPCOLL_FLOAT16), ctx, false);
  EXPECT_EQ(small.chunk_bytes, 14u);
  EXPECT_EQ(small.steps, 1u);
  // Chunks are 64-byte multiples holding whole elements, whatever the staging size.
  ctx.staging_bytes = 1000;
  const tpcoll::Plan odd = tpcoll::make_plan(reduce_call(1000), ctx, false);
  EXPECT_EQ(odd.chunk_bytes, 960u);
  EXPECT_EQ(odd.steps, 5u);  // 4000 B in 960 B chunks
  const tpcoll::Plan gather = tpcoll::make_plan(gather_call({1000}, 0, TPCOLL_INT64), ctx, false);
  EXPECT_EQ(gather.chunk_bytes % 64, 0u);
  EXPECT_EQ(gather.chunk_bytes % 8, 0u);
  EXPECT_EQ(gather.steps, (8000 + gather.chunk_bytes - 1) / gather.chunk_bytes);
}

TEST(Plan, FusedChunksAreWholeRows) {
  auto ctx = context(2, 64 * 1024);
  // fp16 rows of 1000 elements = 2000 B; half the buffer holds 16 whole rows.
  const tpcoll::Plan p = tpcoll::make_plan(fused_call(40, 1000, TPCOLL_FLOAT16), ctx, false);
  EXPECT_EQ(p.chunk_bytes, 16u * 2000);
  EXPECT_EQ(p.steps, 3u);  // 16 + 16 + 8 rows
  for (const std::int64_t hidden : {7, 8, 2880, 4096, 5000}) {
    for (const std::int64_t tokens : {1, 3, 64}) {
      for (const tpcoll_algo_t algo : {TPCOLL_ALGO_ONESHOT, TPCOLL_ALGO_TWOSHOT}) {
        ctx.forced = algo;
        const tpcoll::Call call = fused_call(tokens, hidden, TPCOLL_BFLOAT16);
        const tpcoll::Plan q = tpcoll::make_plan(call, ctx, false);
        ASSERT_EQ(q.algo, algo);
        EXPECT_EQ(q.chunk_bytes % call.inner_bytes, 0u) << tokens << "x" << hidden;
        EXPECT_LE(q.chunk_bytes, ctx.staging_bytes / 2);
        EXPECT_GE(q.chunk_bytes, call.inner_bytes);
        EXPECT_EQ(q.steps, (call.bytes + q.chunk_bytes - 1) / q.chunk_bytes);
      }
    }
  }
}

TEST(Plan, IsDeterministic) {
  auto ctx = context(8, 64 * 1024);
  const std::array calls{reduce_call(1), reduce_call(300000, TPCOLL_BFLOAT16), gather_call({3, 5, 7}, 1, TPCOLL_INT8),
                         fused_call(64, 5000, TPCOLL_FLOAT16), fused_call(3, 20000)};
  for (const std::optional<tpcoll_algo_t> forced :
       {std::optional<tpcoll_algo_t>{}, std::optional(TPCOLL_ALGO_ONESHOT), std::optional(TPCOLL_ALGO_TWOSHOT),
        std::optional(TPCOLL_ALGO_UNFUSED), std::optional(TPCOLL_ALGO_FALLBACK)}) {
    ctx.forced = forced;
    for (const tpcoll::Call& call : calls) {
      for (const bool explain : {false, true}) {
        const tpcoll::Plan a = tpcoll::make_plan(call, ctx, explain);
        const tpcoll::PlanContext copy = ctx;  // a different but equal context (another rank's)
        const tpcoll::Plan b = tpcoll::make_plan(call, copy, explain);
        EXPECT_TRUE(same_plan(a, b)) << tpcoll::describe(call);
        EXPECT_EQ(a.reason.empty(), !explain) << tpcoll::describe(call) << ": \"" << a.reason << "\"";
        EXPECT_GE(a.steps, 1u);
        EXPECT_GE(a.chunk_bytes * a.steps, call.bytes);
        EXPECT_LT(a.chunk_bytes * (a.steps - 1), call.bytes);
      }
    }
  }
}

TEST(Plan, NoTableMeansOneShot) {
  auto ctx = context();
  ctx.table = nullptr;
  const tpcoll::Plan p = tpcoll::make_plan(reduce_call(1 << 20), ctx, true);
  EXPECT_EQ(p.algo, TPCOLL_ALGO_ONESHOT);
  EXPECT_NE(p.reason.find("no table row"), std::string::npos) << p.reason;
  // The built-in table covers worlds 1..64 only.
  auto big = context(65);
  EXPECT_EQ(tpcoll::make_plan(reduce_call(1 << 20), big, false).algo, TPCOLL_ALGO_ONESHOT);
}

TEST(TuneTable, LookupTakesTheFirstMatchingRow) {
  constexpr std::array rows{
      tpcoll::TableRow{TPCOLL_OP_ALL_REDUCE, tpcoll::kAnyDtype, 2, 4, 100, TPCOLL_ALGO_FALLBACK},
      tpcoll::TableRow{TPCOLL_OP_ALL_REDUCE, TPCOLL_FLOAT16, 1, 8, 1000, TPCOLL_ALGO_ONESHOT},
      tpcoll::TableRow{TPCOLL_OP_ALL_REDUCE, tpcoll::kAnyDtype, 1, 8, 1000, TPCOLL_ALGO_TWOSHOT},
      tpcoll::TableRow{TPCOLL_OP_ALL_REDUCE, tpcoll::kAnyDtype, 1, 8, 500, TPCOLL_ALGO_ONESHOT},  // shadowed
      tpcoll::TableRow{TPCOLL_OP_ALL_GATHER, tpcoll::kAnyDtype, 1, 8, kAnyBytes, TPCOLL_ALGO_ONESHOT},
  };
  const tpcoll::TuneTable table{"lookup-table", "tests", rows};
  const auto at = [&](tpcoll_op_t op, int world, std::size_t bytes, tpcoll_dtype_t dtype = TPCOLL_FLOAT32) {
    return tpcoll::lookup(table, op, dtype, world, bytes);
  };
  ASSERT_TRUE(at(TPCOLL_OP_ALL_REDUCE, 2, 100));
  EXPECT_EQ(at(TPCOLL_OP_ALL_REDUCE, 2, 100)->algo, TPCOLL_ALGO_FALLBACK);  // max_bytes is inclusive
  EXPECT_EQ(at(TPCOLL_OP_ALL_REDUCE, 2, 100)->row, &rows[0]);
  EXPECT_EQ(at(TPCOLL_OP_ALL_REDUCE, 2, 101)->algo, TPCOLL_ALGO_TWOSHOT);
  EXPECT_EQ(at(TPCOLL_OP_ALL_REDUCE, 2, 101, TPCOLL_FLOAT16)->algo, TPCOLL_ALGO_ONESHOT);  // dtype row
  EXPECT_EQ(at(TPCOLL_OP_ALL_REDUCE, 2, 101, TPCOLL_BFLOAT16)->algo, TPCOLL_ALGO_TWOSHOT);
  EXPECT_EQ(at(TPCOLL_OP_ALL_REDUCE, 1, 50)->algo, TPCOLL_ALGO_TWOSHOT);  // below min_world of row 0
  EXPECT_EQ(at(TPCOLL_OP_ALL_REDUCE, 5, 50)->algo, TPCOLL_ALGO_TWOSHOT);  // above max_world of row 0
  EXPECT_EQ(at(TPCOLL_OP_ALL_REDUCE, 4, 400)->row, &rows[2]);
  EXPECT_FALSE(at(TPCOLL_OP_ALL_REDUCE, 4, 1001));
  EXPECT_FALSE(at(TPCOLL_OP_ALL_REDUCE, 9, 10));
  EXPECT_FALSE(at(TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM, 2, 10));
  EXPECT_EQ(at(TPCOLL_OP_ALL_GATHER, 8, std::size_t{1} << 50)->algo, TPCOLL_ALGO_ONESHOT);

  const auto choice = *at(TPCOLL_OP_ALL_REDUCE, 3, 77);
  const std::string why = tpcoll::explain(table, choice, TPCOLL_FLOAT32, 3, 77);
  EXPECT_TRUE(tpcoll::test::message_has(why, {"fallback: table lookup-table", "77 B", "world 3",
                                                "at or below the first grid point, 100 B"}));
  // The grid points around a size are the bounds of the rows before it that serve the same call.
  const std::string between = tpcoll::explain(table, *at(TPCOLL_OP_ALL_REDUCE, 2, 400), TPCOLL_FLOAT32, 2, 400);
  EXPECT_TRUE(tpcoll::test::message_has(between, {"twoshot", "lies between the 100 B and 1000 B grid points"}));
  const std::string other_world = tpcoll::explain(table, *at(TPCOLL_OP_ALL_REDUCE, 5, 400), TPCOLL_FLOAT32, 5, 400);
  EXPECT_TRUE(tpcoll::test::message_has(other_world, {"at or below the first grid point, 1000 B"}));
  const std::string any = tpcoll::explain(table, *at(TPCOLL_OP_ALL_GATHER, 2, 5), TPCOLL_INT8, 2, 5);
  EXPECT_TRUE(tpcoll::test::message_has(any, {"any size"})) << any;

  // make_plan reads whatever table the context names.
  auto ctx = context(3);
  ctx.table = &table;
  EXPECT_EQ(tpcoll::make_plan(reduce_call(25), ctx, false).algo, TPCOLL_ALGO_FALLBACK);  // 100 B
  EXPECT_EQ(tpcoll::make_plan(reduce_call(26), ctx, false).algo, TPCOLL_ALGO_TWOSHOT);
  EXPECT_EQ(tpcoll::make_plan(reduce_call(1000), ctx, false).algo, TPCOLL_ALGO_ONESHOT);  // no row: default
}

TEST(TuneTable, AFusedCallTakesTheRowOfItsHiddenAndPlanNamesIt) {
  // World 2: float32 measured at hidden 4096 (one-shot up to 32 KiB, then
  // two-shot) and 8192 (unfused); world 3 and up: one row for every hidden.
  constexpr std::array rows{
      tpcoll::TableRow{TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM, TPCOLL_FLOAT32, 1, 2, 32768, TPCOLL_ALGO_ONESHOT, 4096},
      tpcoll::TableRow{TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM, TPCOLL_FLOAT32, 1, 2, kAnyBytes, TPCOLL_ALGO_TWOSHOT, 4096},
      tpcoll::TableRow{TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM, TPCOLL_FLOAT32, 1, 2, kAnyBytes, TPCOLL_ALGO_UNFUSED, 8192},
      tpcoll::TableRow{TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM, tpcoll::kAnyDtype, 1, 64, kAnyBytes, TPCOLL_ALGO_ONESHOT},
  };
  const tpcoll::TuneTable table{"grid-table", "tests", rows};
  auto ctx = context(2);
  ctx.table = &table;
  const auto plan = [&](std::int64_t tokens, std::int64_t hidden, tpcoll_dtype_t dtype = TPCOLL_FLOAT32) {
    return tpcoll::make_plan(fused_call(tokens, hidden, dtype), ctx, true);
  };
  EXPECT_EQ(plan(2, 4096).algo, TPCOLL_ALGO_ONESHOT);  // 32 KiB
  EXPECT_EQ(plan(3, 4096).algo, TPCOLL_ALGO_TWOSHOT);
  EXPECT_EQ(plan(2, 2880).algo, TPCOLL_ALGO_ONESHOT);  // the 4096 row
  EXPECT_EQ(plan(2, 7168).algo, TPCOLL_ALGO_UNFUSED);  // the 8192 row
  EXPECT_EQ(plan(2, 16384).algo, TPCOLL_ALGO_UNFUSED);  // above all: the largest
  EXPECT_TRUE(tpcoll::test::message_has(plan(2, 7168).reason,
                                        {"unfused: table grid-table, hidden 8192 row (the next measured above 7168)",
                                         "57344 B of float32 per rank at world 2"}));
  EXPECT_TRUE(tpcoll::test::message_has(plan(3, 4096).reason,
                                        {"hidden 4096 row, 49152 B", "lies above the 32768 B grid point"}));
  // Rows for every hidden serve where no hidden was measured.
  EXPECT_EQ(plan(2, 7168, TPCOLL_BFLOAT16).algo, TPCOLL_ALGO_ONESHOT);
  ctx.world = 4;
  EXPECT_EQ(plan(4, 7168).algo, TPCOLL_ALGO_ONESHOT);
  EXPECT_FALSE(tpcoll::test::message_has(plan(4, 7168).reason, {"hidden"})) << plan(4, 7168).reason;
}

class BuiltinTable : public ::testing::TestWithParam<const tpcoll::TuneTable*> {};

TEST_P(BuiltinTable, CoversEveryOpDtypeAndWorld) {
  // The figures are measurements and may change; these properties may not.
  const tpcoll::TuneTable& t = *GetParam();
  EXPECT_STRNE(t.name, "");
  EXPECT_STRNE(t.source, "");
  for (const tpcoll_op_t op : {TPCOLL_OP_ALL_REDUCE, TPCOLL_OP_ALL_GATHER, TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM}) {
    for (int d = TPCOLL_FLOAT32; d <= TPCOLL_INT64; ++d) {
      const auto dtype = static_cast<tpcoll_dtype_t>(d);
      if (op != TPCOLL_OP_ALL_GATHER && d > TPCOLL_BFLOAT16) continue;  // not reducible
      for (int world = 1; world <= TPCOLL_MAX_RANKS; ++world) {
        for (const std::size_t bytes : {std::size_t{1}, std::size_t{32768}, std::size_t{32769}, std::size_t{1} << 40}) {
          // The fused op's rows may be per measured hidden: a call has one.
          const std::size_t hidden = op == TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM ? 4096 : tpcoll::kAnyHidden;
          const auto choice = tpcoll::lookup(t, op, dtype, world, bytes, hidden);
          ASSERT_TRUE(choice) << tpcoll::op_name(op) << " " << tpcoll_dtype_name(dtype) << " world " << world;
          // The table only names algorithms that apply to the op.
          if (op == TPCOLL_OP_ALL_GATHER) { EXPECT_TRUE(choice->algo == TPCOLL_ALGO_ONESHOT || choice->algo == TPCOLL_ALGO_FALLBACK); }
          if (op != TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM) { EXPECT_NE(choice->algo, TPCOLL_ALGO_UNFUSED); }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Measured, BuiltinTable,
                         ::testing::Values(&tpcoll::builtin_cpu_table(tpcoll::CpuVendor::kIntel),
                                           &tpcoll::builtin_cpu_table(tpcoll::CpuVendor::kAmd),
                                           &tpcoll::builtin_cuda_table(tpcoll::GpuModel::kH100),
                                           &tpcoll::builtin_cuda_table(tpcoll::GpuModel::kH200)),
                         [](const ::testing::TestParamInfo<const tpcoll::TuneTable*>& info) {
                           std::string name = info.param->name;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

TEST(TuneTable, CpuBuiltinsAreTheVendorsOwn) {
  EXPECT_STREQ(tpcoll::builtin_cpu_table(tpcoll::CpuVendor::kIntel).name, "cpu-builtin-intel");
  EXPECT_STREQ(tpcoll::builtin_cpu_table(tpcoll::CpuVendor::kAmd).name, "cpu-builtin-amd");
  const tpcoll::CpuVendor here = tpcoll::cpu_is_amd() ? tpcoll::CpuVendor::kAmd : tpcoll::CpuVendor::kIntel;
  EXPECT_EQ(&tpcoll::builtin_cpu_table(), &tpcoll::builtin_cpu_table(here));
}

TEST(TuneTable, CudaBuiltinsAreTheModelsOwnAndTheH100sElsewhere) {
  // cudaDeviceProp::name as the drivers report them.
  EXPECT_EQ(tpcoll::gpu_model("NVIDIA H200"), tpcoll::GpuModel::kH200);
  EXPECT_EQ(tpcoll::gpu_model("NVIDIA H200 NVL"), tpcoll::GpuModel::kH200);
  EXPECT_EQ(tpcoll::gpu_model("NVIDIA H100 80GB HBM3"), tpcoll::GpuModel::kH100);
  EXPECT_EQ(tpcoll::gpu_model("NVIDIA A100-SXM4-80GB"), tpcoll::GpuModel::kH100);
  EXPECT_STREQ(tpcoll::builtin_cuda_table(tpcoll::GpuModel::kH100).name, "cuda-builtin-h100");
  EXPECT_STREQ(tpcoll::builtin_cuda_table(tpcoll::GpuModel::kH200).name, "cuda-builtin-h200");
  // The two were measured apart and differ where the H200's unfused path
  // wins (bench/results/h200-shared-x2-tune.json): fp32, 512 x 8192.
  const auto fused_fp32 = [](tpcoll::GpuModel m) {
    return tpcoll::lookup(tpcoll::builtin_cuda_table(m), TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM, TPCOLL_FLOAT32, 2,
                          512 * 8192 * 4, 8192)
        ->algo;
  };
  EXPECT_NE(fused_fp32(tpcoll::GpuModel::kH100), fused_fp32(tpcoll::GpuModel::kH200));
}

}  // namespace

namespace {

// The scatter ops against every built-in table: one algorithm each, pieces of
// every share per step that are 64-byte multiples and fit the staging buffer.
TEST(PlanScatter, OneAlgorithmEachAndWholePiecesPerStep) {
  EXPECT_TRUE(tpcoll::algo_applies(TPCOLL_OP_REDUCE_SCATTER, TPCOLL_ALGO_ONESHOT));
  EXPECT_FALSE(tpcoll::algo_applies(TPCOLL_OP_REDUCE_SCATTER, TPCOLL_ALGO_TWOSHOT));
  EXPECT_FALSE(tpcoll::algo_applies(TPCOLL_OP_REDUCE_SCATTER, TPCOLL_ALGO_UNFUSED));
  EXPECT_TRUE(tpcoll::algo_applies(TPCOLL_OP_FUSED_REDUCE_SCATTER_RMSNORM, TPCOLL_ALGO_UNFUSED));
  EXPECT_FALSE(tpcoll::algo_applies(TPCOLL_OP_FUSED_REDUCE_SCATTER_RMSNORM, TPCOLL_ALGO_ONESHOT));
  EXPECT_TRUE(tpcoll::algo_applies(TPCOLL_OP_FUSED_REDUCE_SCATTER_RMSNORM, TPCOLL_ALGO_FALLBACK));

  const std::int64_t count[] = {3 * 1000000};
  const tpcoll::Call scatter = tpcoll::validate_plan_request(TPCOLL_OP_REDUCE_SCATTER, TPCOLL_BFLOAT16, 1, count, 0);
  const std::int64_t rows[] = {6, 4096};
  const tpcoll::Call fused =
      tpcoll::validate_plan_request(TPCOLL_OP_FUSED_REDUCE_SCATTER_RMSNORM, TPCOLL_FLOAT32, 2, rows, 0);
  for (const tpcoll::TuneTable* table : {&tpcoll::builtin_cpu_table(tpcoll::CpuVendor::kIntel),
                                          &tpcoll::builtin_cpu_table(tpcoll::CpuVendor::kAmd),
                                          &tpcoll::builtin_cuda_table(tpcoll::GpuModel::kH100),
                                          &tpcoll::builtin_cuda_table(tpcoll::GpuModel::kH200)}) {
    tpcoll::PlanContext c = context(3, 65536);
    c.table = table;
    const tpcoll::Plan p = tpcoll::make_plan(scatter, c, true);
    EXPECT_EQ(p.algo, TPCOLL_ALGO_ONESHOT) << table->name << ": " << p.reason;
    // 65536 / 3 rounded down to 64 bytes: 21824 B of each share per step.
    EXPECT_EQ(p.chunk_bytes, 3u * 21824) << table->name;
    EXPECT_EQ(p.steps, (2000000u + 21823) / 21824) << table->name;  // a share is 2,000,000 B
    EXPECT_EQ(tpcoll::make_plan(fused, c, true).algo, TPCOLL_ALGO_UNFUSED) << table->name;
    c.forced = TPCOLL_ALGO_TWOSHOT;  // does not apply: the table decides
    EXPECT_EQ(tpcoll::make_plan(scatter, c, false).algo, TPCOLL_ALGO_ONESHOT) << table->name;
    c.forced = TPCOLL_ALGO_FALLBACK;
    EXPECT_EQ(tpcoll::make_plan(fused, c, false).algo, TPCOLL_ALGO_FALLBACK) << table->name;
  }
}

// The cache serves each call the plan make_plan gives it, under each forcing
// in turn, while more keys than it holds come and go: calls of one size that
// plan differently (fused rows that do or do not fit the staging buffer),
// sizes on both sides of the table's crossovers.
TEST(PlanCache, GivesEveryCallMakePlansPlan) {
  auto ctx = context(4, kMiB);
  ctx.fused_max_hidden = 4096;
  const std::vector<tpcoll::Call> calls{
      reduce_call(8192),           reduce_call(8193),          reduce_call(512, TPCOLL_BFLOAT16),
      reduce_call(513, TPCOLL_BFLOAT16), reduce_call(1 << 20), gather_call({64, 32}, 0),
      gather_call({64, 32}, 1),    gather_call({2048}, 0),     fused_call(1, 4096),
      fused_call(2, 2048),         fused_call(4, 8192),        fused_call(4, 100),
      fused_call(1, 262144),       fused_call(4, 65536),       fused_call(9, 1024)};
  const std::optional<tpcoll_algo_t> forcings[] = {std::nullopt, TPCOLL_ALGO_ONESHOT, TPCOLL_ALGO_TWOSHOT,
                                                   TPCOLL_ALGO_UNFUSED, TPCOLL_ALGO_FALLBACK};
  tpcoll::PlanCache cache;
  for (int round = 0; round < 3; ++round)
    for (const tpcoll::Call& call : calls)
      for (const auto& forced : forcings) {
        tpcoll::PlanContext expected_ctx = ctx;
        expected_ctx.forced = forced;
        const tpcoll::Plan expected = tpcoll::make_plan(call, expected_ctx, false);
        // Twice: a miss, then (unless evicted meanwhile) a hit.
        for (int again = 0; again < 2; ++again)
          EXPECT_TRUE(same_plan(cache.plan(call, ctx, forced), expected))
              << tpcoll::describe(call) << " forced " << (forced ? tpcoll::algo_name(*forced) : "no");
      }
}

}  // namespace
