// Issue 18, item 1 on the CPU backend (sglang#31117, pytorch#189228): CPU ops
// are synchronous, so a second thread calling into a communicator while an op
// runs there gets an error at the call, not a corrupted or deadlocked op.
#include "test_util.hpp"

#include <tpcoll/tpcoll.h>

#include <gtest/gtest.h>

#include <chrono>
#include <thread>
#include <vector>

namespace {

TEST(OneThreadPerOp, SecondThreadInAnOpGetsAnErrorAtTheCall) {
  const int devices[2] = {TPCOLL_DEVICE_CPU, TPCOLL_DEVICE_CPU};
  tpcoll_comm_t comms[2];
  ASSERT_EQ(tpcoll_comm_create_local(2, devices, comms), TPCOLL_SUCCESS) << tpcoll_last_error();
  std::vector<float> in0(256, 1.0f), in1(256, 2.0f), out0(256), out1(256), stray(256);

  // Rank 0's op waits inside the communicator for rank 1, which is late.
  tpcoll_result_t first = TPCOLL_INTERNAL_ERROR;
  std::thread waiting([&] { first = tpcoll_all_reduce(comms[0], in0.data(), out0.data(), 256, TPCOLL_FLOAT32, nullptr); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));

  EXPECT_EQ(tpcoll_all_reduce(comms[0], in0.data(), stray.data(), 256, TPCOLL_FLOAT32, nullptr),
            TPCOLL_INVALID_ARGUMENT);
  EXPECT_TRUE(tpcoll::test::message_has(tpcoll_last_error(), {"another thread", "one thread at a time"}));
  // Every op that talks to the peers is refused alike.
  EXPECT_EQ(tpcoll_reduce_scatter(comms[0], in0.data(), stray.data(), 256, TPCOLL_FLOAT32, nullptr),
            TPCOLL_INVALID_ARGUMENT);
  EXPECT_TRUE(tpcoll::test::message_has(tpcoll_last_error(), {"another thread", "one thread at a time"}));
  std::vector<float> weight(128, 1.0f);
  EXPECT_EQ(tpcoll_fused_reduce_scatter_residual_rmsnorm(comms[0], in0.data(), nullptr, weight.data(), stray.data(),
                                                         nullptr, 2, 128, TPCOLL_FLOAT32, 1e-6f, nullptr),
            TPCOLL_INVALID_ARGUMENT);
  EXPECT_TRUE(tpcoll::test::message_has(tpcoll_last_error(), {"another thread", "one thread at a time"}));

  // The first op is untouched by the refused one and completes with rank 1.
  EXPECT_EQ(tpcoll_all_reduce(comms[1], in1.data(), out1.data(), 256, TPCOLL_FLOAT32, nullptr), TPCOLL_SUCCESS)
      << tpcoll_last_error();
  waiting.join();
  EXPECT_EQ(first, TPCOLL_SUCCESS);
  for (int i = 0; i < 256; ++i) ASSERT_EQ(out0[i], 3.0f) << i;

  // And the communicator serves the next op as usual.
  std::thread again([&] { first = tpcoll_all_reduce(comms[0], in0.data(), out0.data(), 256, TPCOLL_FLOAT32, nullptr); });
  EXPECT_EQ(tpcoll_all_reduce(comms[1], in1.data(), out1.data(), 256, TPCOLL_FLOAT32, nullptr), TPCOLL_SUCCESS);
  again.join();
  EXPECT_EQ(first, TPCOLL_SUCCESS);
  for (tpcoll_comm_t c : comms) tpcoll_comm_destroy(c);
}

}  // namespace
