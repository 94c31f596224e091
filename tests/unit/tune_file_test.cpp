// parse_tune_table (src/core/tune_file.hpp): a measured table is read into
// rows that lookup() serves, and a table with any fault is refused whole with
// a message naming the fault.
#include "core/tune_file.hpp"

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <string>

namespace {

const tpcoll::TuneKey kKey{"cpu-shm", "Test CPU 9000", 2, "2 cores", "tpcoll 0.1"};

// all_reduce float32: one-shot at 1 KiB and 64 KiB, two-shot at 1 MiB;
// fused bfloat16: two-shot at its one point.
const std::string kTable = R"({
  "format": "tpcoll-tune/1",
  "key": {"backend": "cpu-shm", "device": "Test CPU 9000", "world": 2, "topology": "2 cores", "version": "tpcoll 0.1"},
  "source": "tune_file_test.cpp",
  "rows": [
    {"op": "all_reduce", "dtype": "float32", "points": [
      {"bytes": 1024, "algo": "oneshot", "us": {"oneshot": 2.0, "twoshot": 3.5}},
      {"bytes": 65536, "algo": "oneshot", "us": {"oneshot": 20.0, "twoshot": 25.0}},
      {"bytes": 1048576, "algo": "twoshot", "us": {"oneshot": 400.0, "twoshot": 300.0}}]},
    {"op": "fused_allreduce_residual_rmsnorm", "dtype": "bfloat16", "points": [
      {"bytes": 4096, "algo": "twoshot", "us": {"oneshot": 9.0, "twoshot": 8.0}}]}
  ]
})";

// The fused op measured at two hidden sizes (2 tokens a point: 4096 x 4 B x 2
// = 32 KiB, 8192 x 4 B x 2 = 64 KiB): one-shot then two-shot at 4096,
// unfused at 8192; float16 has one row for every hidden.
const std::string kHiddenTable = R"({
  "format": "tpcoll-tune/1",
  "key": {"backend": "cpu-shm", "device": "Test CPU 9000", "world": 2, "topology": "2 cores", "version": "tpcoll 0.1"},
  "source": "tune_file_test.cpp",
  "rows": [
    {"op": "fused_allreduce_residual_rmsnorm", "dtype": "float32", "hidden": 4096, "points": [
      {"bytes": 32768, "algo": "oneshot", "us": {"oneshot": 5.0, "twoshot": 6.0, "unfused": 7.0}},
      {"bytes": 131072, "algo": "twoshot", "us": {"oneshot": 9.0, "twoshot": 8.0, "unfused": 10.0}}]},
    {"op": "fused_allreduce_residual_rmsnorm", "dtype": "float32", "hidden": 8192, "points": [
      {"bytes": 65536, "algo": "unfused", "us": {"twoshot": 9.0, "unfused": 7.0}}]},
    {"op": "fused_allreduce_residual_rmsnorm", "dtype": "float16", "points": [
      {"bytes": 4096, "algo": "twoshot", "us": {"oneshot": 9.0, "twoshot": 8.0}}]}
  ]
})";

// `table` with `from` replaced by `to` (which must be there: a test that
// edits nothing would pass for the wrong reason).
std::string edited(const std::string& from, const std::string& to, const std::string& table = kTable) {
  const std::size_t at = table.find(from);
  EXPECT_NE(at, std::string::npos) << "the test table lacks " << from;
  std::string text = table;
  return at == std::string::npos ? text : text.replace(at, from.size(), to);
}

::testing::AssertionResult refused(const std::string& text, std::initializer_list<std::string_view> needles) {
  return tpcoll::test::throws_error([&] { tpcoll::parse_tune_table(text); }, TPCOLL_INVALID_ARGUMENT, needles);
}

TEST(TuneFile, AMeasuredTableBecomesRowsThatLookupServes) {
  const tpcoll::LoadedTable loaded = tpcoll::parse_tune_table(kTable);
  EXPECT_EQ(loaded.key, kKey);
  tpcoll::check_tune_key(loaded.key, kKey);
  EXPECT_EQ(loaded.name, "cpu-shm-Test CPU 9000-x2");
  EXPECT_EQ(loaded.source, "tune_file_test.cpp");
  const tpcoll::TuneTable table = loaded.view();
  const auto algo_at = [&](tpcoll_op_t op, tpcoll_dtype_t dtype, std::size_t bytes) {
    const auto choice = tpcoll::lookup(table, op, dtype, 2, bytes);
    return choice ? static_cast<int>(choice->algo) : -1;
  };
  // A size takes the first grid point at or above it; past the last, the last.
  EXPECT_EQ(algo_at(TPCOLL_OP_ALL_REDUCE, TPCOLL_FLOAT32, 1), TPCOLL_ALGO_ONESHOT);
  EXPECT_EQ(algo_at(TPCOLL_OP_ALL_REDUCE, TPCOLL_FLOAT32, 65536), TPCOLL_ALGO_ONESHOT);
  EXPECT_EQ(algo_at(TPCOLL_OP_ALL_REDUCE, TPCOLL_FLOAT32, 65537), TPCOLL_ALGO_TWOSHOT);
  EXPECT_EQ(algo_at(TPCOLL_OP_ALL_REDUCE, TPCOLL_FLOAT32, std::size_t{1} << 40), TPCOLL_ALGO_TWOSHOT);
  EXPECT_EQ(algo_at(TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM, TPCOLL_BFLOAT16, 64), TPCOLL_ALGO_TWOSHOT);
  // Rows serve their own op, dtype and world only.
  EXPECT_EQ(algo_at(TPCOLL_OP_ALL_REDUCE, TPCOLL_BFLOAT16, 1024), -1);
  EXPECT_FALSE(tpcoll::lookup(table, TPCOLL_OP_ALL_REDUCE, TPCOLL_FLOAT32, 4, 1024));
  EXPECT_EQ(loaded.rows.size(), 6u);  // one a grid point, one past each row's last
}

TEST(TuneFile, TheExplanationNamesTheGridPointsAroundTheSize) {
  const tpcoll::LoadedTable loaded = tpcoll::parse_tune_table(kTable);
  const tpcoll::TuneTable table = loaded.view();
  const std::size_t bytes = 1000000;
  const auto choice = tpcoll::lookup(table, TPCOLL_OP_ALL_REDUCE, TPCOLL_FLOAT32, 2, bytes);
  ASSERT_TRUE(choice);
  EXPECT_EQ(tpcoll::explain(table, *choice, TPCOLL_FLOAT32, 2, bytes),
            "twoshot: table cpu-shm-Test CPU 9000-x2, 1000000 B of float32 per rank at world 2 lies between the "
            "65536 B and 1048576 B grid points (float32 row)");
}

TEST(TuneFile, TruncatedOrNotJsonIsRefused) {
  EXPECT_TRUE(refused(kTable.substr(0, kTable.size() / 2), {"not valid JSON"}));
  EXPECT_TRUE(refused("", {"not valid JSON"}));
  EXPECT_TRUE(refused("[1, 2]", {"expected an object"}));
}

TEST(TuneFile, UnknownFieldsAreRefusedByName) {
  EXPECT_TRUE(refused(edited(R"("source":)", R"("comment": "x", "source":)"), {"unknown field \"comment\""}));
  EXPECT_TRUE(refused(edited(R"("world": 2,)", R"("world": 2, "gpus": 1,)"), {"key", "unknown field \"gpus\""}));
  EXPECT_TRUE(refused(edited(R"("bytes": 1024,)", R"("bytes": 1024, "note": 1,)"),
                      {"rows[0].points[0]", "unknown field \"note\""}));
}

TEST(TuneFile, WrongTypesAndMissingFieldsAreRefusedByName) {
  EXPECT_TRUE(refused(edited(R"("world": 2)", R"("world": "2")"), {"key.world is string", "positive integer"}));
  EXPECT_TRUE(refused(edited(R"("bytes": 1024)", R"("bytes": -1024)"), {"rows[0].points[0].bytes", "positive integer"}));
  EXPECT_TRUE(refused(edited(R"("bytes": 1024)", R"("bytes": 0)"), {"rows[0].points[0].bytes is 0"}));
  EXPECT_TRUE(refused(edited(R"("oneshot": 2.0)", R"("oneshot": "fast")"), {"rows[0].points[0].us.oneshot"}));
  EXPECT_TRUE(refused(edited(R"("source": "tune_file_test.cpp",)", ""), {"field \"source\" is missing"}));
  EXPECT_TRUE(refused(edited(R"("format": "tpcoll-tune/1")", R"("format": "tpcoll-tune/2")"), {"tpcoll-tune/2"}));
}

TEST(TuneFile, AGridThatDoesNotGrowIsRefused) {
  EXPECT_TRUE(refused(edited(R"("bytes": 65536)", R"("bytes": 1024)"),
                      {"rows[0].points[1].bytes is 1024", "the grid must grow"}));
}

TEST(TuneFile, UnknownNamesAndAlgorithmsThatCannotRunAreRefused) {
  EXPECT_TRUE(refused(edited(R"("algo": "twoshot")", R"("algo": "threeshot")"), {"unknown algorithm \"threeshot\""}));
  EXPECT_TRUE(refused(edited(R"("op": "all_reduce")", R"("op": "all_reduce_scatter")"), {"unknown op"}));
  EXPECT_TRUE(refused(edited(R"("dtype": "float32")", R"("dtype": "int32")"), {"all_reduce cannot reduce int32"}));
  EXPECT_TRUE(refused(edited(R"("op": "all_reduce")", R"("op": "all_gather")"), {"twoshot cannot run all_gather"}));
}

TEST(TuneFile, AWinnerThatDidNotMeasureFastestIsRefused) {
  // A hand edit of the winner alone leaves the times saying otherwise.
  EXPECT_TRUE(refused(edited(R"("bytes": 65536, "algo": "oneshot")", R"("bytes": 65536, "algo": "twoshot")"),
                      {"rows[0].points[1]", "names twoshot the winner, but oneshot measured faster"}));
  EXPECT_TRUE(refused(edited(R"(, "twoshot": 8.0)", ""), {"rows[1].points[0]", "winner twoshot has no measured time"}));
}

TEST(TuneFile, ASecondRowForOneOpAndDtypeIsRefused) {
  EXPECT_TRUE(refused(edited(R"("op": "fused_allreduce_residual_rmsnorm", "dtype": "bfloat16")",
                             R"("op": "all_reduce", "dtype": "float32")"),
                      {"rows[1]", "a second row for all_reduce float32"}));
}

TEST(TuneFile, HiddenRowsServeTheFirstMeasuredHiddenAtOrAboveTheCalls) {
  const tpcoll::LoadedTable loaded = tpcoll::parse_tune_table(kHiddenTable);
  const tpcoll::TuneTable table = loaded.view();
  const auto at = [&](std::size_t bytes, std::size_t hidden, tpcoll_dtype_t dtype = TPCOLL_FLOAT32) {
    return tpcoll::lookup(table, TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM, dtype, 2, bytes, hidden);
  };
  // Exactly measured: the row of that hidden, by bytes.
  EXPECT_EQ(at(32768, 4096)->algo, TPCOLL_ALGO_ONESHOT);
  EXPECT_EQ(at(32769, 4096)->algo, TPCOLL_ALGO_TWOSHOT);
  EXPECT_EQ(at(std::size_t{1} << 30, 4096)->algo, TPCOLL_ALGO_TWOSHOT);
  EXPECT_EQ(at(16384, 8192)->algo, TPCOLL_ALGO_UNFUSED);
  // Between or below: the next measured hidden above; above all: the largest.
  EXPECT_EQ(at(16384, 2880)->row->hidden, 4096u);
  EXPECT_EQ(at(16384, 4097)->row->hidden, 8192u);
  EXPECT_EQ(at(16384, 5120)->algo, TPCOLL_ALGO_UNFUSED);
  EXPECT_EQ(at(16384, 16384)->row->hidden, 8192u);
  // A row without hidden serves every hidden, as before hidden rows.
  EXPECT_EQ(at(16384, 5120, TPCOLL_FLOAT16)->algo, TPCOLL_ALGO_TWOSHOT);
  EXPECT_EQ(at(16384, 5120, TPCOLL_FLOAT16)->row->hidden, tpcoll::kAnyHidden);

  const auto explained = [&](std::size_t bytes, std::size_t hidden) {
    return tpcoll::explain(table, *at(bytes, hidden), TPCOLL_FLOAT32, 2, bytes, hidden);
  };
  EXPECT_EQ(explained(65536, 4096),
            "twoshot: table cpu-shm-Test CPU 9000-x2, hidden 4096 row, 65536 B of float32 per rank at world 2 lies "
            "between the 32768 B and 131072 B grid points (float32 row)");
  EXPECT_TRUE(tpcoll::test::message_has(explained(40960, 5120), {"unfused: table", "hidden 8192 row (the next measured above 5120)",
                                                                 "40960 B of float32", "at or below the first grid point, 65536 B"}));
  EXPECT_TRUE(tpcoll::test::message_has(explained(40960, 10240), {"hidden 8192 row (the largest measured, below 10240)"}));
}

TEST(TuneFile, AHiddenThatIsNotAPositiveIntegerIsRefused) {
  for (const char* bad : {R"("hidden": 0,)", R"("hidden": -4096,)", R"("hidden": 4096.5,)", R"("hidden": "4096",)"})
    EXPECT_TRUE(refused(edited(R"("hidden": 4096,)", bad, kHiddenTable), {"rows[0].hidden", "positive integer"})) << bad;
}

TEST(TuneFile, AHiddenOnAnOpWithoutOneIsRefused) {
  EXPECT_TRUE(refused(edited(R"("op": "all_reduce", "dtype": "float32",)",
                             R"("op": "all_reduce", "dtype": "float32", "hidden": 4096,)"),
                      {"rows[0]", "\"hidden\" is for the fused ops' rows, not all_reduce"}));
}

TEST(TuneFile, PointsThatAreNotWholeRowsOfTheHiddenAreRefused) {
  // 8192 float32 elements a row are 32768 B: 65536 is 2 rows, 49152 is 1.5.
  EXPECT_TRUE(refused(edited(R"("bytes": 65536, "algo": "unfused")", R"("bytes": 49152, "algo": "unfused")",
                             kHiddenTable),
                      {"rows[1].points[0].bytes is 49152", "not whole rows of hidden 8192 float32"}));
  // Less than one row, including a hidden so large that a row's bytes overflow.
  EXPECT_TRUE(refused(edited(R"("hidden": 8192,)", R"("hidden": 4611686018427387904,)", kHiddenTable),
                      {"rows[1].points[0].bytes is 65536", "not whole rows"}));
}

TEST(TuneFile, ASecondRowForOneOpDtypeAndHiddenIsRefused) {
  EXPECT_TRUE(refused(edited(R"("hidden": 8192,)", R"("hidden": 4096,)", kHiddenTable),
                      {"rows[1]", "a second row for fused_allreduce_residual_rmsnorm float32 at hidden 4096"}));
}

TEST(TuneFile, ARowForEveryHiddenBesideRowsForGivenOnesIsRefused) {
  // It would never serve: lookup takes a measured hidden wherever there is one.
  EXPECT_TRUE(refused(edited(R"("dtype": "float16", "points")", R"("dtype": "float32", "points")", kHiddenTable),
                      {"rows[2]", "fused_allreduce_residual_rmsnorm float32 has a row for every hidden beside rows "
                                  "for given hidden sizes"}));
}

TEST(TuneFile, AKeyOfAnotherMachineIsRefusedNamingTheField) {
  tpcoll::TuneKey other = kKey;
  other.world = 4;
  EXPECT_TRUE(tpcoll::test::throws_error([&] { tpcoll::check_tune_key(tpcoll::parse_tune_table(kTable).key, other); }, TPCOLL_INVALID_ARGUMENT,
                                         {"key.world is \"2\"", "\"4\""}));
  other = kKey;
  other.device = "Other CPU";
  EXPECT_TRUE(tpcoll::test::throws_error([&] { tpcoll::check_tune_key(tpcoll::parse_tune_table(kTable).key, other); }, TPCOLL_INVALID_ARGUMENT,
                                         {"key.device", "Other CPU"}));
}

}  // namespace
