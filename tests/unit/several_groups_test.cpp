// Issue 18, item 2 (flashinfer#3408, vllm#43616): several communicators over
// the same ranks, as with DP or PP > 1. Four CPU ranks, split into two pairs,
// plus the group of four, all used in one loop; a call made on the wrong
// group meets a peer at another op and gets the mismatch error, not a hang.
#include "test_util.hpp"

#include <tpcoll/tpcoll.h>

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr int kWorld = 4;

struct Groups {
  std::array<tpcoll_comm_t, kWorld> all{};
  std::array<tpcoll_comm_t, kWorld> pair{};  // rank r's comm in pair r / 2, as its rank r % 2

  Groups() {
    const std::vector<int> cpu(kWorld, TPCOLL_DEVICE_CPU);
    tpcoll::check(tpcoll_comm_create_local(kWorld, cpu.data(), all.data()));
    tpcoll::check(tpcoll_comm_create_local(2, cpu.data(), pair.data()));
    tpcoll::check(tpcoll_comm_create_local(2, cpu.data(), pair.data() + 2));
  }
  ~Groups() {
    for (tpcoll_comm_t c : all) tpcoll_comm_destroy(c);
    for (tpcoll_comm_t c : pair) tpcoll_comm_destroy(c);
  }
};

// Rank r's element i at iteration `it`: small integers, exact in any order.
float value(int it, int r, int i) { return static_cast<float>((it * 3 + r * 7 + i) % 50); }

// One rank's loop over both of its groups; returns "" or what went wrong.
std::string run_rank(const Groups& g, int r, int iterations) {
  constexpr int kCount = 1000;
  std::vector<float> in(kCount), out(kCount);
  std::vector<std::int32_t> mine(3), gathered(6);
  std::vector<float> residual(kCount, 0.25f), weight(kCount, 1.5f), fused(kCount), fused_res(kCount), ref(kCount),
      ref_res(kCount);
  for (int it = 0; it < iterations; ++it) {
    for (int i = 0; i < kCount; ++i) in[i] = value(it, r, i);
    if (tpcoll_all_reduce(g.all[r], in.data(), out.data(), kCount, TPCOLL_FLOAT32, nullptr) != TPCOLL_SUCCESS)
      return std::string("group of four: ") + tpcoll_last_error();
    for (int i = 0; i < kCount; ++i) {
      float sum = 0.0f;
      for (int q = 0; q < kWorld; ++q) sum += value(it, q, i);
      if (out[i] != sum) return "group of four: wrong sum at iteration " + std::to_string(it);
    }
    for (int i = 0; i < 3; ++i) mine[i] = it * 100 + r * 10 + i;
    const std::int64_t shape[] = {3};
    if (tpcoll_all_gather(g.pair[r], mine.data(), gathered.data(), TPCOLL_INT32, 1, shape, 0, nullptr) !=
        TPCOLL_SUCCESS)
      return std::string("pair: ") + tpcoll_last_error();
    const int first = r & ~1;
    for (int q = 0; q < 2; ++q)
      for (int i = 0; i < 3; ++i)
        if (gathered[q * 3 + i] != it * 100 + (first + q) * 10 + i) return "pair: wrong gather at " + std::to_string(it);
    // The fused op on the pair equals its all-reduce then add + RMSNorm.
    if (tpcoll_fused_allreduce_residual_rmsnorm(g.pair[r], in.data(), residual.data(), weight.data(), fused.data(),
                                                fused_res.data(), 10, 100, TPCOLL_FLOAT32, 1e-6f,
                                                nullptr) != TPCOLL_SUCCESS ||
        tpcoll_all_reduce(g.pair[r], in.data(), out.data(), kCount, TPCOLL_FLOAT32, nullptr) != TPCOLL_SUCCESS ||
        tpcoll_add_rmsnorm(g.pair[r], out.data(), residual.data(), weight.data(), ref.data(), ref_res.data(), 10, 100,
                           TPCOLL_FLOAT32, 1e-6f, nullptr) != TPCOLL_SUCCESS)
      return std::string("pair fused: ") + tpcoll_last_error();
    if (fused != ref || fused_res != ref_res) return "pair fused differs at iteration " + std::to_string(it);
  }
  return {};
}

TEST(SeveralGroups, PairsAndTheGroupOfFourInOneLoop) {
  Groups g;
  std::array<std::string, kWorld> errors;
  std::vector<std::thread> threads;
  for (int r = 0; r < kWorld; ++r) threads.emplace_back([&, r] { errors[r] = run_rank(g, r, 200); });
  for (auto& t : threads) t.join();
  for (int r = 0; r < kWorld; ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
}

TEST(SeveralGroups, CallOnTheWrongGroupIsAMismatchNotAHang) {
  tpcoll::test::ScopedEnv timeout("TPCOLL_TIMEOUT_MS", "20000");
  Groups g;
  // Ranks 0 and 1 share a pair. Rank 0 all-reduces on it; rank 1 meant its
  // all-gather for the group of four but passed its pair communicator.
  std::vector<float> in(64, 1.0f), out(64);
  std::vector<float> shard(64, 2.0f), gathered(64 * kWorld);
  const std::int64_t shape[] = {64};
  tpcoll_result_t results[2];
  std::string messages[2];
  std::thread rank0([&] {
    results[0] = tpcoll_all_reduce(g.pair[0], in.data(), out.data(), 64, TPCOLL_FLOAT32, nullptr);
    messages[0] = tpcoll_last_error();
  });
  std::thread rank1([&] {
    results[1] = tpcoll_all_gather(g.pair[1], shard.data(), gathered.data(), TPCOLL_FLOAT32, 1, shape, 0, nullptr);
    messages[1] = tpcoll_last_error();
  });
  rank0.join();
  rank1.join();
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(results[r], TPCOLL_MISMATCH) << "rank " << r << ": " << messages[r];
    EXPECT_TRUE(tpcoll::test::message_has(messages[r], {"all_reduce", "all_gather"})) << "rank " << r;
  }
}

}  // namespace
