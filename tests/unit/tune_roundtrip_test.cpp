// `tpcoll tune` to plan(), on the CPU backend: the tool measures a tiny token
// x hidden grid at 2 ranks and writes a table with a row per hidden; local
// communicators created with that table as TPCOLL_TUNE_FILE then plan a fused
// call with the winner of its hidden's row and name that row.
#include "test_util.hpp"

#include <tpcoll/tpcoll.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

constexpr int kWorld = 2;

std::string file_text(const std::string& path) {
  std::ostringstream text;
  text << std::ifstream(path).rdbuf();
  return text.str();
}

// The winner the table names for fused float32 calls of `bytes` per rank in
// its row of `hidden`: the first grid point at or above, else the last.
std::string table_winner(const nlohmann::json& table, std::size_t hidden, std::size_t bytes) {
  for (const auto& row : table["rows"]) {
    if (row["op"] != "fused_allreduce_residual_rmsnorm" || row["dtype"] != "float32" || row.value("hidden", 0u) != hidden)
      continue;
    for (const auto& point : row["points"])
      if (point["bytes"].get<std::size_t>() >= bytes) return point["algo"];
    return row["points"].back()["algo"];
  }
  return "no row for hidden " + std::to_string(hidden);
}

// Rank 0's plan of a fused float32 call of `tokens` x `hidden` on local
// communicators created with `path` as TPCOLL_TUNE_FILE.
tpcoll_plan_info_t fused_plan(const std::string& path, std::int64_t tokens, std::int64_t hidden) {
  const tpcoll::test::ScopedEnv file("TPCOLL_TUNE_FILE", path.c_str());
  const std::vector<int> devices(kWorld, TPCOLL_DEVICE_CPU);
  std::vector<tpcoll_comm_t> comms(kWorld);
  tpcoll_plan_info_t plan{};
  EXPECT_EQ(tpcoll_comm_create_local(kWorld, devices.data(), comms.data()), TPCOLL_SUCCESS) << tpcoll_last_error();
  const std::int64_t shape[] = {tokens, hidden};
  EXPECT_EQ(tpcoll_plan(comms[0], TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM, TPCOLL_FLOAT32, 2, shape, 0, &plan),
            TPCOLL_SUCCESS)
      << tpcoll_last_error();
  for (tpcoll_comm_t c : comms) tpcoll_comm_destroy(c);
  return plan;
}

TEST(TuneRoundTrip, PlanTakesTheWinnerOfTheRowOfTheCallsHiddenAndNamesIt) {
  const std::string path = ::testing::TempDir() + tpcoll::test::unique_key("tune-roundtrip") + ".json";
  const std::string log = path + ".log";
  // 2 and 4 tokens x hidden 64 and 128, float32; the all-reduce at 1 KiB.
  const std::string command = std::string(TPCOLL_CLI) +
                              " tune --np 2 -b 1K -e 1K -n 3 -w 1 --dtype fp32 --tokens 2 4 --hidden 64 128 -o " +
                              path + " > " + log + " 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0) << command << "\n" << file_text(log);
  const nlohmann::json table = nlohmann::json::parse(file_text(path));

  // hidden 64 measured: its row, by bytes (4 x 64 x 4 B = its second point).
  const tpcoll_plan_info_t exact = fused_plan(path, 4, 64);
  EXPECT_STREQ(exact.algorithm, table_winner(table, 64, 1024).c_str()) << exact.reason;
  EXPECT_TRUE(tpcoll::test::message_has(exact.reason, {"table cpu-shm-", "hidden 64 row, 1024 B of float32",
                                                       "lies between the 512 B and 1024 B grid points"}));
  // hidden 96 was not: the next measured above it, 128 (2 x 96 x 4 B lie
  // at or below its first point, 2 x 128 x 4 B).
  const tpcoll_plan_info_t between = fused_plan(path, 2, 96);
  EXPECT_STREQ(between.algorithm, table_winner(table, 128, 768).c_str()) << between.reason;
  EXPECT_TRUE(tpcoll::test::message_has(between.reason, {"hidden 128 row (the next measured above 96), 768 B",
                                                         "at or below the first grid point, 1024 B"}));
  std::remove(path.c_str());
  std::remove(log.c_str());
}

}  // namespace
