// The CUDA backend when things go wrong, with one process per rank sharing
// GPU 0 (run it under MPS: scripts/gpu-check.sh does). The program forks its
// ranks itself, as tests/multiprocess/dead_peer.cpp does, because the
// launcher would stop every rank as soon as one dies.
//
//   reliability kill N       rank N-1 dies (SIGKILL) in the middle of a loop of
//                            all-reduces; every other rank's kernel stops after
//                            TPCOLL_TIMEOUT_MS, the rank reports TPCOLL_TIMEOUT
//                            naming that peer, refuses later calls and exits
//   reliability mismatch N   rank 1 all-reduces more elements than the others:
//                            every rank reports TPCOLL_MISMATCH naming both calls
//   reliability many N       100,000 back-to-back all-reduces of 64 B - 256 KiB,
//                            every result checked on the GPU
//   reliability abort N      rank N-1 is late; while the others' kernels wait
//                            for it, a thread of rank 0 calls tpcoll_comm_abort:
//                            every rank reports TPCOLL_ABORTED naming rank 0,
//                            long before the timeout (the late rank at its
//                            first op that has to wait: its first finds every
//                            peer's data there)
//
// Exit status 0 pass, 1 fail, 77 without a CUDA device. (The C API: nvcc
// compiles this file as C++17, the C++ API needs C++20.)
#include <tpcoll/tpcoll.h>

#include <cuda_runtime.h>

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

constexpr int kTimeoutMs = 3000;

int failures = 0;

void check(bool ok, int rank, const std::string& what) {
  std::printf("rank %d: %s: %s\n", rank, ok ? "ok" : "FAILED", what.c_str());
  if (!ok) ++failures;
}

void cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

// Rank r's element i at iteration `it`: small integers, so that every sum is
// exact in fp32 whatever the order.
__host__ __device__ float input(int it, int r, std::size_t i) {
  return static_cast<float>(static_cast<int>((it * 7 + i * 3 + r * 5) % 64) - 32);
}

__global__ void fill(float* x, std::size_t count, int it, int rank) {
  for (std::size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < count; i += gridDim.x * blockDim.x)
    x[i] = input(it, rank, i);
}

__global__ void verify(const float* y, std::size_t count, int it, int world, unsigned* wrong) {
  for (std::size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < count; i += gridDim.x * blockDim.x) {
    float sum = 0.0f;
    for (int r = 0; r < world; ++r) sum += input(it, r, i);
    if (y[i] != sum) atomicAdd(wrong, 1u);
  }
}

// The error enqueued work reported, if any (tpcoll_comm_get_async_error).
tpcoll_result_t async_error(tpcoll_comm_t comm) {
  tpcoll_result_t result = TPCOLL_SUCCESS;
  tpcoll_comm_get_async_error(comm, &result);
  return result;
}

tpcoll_result_t all_reduce(tpcoll_comm_t comm, const float* x, float* y, std::size_t count, cudaStream_t stream) {
  return tpcoll_all_reduce(comm, x, y, count, TPCOLL_FLOAT32, stream);
}

struct Buffers {
  float* x = nullptr;
  float* y = nullptr;
  unsigned* wrong = nullptr;
  cudaStream_t stream = nullptr;

  explicit Buffers(std::size_t count) {
    cuda(cudaMalloc(&x, count * sizeof(float)), "cudaMalloc");
    cuda(cudaMalloc(&y, count * sizeof(float)), "cudaMalloc");
    cuda(cudaMalloc(&wrong, sizeof(unsigned)), "cudaMalloc");
    cuda(cudaMemset(wrong, 0, sizeof(unsigned)), "cudaMemset");
    cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  }
};

void run_kill(tpcoll_comm_t comm, int rank, int world) {
  const int dying = world - 1;
  Buffers b(4096);
  for (int it = 0;; ++it) {
    if (rank == dying && it == 50) {
      std::fflush(nullptr);
      ::raise(SIGKILL);  // between two calls, as a crashed process dies
    }
    const auto start = std::chrono::steady_clock::now();
    fill<<<4, 256, 0, b.stream>>>(b.x, 4096, it, rank);
    if (all_reduce(comm, b.x, b.y, 4096, b.stream) != TPCOLL_SUCCESS) {
      check(false, rank, std::string("an all-reduce was refused: ") + tpcoll_last_error());
      return;
    }
    cuda(cudaStreamSynchronize(b.stream), "cudaStreamSynchronize");
    if (async_error(comm) == TPCOLL_SUCCESS) {
      if (it > 60) {
        check(false, rank, "the all-reduces went on without the dead peer");
        return;
      }
      continue;
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const std::string message = tpcoll_last_error();
    std::printf("rank %d: iteration %d, after %.2f s: %s\n", rank, it, seconds, message.c_str());
    check(async_error(comm) == TPCOLL_TIMEOUT, rank, "the error is TPCOLL_TIMEOUT");
    check(message.find("peer " + std::to_string(dying) + " timed out") != std::string::npos, rank,
          "it names peer " + std::to_string(dying));
    check(it >= 50, rank, "it came after the peer died, not before");
    check(seconds > kTimeoutMs / 1000.0 * 0.9 && seconds < kTimeoutMs / 1000.0 + 3.0, rank,
          "it came after the timeout, not much later");
    const tpcoll_result_t later = all_reduce(comm, b.x, b.y, 4096, b.stream);
    check(later == TPCOLL_TIMEOUT, rank, std::string("a later call is refused: ") + tpcoll_last_error());
    return;
  }
}

void run_mismatch(tpcoll_comm_t comm, int rank) {
  Buffers b(4096);
  const std::size_t count = rank == 1 ? 1032 : 1024;
  fill<<<4, 256, 0, b.stream>>>(b.x, count, 0, rank);
  if (all_reduce(comm, b.x, b.y, count, b.stream) != TPCOLL_SUCCESS) {
    check(false, rank, std::string("the all-reduce was refused: ") + tpcoll_last_error());
    return;
  }
  cuda(cudaStreamSynchronize(b.stream), "cudaStreamSynchronize");
  const tpcoll_result_t result = async_error(comm);
  const std::string message = result == TPCOLL_SUCCESS ? "" : tpcoll_last_error();
  std::printf("rank %d: %s\n", rank, message.c_str());
  check(result == TPCOLL_MISMATCH, rank, "the error is TPCOLL_MISMATCH");
  check(message.find("1024") != std::string::npos && message.find("1032") != std::string::npos, rank,
        "it names both calls");
}

void run_many(tpcoll_comm_t comm, int rank, int world) {
  constexpr int kOps = 100000;
  constexpr std::size_t kCounts[] = {16, 1000, 4096, 65536};  // 64 B - 256 KiB of fp32
  Buffers b(65536);
  const auto start = std::chrono::steady_clock::now();
  for (int it = 0; it < kOps; ++it) {
    const std::size_t count = kCounts[it % 4];
    fill<<<8, 256, 0, b.stream>>>(b.x, count, it, rank);
    if (all_reduce(comm, b.x, b.y, count, b.stream) != TPCOLL_SUCCESS) {
      check(false, rank, std::string("an all-reduce was refused: ") + tpcoll_last_error());
      return;
    }
    verify<<<8, 256, 0, b.stream>>>(b.y, count, it, world, b.wrong);
    if (it % 1000 == 999) {
      cuda(cudaStreamSynchronize(b.stream), "cudaStreamSynchronize");
      if (async_error(comm) != TPCOLL_SUCCESS) {
        check(false, rank, std::string("no error reported: ") + tpcoll_last_error());
        return;
      }
    }
  }
  unsigned wrong = 0;
  cuda(cudaMemcpy(&wrong, b.wrong, sizeof wrong, cudaMemcpyDeviceToHost), "cudaMemcpy");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("rank %d: %d all-reduces in %.1f s\n", rank, kOps, seconds);
  check(wrong == 0, rank, "every element of every result is right (" + std::to_string(wrong) + " wrong)");
}

void run_abort(tpcoll_comm_t comm, int rank, int world) {
  Buffers b(4096);
  if (rank == world - 1) std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  std::thread aborter;
  if (rank == 0)
    aborter = std::thread([comm] {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      tpcoll_comm_abort(comm);
    });
  const auto start = std::chrono::steady_clock::now();
  tpcoll_result_t result = TPCOLL_SUCCESS;
  for (int it = 0; it < 2 && result == TPCOLL_SUCCESS; ++it) {
    fill<<<4, 256, 0, b.stream>>>(b.x, 4096, it, rank);
    result = all_reduce(comm, b.x, b.y, 4096, b.stream);
    cuda(cudaStreamSynchronize(b.stream), "cudaStreamSynchronize");
    if (result == TPCOLL_SUCCESS) result = async_error(comm);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (aborter.joinable()) aborter.join();
  const std::string message = result == TPCOLL_SUCCESS ? "" : tpcoll_last_error();
  std::printf("rank %d: after %.2f s: %s\n", rank, seconds, message.c_str());
  check(result == TPCOLL_ABORTED, rank, "the error is TPCOLL_ABORTED");
  check(message.find("rank 0 aborted") != std::string::npos, rank, "it names rank 0");
  check(seconds < kTimeoutMs / 1000.0 / 2, rank, "it came long before the timeout");
  check(all_reduce(comm, b.x, b.y, 4096, b.stream) != TPCOLL_SUCCESS, rank, "a later call is refused");
}

int run_rank(const std::string& mode, int rank, int world) {
  ::setenv("TPCOLL_RANK", std::to_string(rank).c_str(), 1);
  tpcoll_comm_config_t config{};
  tpcoll_comm_t comm = nullptr;
  if (tpcoll_comm_config_from_env(&config) != TPCOLL_SUCCESS || tpcoll_comm_create(&config, &comm) != TPCOLL_SUCCESS) {
    check(false, rank, std::string("creating the communicator: ") + tpcoll_last_error());
    return 1;
  }
  if (mode == "kill")
    run_kill(comm, rank, world);
  else if (mode == "mismatch")
    run_mismatch(comm, rank);
  else if (mode == "abort")
    run_abort(comm, rank, world);
  else
    run_many(comm, rank, world);
  check(tpcoll_comm_destroy(comm) == TPCOLL_SUCCESS, rank, "the communicator is destroyed cleanly");
  return failures == 0 ? 0 : 1;
}

// Whether a CUDA device is there, asked in a child: the parent must not
// initialise CUDA before it forks the ranks.
bool have_device() {
  const pid_t probe = ::fork();
  if (probe == 0) {
    int n = 0;
    ::_exit(cudaGetDeviceCount(&n) == cudaSuccess && n > 0 ? 0 : 77);
  }
  int status = 0;
  ::waitpid(probe, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  const int world = argc > 2 ? std::atoi(argv[2]) : 0;
  if ((mode != "kill" && mode != "mismatch" && mode != "many" && mode != "abort") || world < 2 || world > 8) {
    std::fprintf(stderr, "usage: reliability kill|mismatch|many|abort N   (2 <= N <= 8)\n");
    return 2;
  }
  if (!have_device()) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  const std::string job = "reliability-" + mode + "-" + std::to_string(::getpid());
  ::setenv("TPCOLL_WORLD_SIZE", std::to_string(world).c_str(), 1);
  ::setenv("TPCOLL_JOB", job.c_str(), 1);
  ::setenv("TPCOLL_DEVICE", "0", 1);
  ::setenv("TPCOLL_TIMEOUT_MS", std::to_string(kTimeoutMs).c_str(), 1);
  std::fflush(nullptr);

  std::vector<pid_t> ranks;
  for (int r = 0; r < world; ++r) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test
      const int status = run_rank(mode, r, world);
      std::fflush(nullptr);  // _exit does not
      ::_exit(status);
    }
    ranks.push_back(pid);
  }
  int failed = 0;
  for (int r = 0; r < world; ++r) {
    int status = 0;
    ::waitpid(ranks[r], &status, 0);
    const bool killed = mode == "kill" && r == world - 1;
    const bool ok = killed ? WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL
                           : WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok) {
      std::printf("rank %d: FAILED (%s %d)\n", r, WIFSIGNALED(status) ? "signal" : "exit status",
                  WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
      ++failed;
    }
  }
  std::printf("reliability %s %d: %s\n", mode.c_str(), world, failed == 0 ? "PASS" : "FAIL");
  return failed == 0 ? 0 : 1;
}
