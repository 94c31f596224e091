// A rank that dies mid-job, without the launcher (which would stop the
// survivor itself). The program forks: the child is the rank that dies
// (SIGKILL after three successful all-reduces), the parent the survivor,
// which must get a prompt, precise error instead of hanging, and then find
// its communicator refusing further work.
//
//   dead_peer shm        rank 1 dies; rank 0 waits in shared memory:
//                        TPCOLL_TIMEOUT naming "peer 1" after TPCOLL_TIMEOUT_MS (2 s)
//   dead_peer root       rank 0 (the bootstrap root) dies; rank 1: TPCOLL_TIMEOUT naming "peer 0"
//   dead_peer fallback   rank 1 dies; rank 0 waits in the bootstrap exchange:
//                        TPCOLL_BOOTSTRAP_ERROR naming rank 1 at once (its socket closed)
//   dead_peer loop       4 ranks in a loop of mixed small ops; rank 2 dies in the
//                        middle of it; ranks 0, 1 and 3 each report "peer 2 timed
//                        out" within the timeout and exit with status 0
//
// Exit status 0 when the survivor saw what it should, 1 otherwise.
#include <tpcoll/tpcoll.hpp>

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  std::printf("%s: %s\n", ok ? "ok" : "FAILED", what.c_str());
  if (!ok) ++failures;
}

}  // namespace

// One rank of the loop: all-reduces and all-gathers, every result checked,
// until an op fails. The dying rank kills itself after `dies_after` ops, so
// the others meet its death in the middle of their next op. Returns the
// exit status.
int loop_rank(int rank, int world, int dying, int dies_after) {
  try {
    tpcoll::Communicator comm(tpcoll::Config::from_env());
    std::array<float, 16> x{}, y{};
    std::array<std::int32_t, 4> g{};
    std::array<std::int32_t, 16> gathered{};
    auto last_success = std::chrono::steady_clock::now();
    for (int it = 0;; ++it) {
      if (rank == dying && it == dies_after) ::raise(SIGKILL);
      try {
        if (it % 3 == 2) {
          for (int j = 0; j < 4; ++j) g[j] = rank * 1000 + it % 1000 + j;
          const std::int64_t shape[1] = {4};
          comm.all_gather(g.data(), gathered.data(), tpcoll::DType::kInt32, shape, 0);
          for (int j = 0; j < 16; ++j)
            if (gathered[j] != (j / 4) * 1000 + it % 1000 + j % 4) {
              std::printf("rank %d: all_gather %d wrong at %d\n", rank, it, j);
              return 1;
            }
        } else {
          for (std::size_t j = 0; j < x.size(); ++j) x[j] = static_cast<float>(rank + it % 512 + static_cast<int>(j));
          comm.all_reduce(x.data(), y.data(), x.size(), tpcoll::DType::kFloat32);
          for (std::size_t j = 0; j < x.size(); ++j)
            if (y[j] != static_cast<float>(world * (world - 1) / 2 + world * (it % 512 + static_cast<int>(j)))) {
              std::printf("rank %d: all_reduce %d wrong at %zu\n", rank, it, j);
              return 1;
            }
        }
        last_success = std::chrono::steady_clock::now();
      } catch (const tpcoll::Error& e) {
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - last_success).count();
        std::printf("rank %d after op %d, %.2f s: %s\n", rank, it, seconds, e.what());
        const std::string wanted = "peer " + std::to_string(dying) + " timed out";
        check(e.code() == TPCOLL_TIMEOUT, "rank " + std::to_string(rank) + ": the code is TPCOLL_TIMEOUT");
        check(std::string(e.what()).find(wanted) != std::string::npos,
              "rank " + std::to_string(rank) + ": the message says \"" + wanted + "\"");
        check(seconds >= 1.9 && seconds < 4.5, "rank " + std::to_string(rank) + ": within the 2 s timeout");
        check(it >= dies_after, "rank " + std::to_string(rank) + ": not before the peer died");
        return failures == 0 ? 0 : 1;
      }
    }
  } catch (const tpcoll::Error& e) {
    std::printf("rank %d: unexpected error: %s\n", rank, e.what());
    return 1;
  }
}

int run_loop() {
  constexpr int kWorld = 4, kDying = 2, kDiesAfter = 3000;
  ::setenv("TPCOLL_WORLD_SIZE", std::to_string(kWorld).c_str(), 1);
  std::vector<pid_t> children(kWorld, 0);
  for (int r = 1; r < kWorld; ++r) {
    std::fflush(nullptr);
    const pid_t child = ::fork();
    if (child < 0) {
      std::perror("fork");
      return 1;
    }
    if (child == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test
      ::setenv("TPCOLL_RANK", std::to_string(r).c_str(), 1);
      std::fflush(nullptr);
      const int status = loop_rank(r, kWorld, kDying, kDiesAfter);
      std::fflush(nullptr);
      ::_exit(status);
    }
    children[r] = child;
  }
  ::setenv("TPCOLL_RANK", "0", 1);
  int status_0 = loop_rank(0, kWorld, kDying, kDiesAfter);
  for (int r = 1; r < kWorld; ++r) {
    int status = 0;
    ::waitpid(children[r], &status, 0);
    if (r == kDying)
      check(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "rank 2 was killed by SIGKILL");
    else
      check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "rank " + std::to_string(r) + " exited cleanly (status 0)");
  }
  return status_0 == 0 && failures == 0 ? 0 : 1;
}

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "shm";
  if (mode != "shm" && mode != "root" && mode != "fallback" && mode != "loop") {
    std::fprintf(stderr, "usage: dead_peer shm|root|fallback|loop\n");
    return 2;
  }
  const int dying = mode == "root" ? 0 : 1;
  const std::string job = "dead-peer-" + mode + "-" + std::to_string(::getpid());
  ::setenv("TPCOLL_WORLD_SIZE", "2", 1);
  ::setenv("TPCOLL_JOB", job.c_str(), 1);
  ::setenv("TPCOLL_TIMEOUT_MS", "2000", 1);
  ::setenv("TPCOLL_BOOTSTRAP_TIMEOUT_MS", "10000", 1);
  if (mode == "loop") return run_loop();
  std::fflush(nullptr);

  const pid_t child = ::fork();
  if (child < 0) {
    std::perror("fork");
    return 1;
  }
  if (child == 0) ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test
  const int rank = child == 0 ? dying : 1 - dying;
  ::setenv("TPCOLL_RANK", std::to_string(rank).c_str(), 1);

  try {
    tpcoll::Communicator comm(tpcoll::Config::from_env());
    if (mode == "fallback") comm.force_algo(tpcoll::Algo::kFallback);
    std::array<float, 256> x{}, y{};
    for (int it = 0; it < 3; ++it) {
      for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(rank * 100 + it + static_cast<int>(i));
      comm.all_reduce(x.data(), y.data(), x.size(), tpcoll::DType::kFloat32);
      for (std::size_t i = 0; i < x.size(); ++i)
        if (y[i] != static_cast<float>(100 + 2 * (it + static_cast<int>(i)))) {
          std::printf("rank %d: all_reduce %d gave a wrong sum at %zu\n", rank, it, i);
          return 1;
        }
    }
    if (child == 0) {
      std::fflush(nullptr);
      ::raise(SIGKILL);  // die without a word, as a crashed process does
    }

    const auto start = std::chrono::steady_clock::now();
    try {
      comm.all_reduce(x.data(), y.data(), x.size(), tpcoll::DType::kFloat32);
      check(false, "an all_reduce with a dead peer returned normally");
    } catch (const tpcoll::Error& e) {
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const std::string message = e.what();
      std::printf("rank %d after %.2f s: %s (%s)\n", rank, seconds, message.c_str(), tpcoll_result_string(e.code()));
      const std::string peer = std::to_string(dying);
      if (mode == "fallback") {
        check(e.code() == TPCOLL_BOOTSTRAP_ERROR, "the code is TPCOLL_BOOTSTRAP_ERROR");
        check(message.find("rank " + peer) != std::string::npos, "the message names rank " + peer);
        check(seconds < 1.5, "the dead peer was noticed without waiting for the 2 s timeout");
      } else {
        check(e.code() == TPCOLL_TIMEOUT, "the code is TPCOLL_TIMEOUT");
        check(message.find("peer " + peer) != std::string::npos, "the message names peer " + peer);
        check(seconds >= 1.9 && seconds < 4.5, "it came after the 2 s timeout, not much later");
      }
    }
    // Peers are at unknown steps now: the communicator must refuse further work.
    try {
      comm.all_reduce(x.data(), y.data(), x.size(), tpcoll::DType::kFloat32);
      check(false, "the communicator worked on after a dead peer");
    } catch (const tpcoll::Error& e) {
      check(std::string(e.what()).find("unusable") != std::string::npos,
            std::string("a later call is refused: ") + e.what());
    }
  } catch (const tpcoll::Error& e) {
    std::printf("rank %d: unexpected error: %s\n", rank, e.what());
    ++failures;
  }

  if (child == 0) return 1;  // the dying rank only gets here if it failed before dying

  int status = 0;
  ::waitpid(child, &status, 0);
  check(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "the dying rank was killed by SIGKILL");
  return failures == 0 ? 0 : 1;
}
