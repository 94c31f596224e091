#include "tools/bench/gpu_bench.hpp"

#include "tools/bench/data.hpp"
#include "tools/bench/harness.hpp"
#include "tools/bench/report.hpp"

#include <cuda_runtime.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <optional>
#include <memory>
#include <stdexcept>
#include <vector>

namespace tpcoll::bench {
namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(fmt::format("{}: {}", what, cudaGetErrorString(e)));
}

// One rank of the in-process job: its communicator, stream and buffers.
struct GpuRank {
  tpcoll_comm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  void* in = nullptr;
  void* out = nullptr;
};

class GpuJob {
 public:
  GpuJob(int world, int device, std::size_t max_bytes) : device_(device), ranks_(world) {
    check(cudaSetDevice(device), "cudaSetDevice");
    std::vector<int> devices(world, device);
    std::vector<tpcoll_comm_t> comms(world);
    tpcoll::check(tpcoll_comm_create_local(world, devices.data(), comms.data()));
    for (int r = 0; r < world; ++r) {
      GpuRank& g = ranks_[r];
      g.comm = comms[r];
      check(cudaStreamCreateWithFlags(&g.stream, cudaStreamNonBlocking), "cudaStreamCreate");
      check(cudaMalloc(&g.in, max_bytes), "cudaMalloc");
      check(cudaMalloc(&g.out, max_bytes), "cudaMalloc");
    }
    check(cudaStreamCreateWithFlags(&origin_, cudaStreamNonBlocking), "cudaStreamCreate");
  }
  ~GpuJob() {
    cudaDeviceSynchronize();
    for (GpuRank& g : ranks_) {
      tpcoll_comm_destroy(g.comm);
      cudaStreamDestroy(g.stream);
      cudaFree(g.in);
      cudaFree(g.out);
    }
    cudaStreamDestroy(origin_);
  }

  int world() const { return static_cast<int>(ranks_.size()); }
  GpuRank& rank(int r) { return ranks_[r]; }

  void force(std::optional<Algo> algo) {
    for (GpuRank& g : ranks_)
      tpcoll::check(tpcoll_comm_force_algo(g.comm, algo ? static_cast<int>(*algo) : TPCOLL_ALGO_AUTO));
  }

  // One all-reduce on every rank, each on its own stream.
  void all_reduce(std::size_t count, DType dtype) {
    for (GpuRank& g : ranks_)
      tpcoll::check(tpcoll_all_reduce(g.comm, g.in, g.out, count, static_cast<tpcoll_dtype_t>(dtype), g.stream));
  }

  // Median microseconds per call of `body` (which enqueues `calls` ops on
  // every rank's stream), over graph replays.
  double time_graph(const std::function<void()>& body, int calls, int replays) {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    cudaEvent_t fork, join, start, stop;
    for (cudaEvent_t* e : {&fork, &join, &start, &stop}) check(cudaEventCreate(e), "cudaEventCreate");
    check(cudaStreamBeginCapture(origin_, cudaStreamCaptureModeThreadLocal), "begin capture");
    check(cudaEventRecord(fork, origin_), "record");
    for (GpuRank& g : ranks_) check(cudaStreamWaitEvent(g.stream, fork), "wait");
    body();
    for (GpuRank& g : ranks_) {
      check(cudaEventRecord(join, g.stream), "record");
      check(cudaStreamWaitEvent(origin_, join), "wait");
    }
    check(cudaStreamEndCapture(origin_, &graph), "end capture");
    check(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
    check(cudaGraphLaunch(exec, origin_), "warm-up replay");
    std::vector<float> times;
    for (int i = 0; i < replays; ++i) {
      check(cudaEventRecord(start, origin_), "record");
      check(cudaGraphLaunch(exec, origin_), "replay");
      check(cudaEventRecord(stop, origin_), "record");
      check(cudaEventSynchronize(stop), "sync");
      float ms = 0;
      check(cudaEventElapsedTime(&ms, start, stop), "elapsed");
      times.push_back(ms * 1000.0f / static_cast<float>(calls));
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    for (cudaEvent_t e : {fork, join, start, stop}) cudaEventDestroy(e);
    std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
    return times[times.size() / 2];
  }

  // Device-to-device copy bandwidth (bytes read + written per second) of a
  // 256 MiB copy in this run: the roofline for ranks sharing one GPU.
  double copy_bandwidth(int replays) {
    constexpr std::size_t kBytes = 256u << 20;
    void *src = nullptr, *dst = nullptr;
    check(cudaMalloc(&src, kBytes), "cudaMalloc");
    check(cudaMalloc(&dst, kBytes), "cudaMalloc");
    GpuRank& g = ranks_[0];
    const double us = time_graph(
        [&] {
          for (int i = 0; i < 4; ++i) check(cudaMemcpyAsync(dst, src, kBytes, cudaMemcpyDeviceToDevice, g.stream), "copy");
        },
        4, replays);
    cudaFree(src);
    cudaFree(dst);
    return 2.0 * static_cast<double>(kBytes) / (us * 1e-6);
  }

 private:
  int device_;
  std::vector<GpuRank> ranks_;
  cudaStream_t origin_ = nullptr;
};

// Bytes every rank reads and writes in device memory, all ranks together.
double bytes_touched(const std::string& algo, std::size_t bytes, int world) {
  const double s = static_cast<double>(bytes), n = world;
  if (algo == "twoshot") return n * (2.0 + 4.0 * (n - 1) / n) * s;
  return n * (2.0 * n + 1.0) * s;  // one-shot: push (n-1)S + read S; reduce nS + write S
}

Row run_all_reduce(GpuJob& job, const Options& o, DType dtype, std::size_t count, double copy_bw) {
  const int world = job.world();
  const std::size_t elem = dtype_size(dtype);
  const std::size_t bytes = count * elem;
  Row row;
  row.op = "all_reduce";
  row.dtype = dtype_name(dtype);
  row.bytes = bytes;
  row.count = count;
  row.world = world;
  row.baseline = "copy-roofline";

  const std::uint64_t seed = mix(count * 131 + static_cast<std::uint64_t>(dtype));
  std::vector<std::byte> host(bytes), got(bytes), expected(bytes);
  for (int r = 0; r < world; ++r) {
    fill_floats(dtype, host.data(), count, seed, r);
    check(cudaMemcpy(job.rank(r).in, host.data(), bytes, cudaMemcpyHostToDevice), "upload");
  }
  // The contract, on the host: rank 0's value, plus ranks 1..n-1 in order, one rounding.
  for (std::size_t i = 0; i < count; ++i) {
    float acc = rounded_sample(dtype, seed, 0, i);
    for (int r = 1; r < world; ++r) acc += rounded_sample(dtype, seed, r, i);
    store_float(dtype, expected.data(), i, acc);
  }
  std::string failure;
  for (Algo algo : {Algo::kOneShot, Algo::kTwoShot}) {
    job.force(algo);
    for (int r = 0; r < world; ++r) check(cudaMemset(job.rank(r).out, 0xff, bytes), "memset");
    // cudaMemset runs on the legacy stream, which the ranks' non-blocking
    // streams do not wait for.
    check(cudaDeviceSynchronize(), "sync after memset");
    job.all_reduce(count, dtype);
    check(cudaDeviceSynchronize(), "sync after all_reduce");
    for (int r = 0; r < world && failure.empty(); ++r) {
      check(cudaMemcpy(got.data(), job.rank(r).out, bytes, cudaMemcpyDeviceToHost), "download");
      if (std::memcmp(got.data(), expected.data(), bytes) != 0)
        failure = fmt::format("{} on rank {} differs from the contract", algo_label(algo), r);
    }
  }
  job.force(std::nullopt);
  row.check = failure.empty() ? "ok" : failure;

  tpcoll_plan_info_t plan{};
  const std::int64_t shape[1] = {static_cast<std::int64_t>(count)};
  tpcoll::check(tpcoll_plan(job.rank(0).comm, TPCOLL_OP_ALL_REDUCE, static_cast<tpcoll_dtype_t>(dtype), 1, shape, 0, &plan));
  row.algo = plan.algorithm;
  const int calls = bytes <= (1u << 20) ? 50 : 5;
  row.time_us = job.time_graph(
      [&] {
        for (int i = 0; i < calls; ++i) job.all_reduce(count, dtype);
      },
      calls, std::max(5, o.iterations));
  row.algbw = static_cast<double>(bytes) / row.time_us / 1e3;
  row.busbw = row.algbw * 2.0 * (world - 1) / world;
  row.baseline_time_us = bytes_touched(row.algo, bytes, world) / copy_bw * 1e6;
  return row;
}

}  // namespace

bool gpu_available() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

int run_gpu(const Options& o) {
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  RunInfo info = describe_run();
  info.device = fmt::format("cuda: {} (device {})", prop.name, device);
  info.placement = fmt::format("{} ranks sharing one GPU, as streams of one process", o.ranks);
  print_header(info, o.ranks, "copy-roofline (same-run device-to-device copy bandwidth)");

  GpuJob job(o.ranks, device, o.max_bytes);
  const double copy_bw = job.copy_bandwidth(5);
  fmt::print("# device-to-device copy: {:.0f} GB/s (bytes read + written)\n", copy_bw / 1e9);
  std::vector<Row> rows;
  for (DType d : o.dtypes)
    for (std::size_t b : sweep_sizes(o))
      if (b >= dtype_size(d)) {
        rows.push_back(run_all_reduce(job, o, d, b / dtype_size(d), copy_bw));
        print_row(rows.back());
      }
  return summarize(info, rows, o.json_path, /*print=*/true);
}

}  // namespace tpcoll::bench
