// The measured table at communicator creation: rank 0 reads TPCOLL_TUNE_FILE,
// every rank plans from what it accepted, and a refused table leaves the
// built-in defaults with a WARN that names the fault.
#include "core/call.hpp"
#include "core/tune_load.hpp"

#include "test_util.hpp"

#include <tpcoll/tpcoll.h>

#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr int kWorld = 2;

constexpr std::size_t kBytes = 16384;  // the all-reduce planned: 4096 float32 per rank

// What the built-in CPU table says for that all-reduce at kWorld ranks.
tpcoll_algo_t builtin_choice() {
  return tpcoll::lookup(tpcoll::builtin_cpu_table(), TPCOLL_OP_ALL_REDUCE, TPCOLL_FLOAT32, kWorld, kBytes)->algo;
}

// The other one, so that a plan shows which table it came from.
tpcoll_algo_t other_choice() {
  return builtin_choice() == TPCOLL_ALGO_ONESHOT ? TPCOLL_ALGO_TWOSHOT : TPCOLL_ALGO_ONESHOT;
}

// A table for this machine with the other choice for float32 all-reduces of
// any size, and nothing else.
std::string table_text(int world) {
  const tpcoll::TuneKey key = tpcoll::cpu_tune_key(world);
  const std::string winner = tpcoll::algo_name(other_choice());
  const std::string loser = tpcoll::algo_name(builtin_choice());
  return R"({"format": "tpcoll-tune/1", "key": {"backend": ")" + key.backend + R"(", "device": ")" + key.device +
         R"(", "world": )" + std::to_string(key.world) + R"(, "topology": ")" + key.topology + R"(", "version": ")" +
         key.version + R"("}, "source": "tune_load_test.cpp", "rows": [{"op": "all_reduce", "dtype": "float32",
         "points": [{"bytes": 1024, "algo": ")" + winner + R"(", "us": {")" + winner + R"(": 4.0, ")" + loser +
         R"(": 5.0}}]}]})";
}

std::string write_table(const std::string& text) {
  const std::string path = ::testing::TempDir() + tpcoll::test::unique_key("tune") + ".json";
  std::ofstream(path) << text;
  return path;
}

// Every rank's plan for one call, made on communicators created with `path`
// as TPCOLL_TUNE_FILE; the log of their creation in `log`.
std::vector<tpcoll_plan_info_t> plans(const std::string& path, tpcoll_op_t op, std::string& log) {
  const tpcoll::test::ScopedEnv file("TPCOLL_TUNE_FILE", path.c_str());
  const tpcoll::test::ScopedEnv debug("TPCOLL_DEBUG", "INFO");
  const std::vector<int> devices(kWorld, TPCOLL_DEVICE_CPU);
  std::vector<tpcoll_comm_t> comms(kWorld);
  ::testing::internal::CaptureStderr();
  const tpcoll_result_t created = tpcoll_comm_create_local(kWorld, devices.data(), comms.data());
  log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(created, TPCOLL_SUCCESS) << tpcoll_last_error();
  std::vector<tpcoll_plan_info_t> out(kWorld);
  const std::int64_t shape[] = {static_cast<std::int64_t>(kBytes / 4)};
  for (int r = 0; r < kWorld && created == TPCOLL_SUCCESS; ++r) {
    EXPECT_EQ(tpcoll_plan(comms[r], op, TPCOLL_FLOAT32, 1, shape, 0, &out[r]), TPCOLL_SUCCESS) << tpcoll_last_error();
    tpcoll_comm_destroy(comms[r]);
  }
  return out;
}

TEST(TuneLoad, EveryRankPlansFromTheMeasuredTableAndItsGridPoints) {
  std::string log;
  const std::string path = write_table(table_text(kWorld));
  for (const tpcoll_plan_info_t& p : plans(path, TPCOLL_OP_ALL_REDUCE, log)) {
    EXPECT_EQ(p.algo, other_choice());
    EXPECT_TRUE(tpcoll::test::message_has(p.reason, {std::string(tpcoll::algo_name(other_choice())) + ": table cpu-shm-",
                                                     "16384 B of float32",
                                                     "lies above the 1024 B grid point"}));
  }
  EXPECT_TRUE(tpcoll::test::message_has(log, {"INFO [tune] table " + path}));
  // The table has no all-gather row: the built-in defaults answer.
  for (const tpcoll_plan_info_t& p : plans(path, TPCOLL_OP_ALL_GATHER, log))
    EXPECT_TRUE(tpcoll::test::message_has(p.reason, {"oneshot: table cpu-builtin"}));
}

TEST(TuneLoad, ARefusedTableLeavesTheDefaultsWithAWarningNamingTheFault) {
  const std::string good = table_text(kWorld);
  const struct {
    std::string text;
    std::string fault;
  } cases[] = {
      {good.substr(0, good.size() - 20), "not valid JSON"},
      {table_text(kWorld + 1), "key.world is \"3\""},
      {good.substr(0, good.find("\"rows\"")) + "\"sauce\": \"x\", " + good.substr(good.find("\"rows\"")),
       "unknown field \"sauce\""},
  };
  for (const auto& c : cases) {
    std::string log;
    const std::string path = write_table(c.text);
    for (const tpcoll_plan_info_t& p : plans(path, TPCOLL_OP_ALL_REDUCE, log)) {
      EXPECT_EQ(p.algo, builtin_choice()) << c.fault;
      EXPECT_TRUE(tpcoll::test::message_has(p.reason, {"table cpu-builtin"}));
    }
    EXPECT_TRUE(tpcoll::test::message_has(log, {"WARN [tune] table " + path + " refused", c.fault,
                                                "built-in defaults"}));
  }
}

TEST(TuneLoad, ANamedTableThatIsMissingWarns) {
  std::string log;
  plans(::testing::TempDir() + "no-such-table.json", TPCOLL_OP_ALL_REDUCE, log);
  EXPECT_TRUE(tpcoll::test::message_has(log, {"WARN [tune] no table at", "no-such-table.json", "built-in defaults"}));
}

TEST(TuneLoad, TheDefaultPathIsUnderXdgCacheHomeAndNamesTheKey) {
  const tpcoll::test::ScopedEnv file("TPCOLL_TUNE_FILE", nullptr);
  const tpcoll::test::ScopedEnv cache("XDG_CACHE_HOME", "/var/cache/me");
  const tpcoll::TuneKey key{"cpu-shm", "Some CPU @ 2.0GHz", 4, "2 cores", "tpcoll 0.1.0"};
  EXPECT_EQ(tpcoll::tune_file_path(key), "/var/cache/me/tpcoll/cpu-shm-some-cpu-2-0ghz-x4-2-cores-tpcoll-0-1-0.json");
  const tpcoll::test::ScopedEnv unset("XDG_CACHE_HOME", nullptr);
  const tpcoll::test::ScopedEnv home("HOME", "/home/me");
  EXPECT_EQ(tpcoll::tune_file_path(key), "/home/me/.cache/tpcoll/cpu-shm-some-cpu-2-0ghz-x4-2-cores-tpcoll-0-1-0.json");
}

}  // namespace
