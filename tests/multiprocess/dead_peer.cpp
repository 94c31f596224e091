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

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  std::printf("%s: %s\n", ok ? "ok" : "FAILED", what.c_str());
  if (!ok) ++failures;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "shm";
  if (mode != "shm" && mode != "root" && mode != "fallback") {
    std::fprintf(stderr, "usage: dead_peer shm|root|fallback\n");
    return 2;
  }
  const int dying = mode == "root" ? 0 : 1;
  const std::string job = "dead-peer-" + mode + "-" + std::to_string(::getpid());
  ::setenv("TPCOLL_WORLD_SIZE", "2", 1);
  ::setenv("TPCOLL_JOB", job.c_str(), 1);
  ::setenv("TPCOLL_TIMEOUT_MS", "2000", 1);
  ::setenv("TPCOLL_BOOTSTRAP_TIMEOUT_MS", "10000", 1);
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
