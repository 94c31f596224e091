// Issue 18, item 1: the rule that keeps a CUDA communicator's ops in issue
// order across streams (cuda/stream_order.hpp), case by case. The GPU test
// gpu_streams runs it on real streams and graphs.
#include "cuda/stream_order.hpp"

#include <gtest/gtest.h>

namespace {

using tpcoll::cuda::CaptureState;
using tpcoll::cuda::order_action;
using tpcoll::cuda::OrderAction;

constexpr CaptureState kEager{};
constexpr CaptureState kCaptureA{true, 7};
constexpr CaptureState kCaptureB{true, 9};
constexpr CaptureState kCaptureUnknown{true, 0};  // the legacy stream inside some capture

TEST(StreamOrder, EagerAfterEagerWaitsForThePreviousStream) {
  EXPECT_EQ(order_action(kEager, kEager), OrderAction::kJoin);
}

TEST(StreamOrder, WithinOneCaptureTheOpsAreJoinedByAGraphEdge) {
  EXPECT_EQ(order_action(kCaptureA, kCaptureA), OrderAction::kJoin);
}

TEST(StreamOrder, ACapturedOpAfterEagerWorkOrAnotherCaptureRunsAtReplay) {
  EXPECT_EQ(order_action(kEager, kCaptureA), OrderAction::kNothing);
  EXPECT_EQ(order_action(kCaptureB, kCaptureA), OrderAction::kNothing);
  EXPECT_EQ(order_action(kCaptureUnknown, kCaptureA), OrderAction::kNothing);
  EXPECT_EQ(order_action(kCaptureUnknown, kCaptureUnknown), OrderAction::kNothing);
}

TEST(StreamOrder, AnEagerOpWhileThePreviousOpsStreamIsCapturedIsRefused) {
  EXPECT_EQ(order_action(kCaptureA, kEager), OrderAction::kRefuse);
  EXPECT_EQ(order_action(kCaptureUnknown, kEager), OrderAction::kRefuse);
}

}  // namespace
