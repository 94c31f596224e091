// The bootstrap (src/bootstrap/bootstrap.hpp), in one process: ranks are
// threads, and a raw client speaks to rank 0's socket to check how it treats
// a stranger that is not a tpcoll peer.
#include "bootstrap/bootstrap.hpp"
#include "bootstrap/job_dir.hpp"
#include "bootstrap/wire.hpp"
#include "core/log.hpp"

#include "test_util.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <fstream>
#include <functional>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

namespace {

using tpcoll::test::message_has;
using tpcoll::test::unique_key;
using Clock = std::chrono::steady_clock;

// What one rank's thread ended with.
struct Outcome {
  bool ok = false;
  tpcoll_result_t code = TPCOLL_SUCCESS;
  std::string message;
};

Outcome capture(const std::function<void()>& fn) {
  Outcome o;
  try {
    fn();
    o.ok = true;
  } catch (const tpcoll::Error& e) {
    o.code = e.code();
    o.message = e.what();
  } catch (const std::exception& e) {
    o.code = TPCOLL_INTERNAL_ERROR;
    o.message = std::string("unexpected exception: ") + e.what();
  }
  return o;
}

// Runs fn(rank) on `world` threads and returns each rank's outcome.
std::vector<Outcome> run_ranks(int world, const std::function<void(int)>& fn) {
  std::vector<Outcome> outcomes(static_cast<std::size_t>(world));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] { outcomes[static_cast<std::size_t>(r)] = capture([&] { fn(r); }); });
  for (auto& t : threads) t.join();
  return outcomes;
}

TEST(SocketBootstrap, AllGatherReturnsEveryRanksBytesInRankOrder) {
  const std::string key = unique_key("unit-gather");
  constexpr int kWorld = 3;
  const auto outcomes = run_ranks(kWorld, [&](int rank) {
    auto b = tpcoll::connect_socket_bootstrap(rank, kWorld, key, 10000);
    ASSERT_EQ(b->rank(), rank);
    ASSERT_EQ(b->world(), kWorld);
    // Several rounds of different sizes, including nothing and more than a socket buffer.
    for (const std::size_t bytes : {std::size_t{5}, std::size_t{1}, std::size_t{0}, std::size_t{3} << 20}) {
      std::vector<unsigned char> send(bytes), recv(bytes * kWorld, 0xee);
      for (std::size_t i = 0; i < bytes; ++i) send[i] = static_cast<unsigned char>(rank * 37 + i * 11 + bytes);
      b->all_gather(send.data(), recv.data(), bytes);
      for (int r = 0; r < kWorld; ++r)
        for (std::size_t i = 0; i < bytes; ++i)
          ASSERT_EQ(recv[r * bytes + i], static_cast<unsigned char>(r * 37 + i * 11 + bytes))
              << "rank " << rank << " sees byte " << i << " of rank " << r << " wrong (size " << bytes << ")";
    }
    b->barrier();
  });
  for (int r = 0; r < kWorld; ++r) EXPECT_TRUE(outcomes[r].ok) << "rank " << r << ": " << outcomes[r].message;
}

TEST(SocketBootstrap, WorldOfOneNeedsNoPeers) {
  auto b = tpcoll::connect_socket_bootstrap(0, 1, unique_key("unit-one"), 1000);
  const std::uint64_t v = 0x0123456789abcdefull;
  std::uint64_t out = 0;
  b->all_gather(&v, &out, sizeof v);
  EXPECT_EQ(out, v);
}

// Three connected socket bootstraps for `key`, kept alive by the caller.
std::vector<std::unique_ptr<tpcoll::Bootstrap>> connect_three(const std::string& key) {
  std::vector<std::unique_ptr<tpcoll::Bootstrap>> boots(3);
  const auto outcomes =
      run_ranks(3, [&](int rank) { boots[static_cast<std::size_t>(rank)] = tpcoll::connect_socket_bootstrap(rank, 3, key, 10000); });
  for (const Outcome& o : outcomes) EXPECT_TRUE(o.ok) << o.message;
  return boots;
}

TEST(SocketBootstrap, UnequalSizesFailOnEveryRank) {
  auto boots = connect_three(unique_key("unit-unequal"));
  const auto outcomes = run_ranks(3, [&](int rank) {
    const std::size_t bytes = rank == 1 ? 8 : 4;
    std::vector<char> send(bytes, 'x'), recv(bytes * 3);
    boots[static_cast<std::size_t>(rank)]->all_gather(send.data(), recv.data(), bytes);
  });
  for (int r = 0; r < 3; ++r) {
    EXPECT_FALSE(outcomes[r].ok) << "rank " << r;
    EXPECT_EQ(outcomes[r].code, TPCOLL_BOOTSTRAP_ERROR) << "rank " << r << ": " << outcomes[r].message;
    EXPECT_TRUE(message_has(outcomes[r].message, {"disagree"})) << "rank " << r;
  }
}

TEST(SocketBootstrap, PeerArrivingAfterRankZeroFailedLearnsWhy) {
  auto boots = connect_three(unique_key("unit-late"));
  // Ranks 0 and 1 disagree; rank 0 fails and goes away before rank 2 arrives.
  const auto first = run_ranks(2, [&](int rank) {
    const std::size_t bytes = rank == 1 ? 8 : 4;
    std::vector<char> send(bytes, 'x'), recv(bytes * 3);
    boots[static_cast<std::size_t>(rank)]->all_gather(send.data(), recv.data(), bytes);
  });
  EXPECT_EQ(first[0].code, TPCOLL_BOOTSTRAP_ERROR) << first[0].message;
  boots[0].reset();
  char send[4] = {}, recv[12];
  const Outcome late = capture([&] { boots[2]->all_gather(send, recv, 4); });
  EXPECT_EQ(late.code, TPCOLL_BOOTSTRAP_ERROR) << late.message;
  EXPECT_TRUE(message_has(late.message, {"disagree"}));
}

TEST(SocketBootstrap, RankZeroAloneTimesOutNamingTheMissingRank) {
  const auto start = Clock::now();
  const Outcome o = capture([] { tpcoll::connect_socket_bootstrap(0, 2, unique_key("unit-alone0"), 300); });
  const auto elapsed = Clock::now() - start;
  EXPECT_EQ(o.code, TPCOLL_TIMEOUT) << o.message;
  EXPECT_TRUE(std::regex_search(o.message, std::regex(R"(rank(\(s\))? 1\b)"))) << o.message;
  EXPECT_TRUE(message_has(o.message, {"300 ms"}));
  EXPECT_GE(elapsed, std::chrono::milliseconds(280));
  EXPECT_LT(elapsed, std::chrono::milliseconds(3000));
}

TEST(SocketBootstrap, MissingRanksAreAllNamed) {
  const std::string key = unique_key("unit-missing");
  // World 4 with ranks 0 and 2 present: rank 0 names 1 and 3.
  std::vector<Outcome> outcomes(2);
  std::thread peer([&] { outcomes[1] = capture([&] { tpcoll::connect_socket_bootstrap(2, 4, key, 400); }); });
  outcomes[0] = capture([&] { tpcoll::connect_socket_bootstrap(0, 4, key, 400); });
  peer.join();
  EXPECT_EQ(outcomes[0].code, TPCOLL_TIMEOUT) << outcomes[0].message;
  EXPECT_TRUE(message_has(outcomes[0].message, {"1, 3"})) << outcomes[0].message;
  // Rank 2 got in (its hello was sent) and returned; it is not at fault.
  EXPECT_TRUE(outcomes[1].ok) << outcomes[1].message;
}

TEST(SocketBootstrap, PeerAloneCannotReachRankZero) {
  const auto start = Clock::now();
  const Outcome o = capture([] { tpcoll::connect_socket_bootstrap(1, 2, unique_key("unit-alone1"), 300); });
  EXPECT_EQ(o.code, TPCOLL_TIMEOUT) << o.message;
  EXPECT_TRUE(message_has(o.message, {"could not reach rank 0"}));
  EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(3000));
}

TEST(SocketBootstrap, DuplicateRankZeroIsRefused) {
  // Two processes both claim rank 0 of one job: whichever binds second is refused
  // at once, the first times out waiting for its rank 1.
  const std::string key = unique_key("unit-dup0");
  Outcome first, second;
  std::thread t([&] { first = capture([&] { tpcoll::connect_socket_bootstrap(0, 2, key, 1500); }); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  second = capture([&] { tpcoll::connect_socket_bootstrap(0, 2, key, 1500); });
  t.join();
  const Outcome& refused = second.code == TPCOLL_BOOTSTRAP_ERROR ? second : first;
  const Outcome& waited = second.code == TPCOLL_BOOTSTRAP_ERROR ? first : second;
  EXPECT_EQ(refused.code, TPCOLL_BOOTSTRAP_ERROR) << refused.message;
  EXPECT_TRUE(message_has(refused.message, {"rank 0"})) << refused.message;
  EXPECT_EQ(waited.code, TPCOLL_TIMEOUT) << waited.message;
}

// ---- a raw client ----

// Connects to rank 0 of `key` as any process of this user can, waiting up
// to 3 s for it to listen; *token (when given) gets the job's token.
int connect_raw(const std::string& key, tpcoll::wire::Token* token = nullptr) {
  const std::string dir = tpcoll::job_dir_path(tpcoll::private_run_dir(), key);
  const sockaddr_un addr = tpcoll::socket_address_in(dir);
  const auto deadline = Clock::now() + std::chrono::seconds(3);
  while (Clock::now() < deadline) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
      if (token) *token = tpcoll::read_job_token(dir).value();
      return fd;
    }
    ::close(fd);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return -1;
}

tpcoll::wire::FrameHeader hello(std::uint32_t rank, std::uint32_t world) {
  return tpcoll::wire::make_header(tpcoll::wire::FrameKind::kHello, static_cast<int>(rank), static_cast<int>(world), 0,
                                   {});
}

// Rank 0 of a world of `world` meets raw clients that each send one header.
Outcome rank0_meets(int world, const std::vector<tpcoll::wire::FrameHeader>& headers, bool forge_token = false) {
  const std::string key = unique_key("unit-raw");
  Outcome o;
  std::thread root([&] { o = capture([&] { tpcoll::connect_socket_bootstrap(0, world, key, 3000); }); });
  std::vector<int> fds;
  for (auto h : headers) {
    tpcoll::wire::Token token{};
    const int fd = connect_raw(key, &token);
    EXPECT_GE(fd, 0) << "could not connect to rank 0";
    if (fd < 0) break;
    if (!forge_token) h.token = token;  // the stranger read the token: only the frame itself is wrong
    EXPECT_EQ(::send(fd, &h, sizeof h, MSG_NOSIGNAL), static_cast<ssize_t>(sizeof h));
    fds.push_back(fd);
  }
  root.join();
  for (int fd : fds) ::close(fd);
  return o;
}

TEST(SocketBootstrapStranger, WrongMagic) {
  auto h = hello(1, 2);
  h.magic = 0x12345678;
  const Outcome o = rank0_meets(2, {h});
  EXPECT_EQ(o.code, TPCOLL_BOOTSTRAP_ERROR) << o.message;
  EXPECT_TRUE(message_has(o.message, {"magic"}));
}

TEST(SocketBootstrapStranger, WrongVersion) {
  auto h = hello(1, 2);
  h.version = tpcoll::wire::kVersion + 1;
  const Outcome o = rank0_meets(2, {h});
  EXPECT_EQ(o.code, TPCOLL_BOOTSTRAP_ERROR) << o.message;
  EXPECT_TRUE(message_has(o.message, {"version"}));
}

TEST(SocketBootstrapStranger, AbsurdLength) {
  auto h = hello(1, 2);
  h.length = std::uint64_t{1} << 60;
  const Outcome o = rank0_meets(2, {h});
  EXPECT_EQ(o.code, TPCOLL_BOOTSTRAP_ERROR) << o.message;
  EXPECT_TRUE(message_has(o.message, {"length"}));
}

TEST(SocketBootstrapStranger, WrongToken) {
  auto h = hello(1, 2);
  h.token[3] = 0x5a;
  tpcoll::test::ScopedEnv debug("TPCOLL_DEBUG", "WARN");
  tpcoll::refresh_log_level();
  ::testing::internal::CaptureStderr();
  const Outcome o = rank0_meets(2, {h}, /*forge_token=*/true);
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(o.code, TPCOLL_BOOTSTRAP_ERROR) << o.message;
  EXPECT_TRUE(message_has(o.message, {"wrong job token"}));
  // The rejection is logged too, for whoever watches the job's output.
  EXPECT_TRUE(message_has(log, {"tpcoll WARN [bootstrap] rejected a frame:", "wrong job token"}));
}

TEST(SocketBootstrapStranger, NotAHello) {
  auto h = hello(1, 2);
  h.kind = static_cast<std::uint16_t>(tpcoll::wire::FrameKind::kGather);
  const Outcome o = rank0_meets(2, {h});
  EXPECT_EQ(o.code, TPCOLL_BOOTSTRAP_ERROR) << o.message;
  EXPECT_TRUE(message_has(o.message, {"hello"}));
}

TEST(SocketBootstrapStranger, WrongWorldSize) {
  const Outcome o = rank0_meets(2, {hello(1, 3)});
  EXPECT_EQ(o.code, TPCOLL_BOOTSTRAP_ERROR) << o.message;
  EXPECT_TRUE(message_has(o.message, {"world size 3"}));
}

TEST(SocketBootstrapStranger, ImpossibleRank) {
  for (const std::uint32_t rank : {0u, 2u, 1000u}) {
    const Outcome o = rank0_meets(2, {hello(rank, 2)});
    EXPECT_EQ(o.code, TPCOLL_BOOTSTRAP_ERROR) << o.message;
    EXPECT_TRUE(message_has(o.message, {"claims rank " + std::to_string(rank)}));
  }
}

TEST(SocketBootstrapStranger, RankAbove2To31) {
  for (const std::uint32_t rank : {0x80000000u, 0xffffffffu}) {
    const Outcome o = rank0_meets(2, {hello(rank, 2)});
    EXPECT_EQ(o.code, TPCOLL_BOOTSTRAP_ERROR) << o.message;
    EXPECT_TRUE(message_has(o.message, {"claims rank " + std::to_string(rank)}));
  }
}

TEST(SocketBootstrapStranger, TwoClaimTheSameRank) {
  const Outcome o = rank0_meets(3, {hello(1, 3), hello(1, 3)});
  EXPECT_EQ(o.code, TPCOLL_BOOTSTRAP_ERROR) << o.message;
  EXPECT_TRUE(message_has(o.message, {"two processes claim rank 1"}));
}

TEST(SocketBootstrapStranger, BadGatherFrameFailsTheExchangeOnBothSides) {
  // A peer that says hello properly, then sends an all-gather frame claiming
  // another rank: rank 0 fails, and tells the peer why in an error frame.
  const std::string key = unique_key("unit-badgather");
  Outcome root;
  std::thread t([&] {
    root = capture([&] {
      auto b = tpcoll::connect_socket_bootstrap(0, 2, key, 3000);
      char send[4] = {}, recv[8];
      b->all_gather(send, recv, 4);
    });
  });
  tpcoll::wire::Token token{};
  const int fd = connect_raw(key, &token);
  ASSERT_GE(fd, 0);
  const timeval three_seconds{3, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &three_seconds, sizeof three_seconds);
  auto h = hello(1, 2);
  h.token = token;
  EXPECT_EQ(::send(fd, &h, sizeof h, MSG_NOSIGNAL), static_cast<ssize_t>(sizeof h));
  const auto g = tpcoll::wire::make_header(tpcoll::wire::FrameKind::kGather, 5, 2, 4, token);
  // Header and payload in one send: rank 0 may close as soon as it has read
  // the header, and a second send would then fail with EPIPE.
  char frame[sizeof g + 4];
  std::memcpy(frame, &g, sizeof g);
  std::memcpy(frame + sizeof g, "\x01\x02\x03\x04", 4);
  EXPECT_EQ(::send(fd, frame, sizeof frame, MSG_NOSIGNAL), static_cast<ssize_t>(sizeof frame));
  tpcoll::wire::FrameHeader answer{};
  EXPECT_EQ(::recv(fd, &answer, sizeof answer, MSG_WAITALL), static_cast<ssize_t>(sizeof answer));
  EXPECT_EQ(answer.magic, tpcoll::wire::kMagic);
  EXPECT_EQ(answer.token, token) << "rank 0 signs its frames with the job token";
  EXPECT_EQ(answer.kind, static_cast<std::uint16_t>(tpcoll::wire::FrameKind::kError));
  std::string message(std::min<std::uint64_t>(answer.length, 4096), '\0');
  if (!message.empty()) { EXPECT_EQ(::recv(fd, message.data(), message.size(), MSG_WAITALL), static_cast<ssize_t>(message.size())); }
  t.join();
  ::close(fd);
  EXPECT_EQ(root.code, TPCOLL_BOOTSTRAP_ERROR) << root.message;
  EXPECT_TRUE(message_has(root.message, {"rank 5"}));
  EXPECT_EQ(message, root.message) << "the peer is told what rank 0 saw";
}

// ---- the callback bootstrap ----

TEST(CallbackBootstrap, ForwardsToTheCallback) {
  struct Seen {
    int calls = 0;
    std::size_t bytes = 0;
  } seen;
  const tpcoll_allgather_fn fn = [](const void* send, void* recv, std::size_t bytes, void* user) {
    auto* s = static_cast<Seen*>(user);
    ++s->calls;
    s->bytes = bytes;
    // A fake world of 2 in which rank 1 sends the bitwise complement.
    for (std::size_t i = 0; i < bytes; ++i) {
      static_cast<unsigned char*>(recv)[i] = static_cast<const unsigned char*>(send)[i];
      static_cast<unsigned char*>(recv)[bytes + i] =
          static_cast<unsigned char>(~static_cast<const unsigned char*>(send)[i]);
    }
    return 0;
  };
  auto b = tpcoll::make_callback_bootstrap(0, 2, fn, &seen);
  const unsigned char send[3] = {1, 2, 3};
  unsigned char recv[6] = {};
  b->all_gather(send, recv, 3);
  EXPECT_EQ(seen.calls, 1);
  EXPECT_EQ(seen.bytes, 3u);
  const unsigned char expected[6] = {1, 2, 3, 0xfe, 0xfd, 0xfc};
  EXPECT_EQ(std::memcmp(recv, expected, 6), 0);
  b->barrier();
  EXPECT_EQ(seen.calls, 2);
}

TEST(CallbackBootstrap, NonZeroReturnIsABootstrapError) {
  const tpcoll_allgather_fn fn = [](const void*, void*, std::size_t, void*) { return 3; };
  auto b = tpcoll::make_callback_bootstrap(1, 2, fn, nullptr);
  char send = 0, recv[2];
  const Outcome o = capture([&] { b->all_gather(&send, recv, 1); });
  EXPECT_EQ(o.code, TPCOLL_BOOTSTRAP_ERROR) << o.message;
  EXPECT_TRUE(message_has(o.message, {"returned 3", "rank 1"}));
}

}  // namespace
