// tpcoll_comm_create_local: all ranks of a job created in this process. On a
// machine without a GPU that means CPU ranks, each then driven by its own
// thread (CPU operations are synchronous and collective).
#include <tpcoll/tpcoll.hpp>

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace {

TEST(CreateLocal, CpuRanksRunAnAllReduceFromTheirThreads) {
  constexpr int kWorld = 3;
  const std::vector<int> devices(kWorld, TPCOLL_DEVICE_CPU);
  std::vector<tpcoll_comm_t> comms(kWorld);
  ASSERT_EQ(tpcoll_comm_create_local(kWorld, devices.data(), comms.data()), TPCOLL_SUCCESS) << tpcoll_last_error();
  std::vector<std::vector<float>> out(kWorld, std::vector<float>(1001));
  std::vector<tpcoll_result_t> results(kWorld);
  std::vector<std::thread> threads;
  for (int r = 0; r < kWorld; ++r)
    threads.emplace_back([&, r] {
      std::vector<float> in(1001, static_cast<float>(r + 1));
      results[r] = tpcoll_all_reduce(comms[r], in.data(), out[r].data(), in.size(), TPCOLL_FLOAT32, nullptr);
    });
  for (auto& t : threads) t.join();
  for (int r = 0; r < kWorld; ++r) {
    EXPECT_EQ(results[r], TPCOLL_SUCCESS) << "rank " << r;
    for (float v : out[r]) ASSERT_EQ(v, 6.0f) << "rank " << r;
    int rank = -1;
    ASSERT_EQ(tpcoll_comm_rank(comms[r], &rank), TPCOLL_SUCCESS);
    EXPECT_EQ(rank, r);
    tpcoll_comm_destroy(comms[r]);
  }
}

TEST(CreateLocal, RefusesBadArguments) {
  const int mixed[2] = {TPCOLL_DEVICE_CPU, 0};
  tpcoll_comm_t comms[2];
  EXPECT_EQ(tpcoll_comm_create_local(2, mixed, comms), TPCOLL_INVALID_ARGUMENT);
  EXPECT_NE(std::string(tpcoll_last_error()).find("mixes CPU and GPU"), std::string::npos) << tpcoll_last_error();
  EXPECT_EQ(tpcoll_comm_create_local(0, mixed, comms), TPCOLL_INVALID_ARGUMENT);
  EXPECT_EQ(tpcoll_comm_create_local(2, nullptr, comms), TPCOLL_INVALID_ARGUMENT);
  EXPECT_EQ(tpcoll_comm_create_local(2, mixed, nullptr), TPCOLL_INVALID_ARGUMENT);
}

TEST(CreateLocal, OneRankFailingFailsTheGroupAtOnce) {
  // Device 99 exists nowhere: that rank fails, and the others must not wait
  // out the bootstrap timeout for it.
  const int devices[2] = {99, 99};
  tpcoll_comm_t comms[2];
  const auto start = std::chrono::steady_clock::now();
  EXPECT_NE(tpcoll_comm_create_local(2, devices, comms), TPCOLL_SUCCESS);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

}  // namespace
