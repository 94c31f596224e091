// The CUDA all-reduce with one process per rank (started by `tpcoll run`,
// device from TPCOLL_DEVICE), peer buffers through CUDA IPC; all ranks may
// share one GPU (then under MPS). Every rank checks its result bit for bit
// against the numeric contract, recomputing every rank's input locally, for
// one-shot and two-shot, odd and chunked sizes, eagerly and from a replayed
// CUDA graph, then prints the graph-replay time of small ops (information,
// not a pass criterion). Exit 0 pass, 1 fail, 77 without a CUDA device.
#include "common/numerics.hpp"

#include <tpcoll/tpcoll.hpp>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <vector>

namespace {

namespace nx = tpcoll::numerics;

// Rank r's element i: a bf16-representable value in [-1, 1), -0.0 sometimes.
float input(int r, std::size_t i, std::uint32_t seed) {
  std::uint32_t x = static_cast<std::uint32_t>(i) * 2654435761u ^ (static_cast<std::uint32_t>(r) + 1) * 40503u ^ seed;
  x ^= x >> 13;
  x *= 0x5bd1e995u;
  x ^= x >> 15;
  if (i % 101 == 0) return -0.0f;
  return static_cast<float>(static_cast<int>(x % 4096) - 2048) / 2048.0f;
}

bool check(tpcoll::Communicator& comm, cudaStream_t stream, std::size_t count, tpcoll::Algo algo, bool graph,
           std::uint32_t seed) {
  const int rank = comm.rank(), world = comm.world_size();
  std::vector<std::uint16_t> host(count), expected(count), got(count);
  for (std::size_t i = 0; i < count; ++i) {
    host[i] = nx::float_to_bf16(input(rank, i, seed));
    float acc = nx::bf16_to_float(nx::float_to_bf16(input(0, i, seed)));
    for (int r = 1; r < world; ++r) acc += nx::bf16_to_float(nx::float_to_bf16(input(r, i, seed)));
    expected[i] = nx::float_to_bf16(acc);
  }
  void *in = nullptr, *out = nullptr;
  cudaMalloc(&in, count * 2);
  cudaMalloc(&out, count * 2);
  cudaMemcpy(in, host.data(), count * 2, cudaMemcpyHostToDevice);
  cudaDeviceSynchronize();
  comm.force_algo(algo);
  if (graph) {
    cudaGraph_t g;
    cudaGraphExec_t exec;
    cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal);
    comm.all_reduce(in, out, count, tpcoll::DType::kBFloat16, stream);
    cudaStreamEndCapture(stream, &g);
    cudaGraphInstantiate(&exec, g, 0);
    for (int i = 0; i < 3; ++i) cudaGraphLaunch(exec, stream);
    cudaStreamSynchronize(stream);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(g);
  } else {
    comm.all_reduce(in, out, count, tpcoll::DType::kBFloat16, stream);
  }
  const cudaError_t status = cudaStreamSynchronize(stream);
  cudaMemcpy(got.data(), out, count * 2, cudaMemcpyDeviceToHost);
  cudaFree(in);
  cudaFree(out);
  comm.force_algo(std::nullopt);
  tpcoll_result_t async = TPCOLL_SUCCESS;
  tpcoll::check(tpcoll_comm_get_async_error(comm.native(), &async));
  const bool ok = status == cudaSuccess && async == TPCOLL_SUCCESS && got == expected;
  if (!ok)
    std::fprintf(stderr, "rank %d: count %zu algo %d graph %d: FAILED (%s, async %s)\n", rank, count,
                 static_cast<int>(algo), graph, cudaGetErrorString(status), tpcoll_result_string(async));
  return ok;
}

double graph_replay_us(tpcoll::Communicator& comm, cudaStream_t stream, std::size_t bytes) {
  void *in = nullptr, *out = nullptr;
  cudaMalloc(&in, bytes);
  cudaMalloc(&out, bytes);
  cudaMemset(in, 0, bytes);
  cudaDeviceSynchronize();
  constexpr int kCalls = 50;
  cudaGraph_t g;
  cudaGraphExec_t exec;
  cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal);
  for (int i = 0; i < kCalls; ++i) comm.all_reduce(in, out, bytes / 2, tpcoll::DType::kBFloat16, stream);
  cudaStreamEndCapture(stream, &g);
  cudaGraphInstantiate(&exec, g, 0);
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<float> times;
  for (int rep = 0; rep < 20; ++rep) {
    cudaEventRecord(start, stream);
    cudaGraphLaunch(exec, stream);
    cudaEventRecord(stop, stream);
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    times.push_back(ms * 1000.0f / kCalls);
  }
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(g);
  cudaFree(in);
  cudaFree(out);
  return times[times.size() / 2];
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  try {
    tpcoll::Communicator comm(tpcoll::Config::from_env());
    cudaStream_t stream;
    cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
    bool ok = true;
    for (std::size_t count : {std::size_t{1}, std::size_t{999}, std::size_t{1} << 16, (std::size_t{5} << 20) + 7})
      for (auto algo : {tpcoll::Algo::kOneShot, tpcoll::Algo::kTwoShot})
        for (bool graph : {false, true}) ok = check(comm, stream, count, algo, graph, 17) && ok;
    for (std::size_t bytes : {std::size_t{4096}, std::size_t{65536}}) {
      const double us = graph_replay_us(comm, stream, bytes);
      if (comm.rank() == 0)
        std::printf("graph replay, %d processes, bf16 %zu B: %.2f us per op\n", comm.world_size(), bytes, us);
    }
    cudaStreamDestroy(stream);
    std::printf("rank %d: %s\n", comm.rank(), ok ? "all checks ok" : "FAILED");
    return ok ? 0 : 1;
  } catch (const tpcoll::Error& e) {
    std::fprintf(stderr, "tpcoll error: %s\n", e.what());
    return 1;
  }
}
