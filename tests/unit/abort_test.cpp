// tpcoll_comm_abort on CPU ranks that are threads of this process: a rank
// that gives up unblocks every rank's waiting op long before the timeout,
// and the communicator refuses further work everywhere.
#include "test_util.hpp"

#include <tpcoll/tpcoll.h>

#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

using tpcoll::test::message_has;
using tpcoll::test::ScopedEnv;
using Clock = std::chrono::steady_clock;

struct Outcome {
  tpcoll_result_t code = TPCOLL_SUCCESS;
  std::string message;
  Clock::duration took{};
};

class Abort : public ::testing::TestWithParam<int> {
 protected:
  static constexpr int kWorld = 3;

  void SetUp() override {
    // Far beyond what the test waits: only the abort can end the waits in time.
    timeout_.emplace("TPCOLL_TIMEOUT_MS", "60000");
    const std::vector<int> devices(kWorld, TPCOLL_DEVICE_CPU);
    ASSERT_EQ(tpcoll_comm_create_local(kWorld, devices.data(), comms_), TPCOLL_SUCCESS) << tpcoll_last_error();
    if (GetParam() >= 0) {
      for (tpcoll_comm_t c : comms_) { ASSERT_EQ(tpcoll_comm_force_algo(c, GetParam()), TPCOLL_SUCCESS); }
    }
  }
  void TearDown() override {
    for (tpcoll_comm_t c : comms_) tpcoll_comm_destroy(c);
  }

  // An all-reduce on `rank`, which waits for the ranks that do not call.
  Outcome all_reduce(int rank) {
    std::vector<float> x(64, 1.0f), y(64, 0.0f);
    const auto start = Clock::now();
    Outcome o;
    o.code = tpcoll_all_reduce(comms_[rank], x.data(), y.data(), x.size(), TPCOLL_FLOAT32, nullptr);
    o.took = Clock::now() - start;
    o.message = tpcoll_last_error();
    return o;
  }

  std::optional<ScopedEnv> timeout_;
  tpcoll_comm_t comms_[kWorld] = {};
};

TEST_P(Abort, UnblocksThePeersWaitingForTheAbortingRank) {
  // Ranks 1 and 2 start an op; rank 0 never joins it and aborts instead.
  Outcome outcomes[kWorld];
  std::vector<std::thread> waiting;
  for (int r = 1; r < kWorld; ++r) waiting.emplace_back([&, r] { outcomes[r] = all_reduce(r); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ASSERT_EQ(tpcoll_comm_abort(comms_[0]), TPCOLL_SUCCESS);
  for (auto& t : waiting) t.join();
  for (int r = 1; r < kWorld; ++r) {
    EXPECT_NE(outcomes[r].code, TPCOLL_SUCCESS) << "rank " << r;
    EXPECT_LT(outcomes[r].took, std::chrono::seconds(5)) << "rank " << r << " waited for its timeout";
    if (GetParam() != TPCOLL_ALGO_FALLBACK) {
      // Shared memory: the abort itself is seen, naming who did it.
      EXPECT_EQ(outcomes[r].code, TPCOLL_ABORTED) << outcomes[r].message;
      EXPECT_TRUE(message_has(outcomes[r].message, {"rank 0 aborted"})) << "rank " << r;
    }
  }
  // Everyone refuses later work: the aborting rank with TPCOLL_ABORTED.
  const Outcome again = all_reduce(0);
  EXPECT_EQ(again.code, TPCOLL_ABORTED) << again.message;
  EXPECT_TRUE(message_has(again.message, {"aborted"}));
  for (int r = 1; r < kWorld; ++r) EXPECT_NE(all_reduce(r).code, TPCOLL_SUCCESS) << "rank " << r;
}

TEST_P(Abort, StopsThisRanksOwnOpFromAnotherThread) {
  // Rank 0 waits for ranks that never call; a watchdog thread aborts it.
  Outcome mine;
  std::thread op([&] { mine = all_reduce(0); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ASSERT_EQ(tpcoll_comm_abort(comms_[0]), TPCOLL_SUCCESS);
  op.join();
  EXPECT_EQ(mine.code, TPCOLL_ABORTED) << mine.message;
  EXPECT_LT(mine.took, std::chrono::seconds(5));
}

// -1: the measured choice (shared memory); the fallback waits in the bootstrap.
INSTANTIATE_TEST_SUITE_P(Algos, Abort, ::testing::Values(-1, TPCOLL_ALGO_TWOSHOT, TPCOLL_ALGO_FALLBACK),
                         [](const auto& info) {
                           return info.param < 0 ? std::string("auto")
                                                 : info.param == TPCOLL_ALGO_TWOSHOT ? "twoshot" : "fallback";
                         });

TEST(AbortArguments, NullCommunicatorIsRefused) {
  EXPECT_EQ(tpcoll_comm_abort(nullptr), TPCOLL_INVALID_ARGUMENT);
  EXPECT_TRUE(message_has(tpcoll_last_error(), {"comm is NULL"}));
}

}  // namespace
