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
//   reliability ipc_fault N  TPCOLL_FAULT_IPC_OPEN=1:0: rank 1 fails to open
//                            rank 0's buffer (TRT-LLM#16899: the open failed
//                            though peer access said yes). Ranks sharing GPU 0:
//                            creation fails on every rank, at once, naming the
//                            pair; with a GPU per rank (N GPUs or more): the
//                            communicator takes the NCCL path and its
//                            all-reduces are right
//   reliability cycles N     1,000 create/op/destroy cycles (vllm#46515): each
//                            rank's file descriptors, and the GPU's free memory
//                            (IPC mappings pin their peer's buffer), end where
//                            they started
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
#include <filesystem>
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

std::size_t open_fds() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

// Creation under an injected IPC failure (TPCOLL_FAULT_IPC_OPEN=1:0, set by main).
void run_ipc_fault(int rank, int world) {
  int devices = 0;
  cuda(cudaGetDeviceCount(&devices), "cudaGetDeviceCount");
  const bool gpu_per_rank = devices >= world;
  if (gpu_per_rank) ::setenv("TPCOLL_DEVICE", std::to_string(rank).c_str(), 1);
  tpcoll_comm_config_t config{};
  tpcoll_comm_t comm = nullptr;
  const auto start = std::chrono::steady_clock::now();
  const tpcoll_result_t created =
      tpcoll_comm_config_from_env(&config) == TPCOLL_SUCCESS ? tpcoll_comm_create(&config, &comm) : TPCOLL_INTERNAL_ERROR;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::string message = created == TPCOLL_SUCCESS ? "" : tpcoll_last_error();
  std::printf("rank %d: after %.2f s: %s\n", rank, seconds, message.c_str());
  if (!gpu_per_rank) {
    check(created == TPCOLL_UNSUPPORTED, rank, "creation fails with TPCOLL_UNSUPPORTED");
    check(message.find("rank 1 could not open rank 0's buffer through CUDA IPC") != std::string::npos, rank,
          "the message names the pair");
    check(message.find("share a GPU") != std::string::npos, rank, "and says why NCCL cannot take over");
    check(seconds < 20.0, rank, "at once, not after a timeout");
    return;
  }
  if (created != TPCOLL_SUCCESS) {
    check(false, rank, "with a GPU per rank the communicator takes the NCCL path: " + message);
    return;
  }
  const std::int64_t shape[] = {4096};
  tpcoll_plan_info_t plan{};
  check(tpcoll_plan(comm, TPCOLL_OP_ALL_REDUCE, TPCOLL_FLOAT32, 1, shape, 0, &plan) == TPCOLL_SUCCESS &&
            plan.algo == TPCOLL_ALGO_FALLBACK,
        rank, std::string("every op takes the NCCL path: ") + plan.reason);
  Buffers b(4096);
  unsigned wrong = 0;
  for (int it = 0; it < 10; ++it) {
    fill<<<4, 256, 0, b.stream>>>(b.x, 4096, it, rank);
    check(all_reduce(comm, b.x, b.y, 4096, b.stream) == TPCOLL_SUCCESS, rank, "an all-reduce on the NCCL path");
    verify<<<4, 256, 0, b.stream>>>(b.y, 4096, it, world, b.wrong);
  }
  cuda(cudaMemcpy(&wrong, b.wrong, sizeof wrong, cudaMemcpyDeviceToHost), "cudaMemcpy");
  check(wrong == 0, rank, "its results are right");
  tpcoll_comm_destroy(comm);
}

// 1,000 create/op/destroy cycles; a CPU communicator of the same ranks is the
// barrier around the measurements.
void run_cycles(int rank) {
  tpcoll_comm_config_t gpu{}, cpu{};
  tpcoll_comm_t barrier = nullptr;
  if (tpcoll_comm_config_from_env(&gpu) != TPCOLL_SUCCESS) return check(false, rank, tpcoll_last_error());
  cpu = gpu;
  cpu.device = TPCOLL_DEVICE_CPU;
  if (tpcoll_comm_create(&cpu, &barrier) != TPCOLL_SUCCESS) return check(false, rank, tpcoll_last_error());
  const auto wait_for_all = [&] {
    float in = 0.0f, out = 0.0f;
    return tpcoll_all_reduce(barrier, &in, &out, 1, TPCOLL_FLOAT32, nullptr) == TPCOLL_SUCCESS;
  };
  Buffers b(1024);
  const auto cycle = [&] {
    tpcoll_comm_t comm = nullptr;
    if (tpcoll_comm_create(&gpu, &comm) != TPCOLL_SUCCESS) return false;
    fill<<<4, 256, 0, b.stream>>>(b.x, 1024, 0, rank);
    const bool ok = all_reduce(comm, b.x, b.y, 1024, b.stream) == TPCOLL_SUCCESS &&
                    cudaStreamSynchronize(b.stream) == cudaSuccess && async_error(comm) == TPCOLL_SUCCESS;
    return tpcoll_comm_destroy(comm) == TPCOLL_SUCCESS && ok;
  };
  const auto free_bytes = [] {
    std::size_t free = 0, total = 0;
    cudaMemGetInfo(&free, &total);
    return free;
  };
  if (!cycle()) return check(false, rank, std::string("the first cycle: ") + tpcoll_last_error());
  wait_for_all();
  const std::size_t fds = open_fds(), free_before = free_bytes();
  const auto start = std::chrono::steady_clock::now();
  int done = 0;
  for (; done < 1000; ++done)
    if (!cycle()) break;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  check(done == 1000, rank, "1,000 cycles (" + std::to_string(done) + " done, " + std::to_string(seconds) + " s)");
  wait_for_all();
  const std::size_t free_after = free_bytes();
  check(open_fds() == fds, rank,
        "file descriptors as they were (" + std::to_string(fds) + " -> " + std::to_string(open_fds()) + ")");
  // Every rank's staging buffer is over 8 MiB: 4 MiB of slack is granularity.
  check(free_before <= free_after + (std::size_t{4} << 20), rank,
        "free device memory as it was (" + std::to_string(free_before) + " -> " + std::to_string(free_after) + ")");
  wait_for_all();
  tpcoll_comm_destroy(barrier);
}

int run_rank(const std::string& mode, int rank, int world) {
  ::setenv("TPCOLL_RANK", std::to_string(rank).c_str(), 1);
  if (mode == "ipc_fault" || mode == "cycles") {
    if (mode == "ipc_fault")
      run_ipc_fault(rank, world);
    else
      run_cycles(rank);
    return failures == 0 ? 0 : 1;
  }
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
  const bool known = mode == "kill" || mode == "mismatch" || mode == "many" || mode == "abort" ||
                     mode == "ipc_fault" || mode == "cycles";
  if (!known || world < 2 || world > 8) {
    std::fprintf(stderr, "usage: reliability kill|mismatch|many|abort|ipc_fault|cycles N   (2 <= N <= 8)\n");
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
  if (mode == "ipc_fault") ::setenv("TPCOLL_FAULT_IPC_OPEN", "1:0", 1);
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
