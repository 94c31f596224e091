// Issue 18, item 5 on the CPU backend (vllm#46515: handles leaked per
// communicator): create/destroy cycles leave this process's file descriptors
// and its shared-memory segments in /dev/shm where they started: 1,000 cycles
// through tpcoll_comm_create_local, each running an op so that every
// resource is in use. (The socket rendezvous, which needs a process per
// rank, is cycled in tests/multiprocess: Hygiene.*.)
#include <tpcoll/tpcoll.h>

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <thread>
#include <vector>

namespace {

std::size_t open_fds() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

// Segments named by this process (shm_segment.cpp: "tpcoll-<pid>-...").
std::size_t my_segments() {
  const std::string prefix = "tpcoll-" + std::to_string(::getpid()) + "-";
  std::size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator("/dev/shm"))
    if (e.path().filename().string().starts_with(prefix)) ++n;
  return n;
}

void all_reduce_on_every_rank(const std::vector<tpcoll_comm_t>& comms) {
  std::vector<std::thread> threads;
  std::vector<tpcoll_result_t> results(comms.size());
  for (std::size_t r = 0; r < comms.size(); ++r)
    threads.emplace_back([&, r] {
      float in[64] = {}, out[64];
      results[r] = tpcoll_all_reduce(comms[r], in, out, 64, TPCOLL_FLOAT32, nullptr);
    });
  for (auto& t : threads) t.join();
  for (tpcoll_result_t rc : results) ASSERT_EQ(rc, TPCOLL_SUCCESS) << tpcoll_last_error();
}

TEST(CreateDestroyHygiene, LocalCommunicatorsLeaveNothingBehind) {
  const std::vector<int> devices(2, TPCOLL_DEVICE_CPU);
  std::vector<tpcoll_comm_t> comms(2);
  // One cycle first: lazily opened process-wide resources are not leaks.
  ASSERT_EQ(tpcoll_comm_create_local(2, devices.data(), comms.data()), TPCOLL_SUCCESS) << tpcoll_last_error();
  for (tpcoll_comm_t c : comms) tpcoll_comm_destroy(c);
  const std::size_t fds = open_fds(), segments = my_segments();
  for (int cycle = 0; cycle < 1000; ++cycle) {
    ASSERT_EQ(tpcoll_comm_create_local(2, devices.data(), comms.data()), TPCOLL_SUCCESS)
        << "cycle " << cycle << ": " << tpcoll_last_error();
    all_reduce_on_every_rank(comms);
    for (tpcoll_comm_t c : comms) ASSERT_EQ(tpcoll_comm_destroy(c), TPCOLL_SUCCESS);
  }
  EXPECT_EQ(open_fds(), fds);
  EXPECT_EQ(my_segments(), segments);
}

}  // namespace
