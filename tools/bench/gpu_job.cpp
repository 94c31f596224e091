#include "tools/bench/gpu_job.hpp"

#include <algorithm>
#include <limits>
#include <stdexcept>

namespace tpcoll::bench::gpu {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(fmt::format("{}: {}", what, cudaGetErrorString(e)));
}

MedianEstimate time_graph(cudaStream_t origin, const std::vector<cudaStream_t>& streams,
                          const std::function<void()>& body, int calls, const SampleBudget& budget,
                          const LargestOverRanks& largest) {
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  cudaEvent_t fork, join;
  for (cudaEvent_t* e : {&fork, &join}) check(cudaEventCreate(e), "cudaEventCreate");
  check(cudaStreamBeginCapture(origin, cudaStreamCaptureModeThreadLocal), "begin capture");
  check(cudaEventRecord(fork, origin), "record");
  for (cudaStream_t s : streams) check(cudaStreamWaitEvent(s, fork), "wait");
  body();
  for (cudaStream_t s : streams) {
    check(cudaEventRecord(join, s), "record");
    check(cudaStreamWaitEvent(origin, join), "wait");
  }
  check(cudaStreamEndCapture(origin, &graph), "end capture");
  check(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
  check(cudaGraphLaunch(exec, origin), "warm-up replay");
  std::vector<double> samples;  // us per call, one per replay
  const auto replay = [&](std::size_t replays) {
    std::vector<cudaEvent_t> marks(replays + 1);
    for (cudaEvent_t& e : marks) check(cudaEventCreate(&e), "cudaEventCreate");
    check(cudaEventRecord(marks[0], origin), "record");
    for (std::size_t i = 0; i < replays; ++i) {
      check(cudaGraphLaunch(exec, origin), "replay");
      check(cudaEventRecord(marks[i + 1], origin), "record");
    }
    check(cudaEventSynchronize(marks[replays]), "sync");
    for (std::size_t i = 0; i < replays; ++i) {
      float ms = 0;
      check(cudaEventElapsedTime(&ms, marks[i], marks[i + 1]), "elapsed");
      samples.push_back(ms * 1000.0 / calls);
    }
    for (cudaEvent_t e : marks) cudaEventDestroy(e);
  };
  MedianEstimate estimate;
  std::array<double, 2> replay_ms_and_noise{0, std::numeric_limits<double>::infinity()};
  for (std::size_t done = 0, more;
       (more = more_samples(budget, done, replay_ms_and_noise[0], replay_ms_and_noise[1])) > 0; done += more) {
    replay(more);
    estimate = estimate_median(samples);
    replay_ms_and_noise = {estimate.median * calls / 1000, estimate.noise};
    largest(replay_ms_and_noise);
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  for (cudaEvent_t e : {fork, join}) cudaEventDestroy(e);
  return estimate;
}

double copy_bandwidth(int replays) {
  constexpr std::size_t kBytes = 256u << 20;
  void *src = nullptr, *dst = nullptr;
  cudaStream_t stream = nullptr;
  check(cudaMalloc(&src, kBytes), "cudaMalloc");
  check(cudaMalloc(&dst, kBytes), "cudaMalloc");
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  const auto copies = [&] {
    for (int i = 0; i < 4; ++i) check(cudaMemcpyAsync(dst, src, kBytes, cudaMemcpyDeviceToDevice, stream), "copy");
  };
  SampleBudget budget;
  budget.least = static_cast<std::size_t>(replays);
  const double us = time_graph(stream, {}, copies, 4, budget, [](std::array<double, 2>&) {}).median;
  cudaStreamDestroy(stream);
  cudaFree(src);
  cudaFree(dst);
  return 2.0 * static_cast<double>(kBytes) / (us * 1e-6);
}

Row start_row(const char* op, DType dtype, std::size_t count, int world) {
  Row row;
  row.op = op;
  row.dtype = dtype_name(dtype);
  row.count = count;
  row.bytes = count * dtype_size(dtype);
  row.world = world;
  return row;
}

void time_candidates(GpuJob& job, Row& row, const std::vector<Algo>& candidates, const std::function<void()>& call,
                     int calls) {
  for (Algo algo : candidates) {
    job.force(algo);
    row.candidates.emplace_back(algo_label(algo), job.time_calls(row, call, calls));
  }
  job.force(std::nullopt);
}

}  // namespace tpcoll::bench::gpu
