#include "tools/bench/gpu_bench.hpp"

#include "tools/bench/data.hpp"
#include "tools/bench/fused_reference.hpp"
#include "tools/bench/harness.hpp"
#include "tools/bench/init_time.hpp"
#include "tools/bench/report.hpp"

#include "cpu/kernels.hpp"
#include "core/tune_load.hpp"
#include "cuda/cuda_backend.hpp"
#include "cuda/tune_key.hpp"
#include "tools/tune.hpp"

#include <cuda_runtime.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstdlib>
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

// Median of per-replay microseconds per call: `replays` graph replays are
// enqueued back to back with events between them and timed after one sync,
// so ranks in other processes, replaying their own graphs, stay in step.
double time_graph(cudaStream_t origin, const std::vector<cudaStream_t>& streams, const std::function<void()>& body,
                  int calls, int replays) {
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
  std::vector<cudaEvent_t> marks(replays + 1);
  for (cudaEvent_t& e : marks) check(cudaEventCreate(&e), "cudaEventCreate");
  check(cudaEventRecord(marks[0], origin), "record");
  for (int i = 0; i < replays; ++i) {
    check(cudaGraphLaunch(exec, origin), "replay");
    check(cudaEventRecord(marks[i + 1], origin), "record");
  }
  check(cudaEventSynchronize(marks[replays]), "sync");
  std::vector<float> times;
  for (int i = 0; i < replays; ++i) {
    float ms = 0;
    check(cudaEventElapsedTime(&ms, marks[i], marks[i + 1]), "elapsed");
    times.push_back(ms * 1000.0f / static_cast<float>(calls));
  }
  for (cudaEvent_t e : marks) cudaEventDestroy(e);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  for (cudaEvent_t e : {fork, join}) cudaEventDestroy(e);
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  return times[times.size() / 2];
}

// Device-to-device copy bandwidth (bytes read + written per second) of a
// 256 MiB copy in this run: the roofline for ranks sharing one GPU.
double copy_bandwidth(int replays) {
  constexpr std::size_t kBytes = 256u << 20;
  void *src = nullptr, *dst = nullptr;
  cudaStream_t stream = nullptr;
  check(cudaMalloc(&src, kBytes), "cudaMalloc");
  check(cudaMalloc(&dst, kBytes), "cudaMalloc");
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  const double us = time_graph(
      stream, {},
      [&] {
        for (int i = 0; i < 4; ++i) check(cudaMemcpyAsync(dst, src, kBytes, cudaMemcpyDeviceToDevice, stream), "copy");
      },
      4, replays);
  cudaStreamDestroy(stream);
  cudaFree(src);
  cudaFree(dst);
  return 2.0 * static_cast<double>(kBytes) / (us * 1e-6);
}

// One rank driven by this process: its communicator, stream and buffers.
struct GpuRank {
  int rank = 0;
  tpcoll_comm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  void* in = nullptr;
  void* out = nullptr;      // world x the largest input: room for a gather
  void* scratch = nullptr;  // as large: the flat gather of the concatenation baseline
  // The fused op's other operands (the largest input each), allocated on first use.
  void* residual = nullptr;
  void* weight = nullptr;
  void* residual_out = nullptr;
  // The FP8 op's codes and per-token scales (as large), allocated on first use.
  void* codes = nullptr;
  void* scales = nullptr;
};

// The ranks this process drives: all of them (streams of one process) or
// its own (one process per rank, started by `tpcoll run`).
class GpuJob {
 public:
  // Every rank, as a stream of this process on `device`.
  GpuJob(int world, int device, std::size_t max_bytes) : world_(world), max_bytes_(max_bytes) {
    check(cudaSetDevice(device), "cudaSetDevice");
    std::vector<int> devices(world, device);
    std::vector<tpcoll_comm_t> comms(world);
    tpcoll::check(tpcoll_comm_create_local(world, devices.data(), comms.data()));
    for (int r = 0; r < world; ++r) add_rank(r, comms[r], max_bytes);
  }
  // This process's rank of a launched job; its device from TPCOLL_DEVICE.
  GpuJob(const tpcoll_comm_config_t& config, std::size_t max_bytes)
      : world_(config.world_size), max_bytes_(max_bytes) {
    check(cudaSetDevice(config.device), "cudaSetDevice");
    tpcoll_comm_t comm = nullptr;
    tpcoll::check(tpcoll_comm_create(&config, &comm));
    add_rank(config.rank, comm, max_bytes);
  }
  ~GpuJob() {
    cudaDeviceSynchronize();
    for (GpuRank& g : ranks_) {
      tpcoll_comm_destroy(g.comm);
      cudaStreamDestroy(g.stream);
      cudaFree(g.in);
      cudaFree(g.out);
      cudaFree(g.scratch);
      for (void* p : {g.residual, g.weight, g.residual_out, g.codes, g.scales}) cudaFree(p);
    }
    cudaStreamDestroy(origin_);
  }
  GpuJob(const GpuJob&) = delete;
  GpuJob& operator=(const GpuJob&) = delete;

  int world() const { return world_; }
  std::vector<GpuRank>& ranks() { return ranks_; }
  // Rank 0 prints the table; in-process jobs drive it, launched jobs may not.
  bool printer() const { return ranks_.front().rank == 0; }

  void force(std::optional<Algo> algo) {
    for (GpuRank& g : ranks_)
      tpcoll::check(tpcoll_comm_force_algo(g.comm, algo ? static_cast<int>(*algo) : TPCOLL_ALGO_AUTO));
  }

  // One all-reduce on every rank driven here, each on its own stream.
  void all_reduce(std::size_t count, DType dtype) {
    for (GpuRank& g : ranks_)
      tpcoll::check(tpcoll_all_reduce(g.comm, g.in, g.out, count, static_cast<tpcoll_dtype_t>(dtype), g.stream));
  }

  // One all-gather on every rank driven here, into `out` (or, for the
  // baseline's flat gather, the scratch).
  void all_gather(DType dtype, const std::vector<std::int64_t>& shape, int dim, bool into_scratch = false) {
    for (GpuRank& g : ranks_)
      tpcoll::check(tpcoll_all_gather(g.comm, g.in, into_scratch ? g.scratch : g.out,
                                      static_cast<tpcoll_dtype_t>(dtype), static_cast<int>(shape.size()),
                                      shape.data(), dim, g.stream));
  }

  // The fused op on every rank driven here, out of `in` into `out`.
  void fused(DType dtype, std::size_t tokens, std::size_t hidden) {
    for (GpuRank& g : ranks_)
      tpcoll::check(tpcoll_fused_allreduce_residual_rmsnorm(g.comm, g.in, g.residual, g.weight, g.out, g.residual_out,
                                                            tokens, hidden, static_cast<tpcoll_dtype_t>(dtype),
                                                            kFusedEps, g.stream));
  }
  // The reduce-scatter on every rank driven here, its share into `scratch`.
  void reduce_scatter(std::size_t count, DType dtype) {
    for (GpuRank& g : ranks_)
      tpcoll::check(tpcoll_reduce_scatter(g.comm, g.in, g.scratch, count, static_cast<tpcoll_dtype_t>(dtype), g.stream));
  }
  // The fused reduce-scatter: rank r's rows of `residual` in, its rows of
  // out into `scratch` and of residual_out into `residual_out`.
  void fused_reduce_scatter(DType dtype, std::size_t tokens, std::size_t hidden) {
    const std::size_t share = tokens / world_ * hidden * dtype_size(dtype);
    for (GpuRank& g : ranks_) {
      const std::size_t offset = share * static_cast<std::size_t>(g.rank);
      tpcoll::check(tpcoll_fused_reduce_scatter_residual_rmsnorm(
          g.comm, g.in, static_cast<std::byte*>(g.residual) + offset, g.weight, g.scratch,
          static_cast<std::byte*>(g.residual_out) + offset, tokens, hidden, static_cast<tpcoll_dtype_t>(dtype),
          kFusedEps, g.stream));
    }
  }
  // The first rank driven here whose share of `expected` (rank r's r-th
  // slice) differs from what `buffer` holds at its start, or at the same
  // offset when `at_rank_offset`; -1 if none.
  int first_differing_share(void* GpuRank::*buffer, bool at_rank_offset, const std::vector<std::byte>& expected) {
    const std::size_t share = expected.size() / static_cast<std::size_t>(world_);
    std::vector<std::byte> got(share);
    for (GpuRank& g : ranks_) {
      const std::size_t offset = share * static_cast<std::size_t>(g.rank);
      check(cudaMemcpy(got.data(), static_cast<std::byte*>(g.*buffer) + (at_rank_offset ? offset : 0), share,
                       cudaMemcpyDeviceToHost),
            "download");
      if (std::memcmp(got.data(), expected.data() + offset, share) != 0) return g.rank;
    }
    return -1;
  }

  // Its parts: the all-reduce into `out`, then the add + RMSNorm in place.
  void all_reduce_then_norm(DType dtype, std::size_t tokens, std::size_t hidden) {
    const auto d = static_cast<tpcoll_dtype_t>(dtype);
    for (GpuRank& g : ranks_) {
      tpcoll::check(tpcoll_all_reduce(g.comm, g.in, g.out, tokens * hidden, d, g.stream));
      tpcoll::check(tpcoll_add_rmsnorm(g.comm, g.out, g.residual, g.weight, g.out, g.residual_out, tokens, hidden, d,
                                       kFusedEps, g.stream));
    }
  }
  // The FP8 op on every rank driven here: out of `in` into `out` (or
  // nowhere) and `codes` / `scales`.
  void fused_fp8(DType dtype, std::size_t tokens, std::size_t hidden, Fp8Scaling scaling, bool write_out) {
    for (GpuRank& g : ranks_)
      tpcoll::check(tpcoll_fused_allreduce_residual_rmsnorm_fp8(
          g.comm, g.in, g.residual, g.weight, write_out ? g.out : nullptr, g.residual_out, g.codes,
          static_cast<tpcoll_fp8_scaling_t>(scaling), kBenchFp8Scale, static_cast<float*>(g.scales), tokens, hidden,
          static_cast<tpcoll_dtype_t>(dtype), kFusedEps, g.stream));
  }
  void allocate_norm_operands() {
    for (GpuRank& g : ranks_)
      for (void** p : {&g.residual, &g.weight, &g.residual_out, &g.codes, &g.scales})
        if (*p == nullptr) check(cudaMalloc(p, max_bytes_), "cudaMalloc");
  }

  // The first rank driven here whose `buffer` differs from `expected`, or -1.
  int first_differing_rank(void* GpuRank::*buffer, const std::vector<std::byte>& expected) {
    std::vector<std::byte> got(expected.size());
    for (GpuRank& g : ranks_) {
      check(cudaMemcpy(got.data(), g.*buffer, got.size(), cudaMemcpyDeviceToHost), "download");
      if (std::memcmp(got.data(), expected.data(), got.size()) != 0) return g.rank;
    }
    return -1;
  }

  // Sets the row's check column; only rank 0 prints rows, so a rank in
  // another process says its failure on stderr.
  void set_check(Row& row, const std::string& failure) const {
    row.check = failure.empty() ? "ok" : failure;
    if (!failure.empty() && !printer())
      fmt::print(stderr, "{} {} {} B {}: {}\n", row.op, row.dtype, row.bytes, row.shape, failure);
  }

  double time_graph(const std::function<void()>& body, int calls, int replays) {
    std::vector<cudaStream_t> streams;
    for (GpuRank& g : ranks_) streams.push_back(g.stream);
    return bench::time_graph(origin_, streams, body, calls, replays);
  }

 private:
  void add_rank(int rank, tpcoll_comm_t comm, std::size_t max_bytes) {
    GpuRank& g = ranks_.emplace_back();
    g.rank = rank;
    g.comm = comm;
    check(cudaStreamCreateWithFlags(&g.stream, cudaStreamNonBlocking), "cudaStreamCreate");
    check(cudaMalloc(&g.in, max_bytes), "cudaMalloc");
    check(cudaMalloc(&g.out, max_bytes * world_), "cudaMalloc");
    check(cudaMalloc(&g.scratch, max_bytes * world_), "cudaMalloc");
    if (origin_ == nullptr) check(cudaStreamCreateWithFlags(&origin_, cudaStreamNonBlocking), "cudaStreamCreate");
  }

  int world_;
  std::size_t max_bytes_;
  std::vector<GpuRank> ranks_;
  cudaStream_t origin_ = nullptr;
};

// Bytes every rank reads and writes in device memory, all ranks together.
double bytes_touched(const std::string& algo, std::size_t bytes, int world) {
  const double s = static_cast<double>(bytes), n = world;
  if (algo == "twoshot") return n * (2.0 + 4.0 * (n - 1) / n) * s;
  return n * (2.0 * n + 1.0) * s;  // one-shot: push (n-1)S + read S; reduce nS + write S
}

// A row of `op` over `count` elements of `dtype` per rank.
Row start_row(const char* op, DType dtype, std::size_t count, int world) {
  Row row;
  row.op = op;
  row.dtype = dtype_name(dtype);
  row.count = count;
  row.bytes = count * dtype_size(dtype);
  row.world = world;
  return row;
}

// Ops per graph replay: enough that the replay's own launch is noise.
int calls_per_replay(std::size_t bytes) { return bytes <= (1u << 20) ? 200 : 5; }

// --all-algos: the row's candidates, each forced and timed like the
// dispatched call (`calls` ops of `body` per replay).
void time_candidates(GpuJob& job, Row& row, std::initializer_list<Algo> candidates, const std::function<void()>& body,
                     int calls, int replays) {
  for (Algo algo : candidates) {
    job.force(algo);
    row.candidates.emplace_back(algo_label(algo), job.time_graph(body, calls, replays));
  }
  job.force(std::nullopt);
}

Row run_all_reduce(GpuJob& job, const Options& o, DType dtype, std::size_t count, double copy_bw) {
  const int world = job.world();
  const std::size_t elem = dtype_size(dtype);
  const std::size_t bytes = count * elem;
  Row row = start_row("all_reduce", dtype, count, world);
  row.baseline = "copy-roofline";

  const std::uint64_t seed = mix(count * 131 + static_cast<std::uint64_t>(dtype));
  std::vector<std::byte> host(bytes), expected(bytes);
  for (GpuRank& g : job.ranks()) {
    fill_floats(dtype, host.data(), count, seed, g.rank);
    check(cudaMemcpy(g.in, host.data(), bytes, cudaMemcpyHostToDevice), "upload");
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
    for (GpuRank& g : job.ranks()) check(cudaMemset(g.out, 0xff, bytes), "memset");
    // cudaMemset runs on the legacy stream, which the ranks' non-blocking
    // streams do not wait for.
    check(cudaDeviceSynchronize(), "sync after memset");
    job.all_reduce(count, dtype);
    check(cudaDeviceSynchronize(), "sync after all_reduce");
    if (const int r = job.first_differing_rank(&GpuRank::out, expected); r >= 0 && failure.empty())
      failure = fmt::format("{} on rank {} differs from the contract", algo_label(algo), r);
  }
  job.force(std::nullopt);
  job.set_check(row, failure);

  tpcoll_plan_info_t plan{};
  const std::int64_t shape[1] = {static_cast<std::int64_t>(count)};
  tpcoll::check(tpcoll_plan(job.ranks().front().comm, TPCOLL_OP_ALL_REDUCE, static_cast<tpcoll_dtype_t>(dtype), 1, shape, 0, &plan));
  row.algo = plan.algorithm;
  const int calls = calls_per_replay(bytes), replays = std::max(5, o.iterations);
  const auto body = [&] {
    for (int i = 0; i < calls; ++i) job.all_reduce(count, dtype);
  };
  row.time_us = job.time_graph(body, calls, replays);
  if (o.all_algos) time_candidates(job, row, {Algo::kOneShot, Algo::kTwoShot}, body, calls, replays);
  row.algbw = static_cast<double>(bytes) / row.time_us / 1e3;
  row.busbw = row.algbw * 2.0 * (world - 1) / world;
  row.baseline_time_us = bytes_touched(row.algo, bytes, world) / copy_bw * 1e6;
  return row;
}

// Bytes all ranks read and write in an all-gather: each rank reads its input
// once, writes it to every peer's staging and into its own output, then
// copies each peer's staged part into its output.
double gather_bytes_touched(std::size_t bytes, int world) {
  const double s = static_cast<double>(bytes), n = world;
  return n * (3.0 * n - 1.0) * s;
}

enum class GatherBaseline { kRoofline, kFlatGatherThenConcat };

// The all-gather of `shape` along `dim`, checked byte for byte against the
// concatenation of every rank's input, then timed against either the copy
// roofline or what a framework does after a flat gather: our gather of the
// flat input into a scratch buffer, then one 2-D copy per rank into the
// concatenated layout, timed in the same way.
Row run_all_gather(GpuJob& job, DType dtype, const std::vector<std::int64_t>& shape, int dim, GatherBaseline baseline,
                   double copy_bw, int replays) {
  const int world = job.world();
  std::size_t count = 1;
  for (std::int64_t e : shape) count *= static_cast<std::size_t>(e);
  Row row = start_row("all_gather", dtype, count, world);
  std::size_t inner = dtype_size(dtype);
  for (std::size_t d = static_cast<std::size_t>(dim); d < shape.size(); ++d) inner *= static_cast<std::size_t>(shape[d]);
  const std::size_t outer = row.bytes / inner, total = row.bytes * world;
  row.shape = fmt::format("[{}] dim {}", fmt::join(shape, ", "), dim);

  const std::uint64_t seed = mix(row.bytes * 977 + static_cast<std::uint64_t>(dtype) * 7 + static_cast<unsigned>(dim));
  std::vector<std::byte> host(row.bytes), expected(total);
  for (GpuRank& g : job.ranks()) {
    for (std::size_t i = 0; i < row.bytes; ++i) host[i] = std::byte{sample_byte(seed, g.rank, i)};
    check(cudaMemcpy(g.in, host.data(), row.bytes, cudaMemcpyHostToDevice), "upload");
    check(cudaMemset(g.out, 0xff, total), "memset");
  }
  for (std::size_t o = 0; o < outer; ++o)
    for (int r = 0; r < world; ++r)
      for (std::size_t j = 0; j < inner; ++j)
        expected[(o * world + r) * inner + j] = std::byte{sample_byte(seed, r, o * inner + j)};
  check(cudaDeviceSynchronize(), "sync before all_gather");
  job.all_gather(dtype, shape, dim);
  check(cudaDeviceSynchronize(), "sync after all_gather");
  const int differs = job.first_differing_rank(&GpuRank::out, expected);
  job.set_check(row, differs < 0 ? "" : fmt::format("rank {} differs from the concatenation", differs));

  tpcoll_plan_info_t plan{};
  tpcoll::check(tpcoll_plan(job.ranks().front().comm, TPCOLL_OP_ALL_GATHER, static_cast<tpcoll_dtype_t>(dtype),
                            static_cast<int>(shape.size()), shape.data(), dim, &plan));
  row.algo = plan.algorithm;
  const int calls = calls_per_replay(row.bytes);
  row.time_us = job.time_graph(
      [&] {
        for (int i = 0; i < calls; ++i) job.all_gather(dtype, shape, dim);
      },
      calls, replays);
  row.algbw = static_cast<double>(total) / row.time_us / 1e3;
  row.busbw = row.algbw * (world - 1) / world;
  if (baseline == GatherBaseline::kRoofline) {
    row.baseline = "copy-roofline";
    row.baseline_time_us = gather_bytes_touched(row.bytes, world) / copy_bw * 1e6;
    return row;
  }
  row.baseline = "flat-gather+concat";
  const std::vector<std::int64_t> flat{static_cast<std::int64_t>(row.count)};
  row.baseline_time_us = job.time_graph(
      [&] {
        for (int i = 0; i < calls; ++i) {
          job.all_gather(dtype, flat, 0, /*into_scratch=*/true);
          for (GpuRank& g : job.ranks())
            for (int r = 0; r < world; ++r)
              check(cudaMemcpy2DAsync(static_cast<std::byte*>(g.out) + r * inner, world * inner,
                                      static_cast<const std::byte*>(g.scratch) + r * row.bytes, inner, inner, outer,
                                      cudaMemcpyDeviceToDevice, g.stream),
                    "concatenation copy");
        }
      },
      calls, replays);
  return row;
}

// The fused op, checked bit for bit against the CPU kernels (all-reduce in
// rank order, then add + RMSNorm) on every rank, its deviation from fp64
// reported, then timed. One rank: against the copy roofline of the bytes it
// must move (x and residual read, out and residual_out written); more:
// against our all-reduce followed by our separate add + RMSNorm.
Row run_fused(GpuJob& job, DType dtype, std::size_t tokens, std::size_t hidden, double copy_bw, int replays,
              bool all_algos) {
  const int world = job.world();
  const std::size_t count = tokens * hidden, elem = dtype_size(dtype), bytes = count * elem;
  Row row = start_row("fused_allreduce_rmsnorm", dtype, count, world);
  row.tokens = tokens;
  row.hidden = hidden;
  job.allocate_norm_operands();

  const std::uint64_t seed = fused_seed(dtype, tokens, hidden);
  std::vector<std::vector<std::byte>> xs(world, std::vector<std::byte>(bytes));
  std::vector<std::byte> residual(bytes), weight(hidden * elem);
  for (int r = 0; r < world; ++r) fill_floats(dtype, xs[r].data(), count, seed, r);
  fill_floats(dtype, residual.data(), count, seed, kResidualSeedRank);
  fill_floats(dtype, weight.data(), hidden, seed, kWeightSeedRank);
  for (GpuRank& g : job.ranks()) {
    check(cudaMemcpy(g.in, xs[g.rank].data(), bytes, cudaMemcpyHostToDevice), "upload");
    check(cudaMemcpy(g.residual, residual.data(), bytes, cudaMemcpyHostToDevice), "upload");
    check(cudaMemcpy(g.weight, weight.data(), weight.size(), cudaMemcpyHostToDevice), "upload");
  }
  std::vector<const void*> sources;
  for (const auto& x : xs) sources.push_back(x.data());
  std::vector<std::byte> sum(bytes), expected_out(bytes), expected_residual(bytes);
  cpu::reduce(static_cast<tpcoll_dtype_t>(dtype), sources.data(), world, sum.data(), count);
  cpu::add_rmsnorm(static_cast<tpcoll_dtype_t>(dtype), RmsNormRows{sum.data(), residual.data(), weight.data(),
                                                                          expected_out.data(), expected_residual.data(),
                                                                          tokens, hidden, kFusedEps});
  // The dispatched algorithm, and with --all-algos every candidate, forced.
  const bool candidates = all_algos && world > 1;
  std::vector<std::optional<Algo>> checked{std::nullopt};
  if (candidates) checked.insert(checked.end(), {Algo::kOneShot, Algo::kTwoShot, Algo::kUnfused});
  std::string failure;
  for (const std::optional<Algo> algo : checked) {
    job.force(algo);
    for (GpuRank& g : job.ranks()) check(cudaMemset(g.out, 0xff, bytes), "memset");
    check(cudaDeviceSynchronize(), "sync before the fused op");
    job.fused(dtype, tokens, hidden);
    check(cudaDeviceSynchronize(), "sync after the fused op");
    int differs = job.first_differing_rank(&GpuRank::out, expected_out);
    if (differs < 0) differs = job.first_differing_rank(&GpuRank::residual_out, expected_residual);
    if (differs >= 0 && failure.empty())
      failure = fmt::format("{}rank {} differs from the CPU kernels",
                            algo ? fmt::format("{}: ", algo_label(*algo)) : std::string(), differs);
  }
  job.force(std::nullopt);
  job.set_check(row, failure);
  row.max_error = fused_max_error(dtype, seed, world, residual.data(), weight.data(), expected_out.data(), tokens, hidden);

  tpcoll_plan_info_t plan{};
  const std::int64_t shape[2] = {static_cast<std::int64_t>(tokens), static_cast<std::int64_t>(hidden)};
  tpcoll::check(tpcoll_plan(job.ranks().front().comm, TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM,
                            static_cast<tpcoll_dtype_t>(dtype), 2, shape, 0, &plan));
  row.algo = world == 1 ? "local" : plan.algorithm;
  const int calls = calls_per_replay(bytes);
  const auto body = [&] {
    for (int i = 0; i < calls; ++i) job.fused(dtype, tokens, hidden);
  };
  row.time_us = job.time_graph(body, calls, replays);
  if (candidates) time_candidates(job, row, {Algo::kOneShot, Algo::kTwoShot, Algo::kUnfused}, body, calls, replays);
  row.algbw = static_cast<double>(bytes) / row.time_us / 1e3;
  row.busbw = row.algbw * 2.0 * (world - 1) / world;
  if (world == 1) {
    row.baseline = "copy-roofline";
    row.baseline_time_us = 4.0 * static_cast<double>(bytes) / copy_bw * 1e6;
    return row;
  }
  row.baseline = "all_reduce+add_rmsnorm";
  row.baseline_time_us = job.time_graph(
      [&] {
        for (int i = 0; i < calls; ++i) job.all_reduce_then_norm(dtype, tokens, hidden);
      },
      calls, replays);
  return row;
}

// The FP8 op, checked bit for bit against the CPU kernels (all-reduce, add +
// RMSNorm, quantisation) on every rank, with and without out, then timed
// without out (as it replaces the fused op in a model: the next GEMM reads
// the codes) beside the fused op without quantisation in the same run:
// speedup = fused / fused_fp8.
Row run_fused_fp8(GpuJob& job, DType dtype, std::size_t tokens, std::size_t hidden, Fp8Scaling scaling, int replays) {
  const int world = job.world();
  const std::size_t count = tokens * hidden, elem = dtype_size(dtype), bytes = count * elem;
  const auto d = static_cast<tpcoll_dtype_t>(dtype);
  Row row = start_row(fp8_op_label(scaling), dtype, count, world);
  row.tokens = tokens;
  row.hidden = hidden;
  job.allocate_norm_operands();

  const std::uint64_t seed = fused_seed(dtype, tokens, hidden);
  std::vector<std::vector<std::byte>> xs(world, std::vector<std::byte>(bytes));
  std::vector<std::byte> residual(bytes), weight(hidden * elem);
  for (int r = 0; r < world; ++r) fill_floats(dtype, xs[r].data(), count, seed, r);
  fill_floats(dtype, residual.data(), count, seed, kResidualSeedRank);
  fill_floats(dtype, weight.data(), hidden, seed, kWeightSeedRank);
  for (GpuRank& g : job.ranks()) {
    check(cudaMemcpy(g.in, xs[g.rank].data(), bytes, cudaMemcpyHostToDevice), "upload");
    check(cudaMemcpy(g.residual, residual.data(), bytes, cudaMemcpyHostToDevice), "upload");
    check(cudaMemcpy(g.weight, weight.data(), weight.size(), cudaMemcpyHostToDevice), "upload");
  }
  std::vector<const void*> sources;
  for (const auto& x : xs) sources.push_back(x.data());
  std::vector<std::byte> sum(bytes), expected_out(bytes), expected_residual(bytes), expected_codes(count);
  std::vector<float> expected_scales(tokens);
  cpu::reduce(d, sources.data(), world, sum.data(), count);
  cpu::add_rmsnorm(d, RmsNormRows{sum.data(), residual.data(), weight.data(), expected_out.data(),
                                  expected_residual.data(), tokens, hidden, kFusedEps});
  cpu::quantise_fp8(d, expected_out.data(), tokens, hidden,
                    fp8::Fp8Output{expected_codes.data(), expected_scales.data(),
                                   static_cast<tpcoll_fp8_scaling_t>(scaling), kBenchFp8Scale});
  std::vector<std::byte> expected_scale_bytes(tokens * sizeof(float));
  std::memcpy(expected_scale_bytes.data(), expected_scales.data(), expected_scale_bytes.size());
  std::string failure;
  for (const bool write_out : {false, true}) {
    check(cudaDeviceSynchronize(), "sync before the FP8 op");
    for (GpuRank& g : job.ranks()) check(cudaMemset(g.codes, 0xa5, count), "cudaMemset");
    job.fused_fp8(dtype, tokens, hidden, scaling, write_out);
    check(cudaDeviceSynchronize(), "sync after the FP8 op");
    int differs = job.first_differing_rank(&GpuRank::codes, expected_codes);
    if (differs < 0 && scaling == Fp8Scaling::kPerToken)
      differs = job.first_differing_rank(&GpuRank::scales, expected_scale_bytes);
    if (differs < 0) differs = job.first_differing_rank(&GpuRank::residual_out, expected_residual);
    if (differs < 0 && write_out) differs = job.first_differing_rank(&GpuRank::out, expected_out);
    if (differs >= 0 && failure.empty())
      failure = fmt::format("rank {} differs from the CPU kernels{}", differs, write_out ? "" : " (out NULL)");
  }
  job.set_check(row, failure);

  tpcoll_plan_info_t plan{};
  const std::int64_t shape[2] = {static_cast<std::int64_t>(tokens), static_cast<std::int64_t>(hidden)};
  tpcoll::check(tpcoll_plan(job.ranks().front().comm, TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM_FP8, d, 2, shape, 0, &plan));
  row.algo = world == 1 ? "local" : plan.algorithm;
  const int calls = calls_per_replay(bytes);
  row.time_us = job.time_graph(
      [&] {
        for (int i = 0; i < calls; ++i) job.fused_fp8(dtype, tokens, hidden, scaling, /*write_out=*/false);
      },
      calls, replays);
  row.algbw = static_cast<double>(bytes) / row.time_us / 1e3;
  row.busbw = row.algbw * 2.0 * (world - 1) / world;
  row.baseline = "fused (no fp8), same run";
  row.baseline_time_us = job.time_graph(
      [&] {
        for (int i = 0; i < calls; ++i) job.fused(dtype, tokens, hidden);
      },
      calls, replays);
  return row;
}

// The reduce-scatter, checked bit for bit against the contract on the host
// and against the same elements of our all-reduce on every rank, then timed
// against that all-reduce in the same run (the target: no slower).
Row run_reduce_scatter(GpuJob& job, DType dtype, std::size_t count, int replays) {
  const int world = job.world();
  const std::size_t bytes = count * dtype_size(dtype);
  Row row = start_row("reduce_scatter", dtype, count, world);
  row.baseline = "tpcoll all_reduce";
  const std::uint64_t seed = mix(count * 137 + static_cast<std::uint64_t>(dtype));
  std::vector<std::byte> host(bytes), expected(bytes);
  for (GpuRank& g : job.ranks()) {
    fill_floats(dtype, host.data(), count, seed, g.rank);
    check(cudaMemcpy(g.in, host.data(), bytes, cudaMemcpyHostToDevice), "upload");
    check(cudaMemset(g.scratch, 0xff, bytes), "memset");
  }
  for (std::size_t i = 0; i < count; ++i) {
    float acc = rounded_sample(dtype, seed, 0, i);
    for (int r = 1; r < world; ++r) acc += rounded_sample(dtype, seed, r, i);
    store_float(dtype, expected.data(), i, acc);
  }
  check(cudaDeviceSynchronize(), "sync before reduce_scatter");
  job.all_reduce(count, dtype);
  job.reduce_scatter(count, dtype);
  check(cudaDeviceSynchronize(), "sync after reduce_scatter");
  std::string failure;
  if (const int r = job.first_differing_rank(&GpuRank::out, expected); r >= 0)
    failure = fmt::format("all_reduce on rank {} differs from the contract", r);
  else if (const int s = job.first_differing_share(&GpuRank::scratch, false, expected); s >= 0)
    failure = fmt::format("share of rank {} differs from all_reduce", s);
  job.set_check(row, failure);

  tpcoll_plan_info_t plan{};
  const std::int64_t shape[1] = {static_cast<std::int64_t>(count)};
  tpcoll::check(tpcoll_plan(job.ranks().front().comm, TPCOLL_OP_REDUCE_SCATTER, static_cast<tpcoll_dtype_t>(dtype), 1,
                            shape, 0, &plan));
  row.algo = plan.algorithm;
  const int calls = calls_per_replay(bytes);
  row.time_us = job.time_graph(
      [&] {
        for (int i = 0; i < calls; ++i) job.reduce_scatter(count, dtype);
      },
      calls, replays);
  row.baseline_time_us = job.time_graph(
      [&] {
        for (int i = 0; i < calls; ++i) job.all_reduce(count, dtype);
      },
      calls, replays);
  row.algbw = static_cast<double>(bytes) / row.time_us / 1e3;
  row.busbw = row.algbw * (world - 1) / world;
  return row;
}

// The fused reduce-scatter, checked bit for bit against the CPU kernels'
// full fused op (rank r's rows) on every rank, then timed against our full
// fused op in the same run.
Row run_fused_reduce_scatter(GpuJob& job, DType dtype, std::size_t tokens, std::size_t hidden, int replays) {
  const int world = job.world();
  const std::size_t count = tokens * hidden, elem = dtype_size(dtype), bytes = count * elem;
  Row row = start_row("fused_rs_rmsnorm", dtype, count, world);
  row.baseline = "tpcoll fused_allreduce";
  row.tokens = tokens;
  row.hidden = hidden;
  job.allocate_norm_operands();

  const std::uint64_t seed = fused_seed(dtype, tokens, hidden);
  std::vector<std::vector<std::byte>> xs(world, std::vector<std::byte>(bytes));
  std::vector<std::byte> residual(bytes), weight(hidden * elem);
  for (int r = 0; r < world; ++r) fill_floats(dtype, xs[r].data(), count, seed, r);
  fill_floats(dtype, residual.data(), count, seed, kResidualSeedRank);
  fill_floats(dtype, weight.data(), hidden, seed, kWeightSeedRank);
  for (GpuRank& g : job.ranks()) {
    check(cudaMemcpy(g.in, xs[g.rank].data(), bytes, cudaMemcpyHostToDevice), "upload");
    check(cudaMemcpy(g.residual, residual.data(), bytes, cudaMemcpyHostToDevice), "upload");
    check(cudaMemcpy(g.weight, weight.data(), weight.size(), cudaMemcpyHostToDevice), "upload");
  }
  std::vector<const void*> sources;
  for (const auto& x : xs) sources.push_back(x.data());
  std::vector<std::byte> sum(bytes), expected_out(bytes), expected_residual(bytes);
  cpu::reduce(static_cast<tpcoll_dtype_t>(dtype), sources.data(), world, sum.data(), count);
  cpu::add_rmsnorm(static_cast<tpcoll_dtype_t>(dtype), RmsNormRows{sum.data(), residual.data(), weight.data(),
                                                                   expected_out.data(), expected_residual.data(),
                                                                   tokens, hidden, kFusedEps});
  check(cudaDeviceSynchronize(), "sync before the fused reduce-scatter");
  job.fused_reduce_scatter(dtype, tokens, hidden);
  check(cudaDeviceSynchronize(), "sync after the fused reduce-scatter");
  int differs = job.first_differing_share(&GpuRank::scratch, false, expected_out);
  if (differs < 0) differs = job.first_differing_share(&GpuRank::residual_out, true, expected_residual);
  job.set_check(row, differs < 0 ? "" : fmt::format("rank {}'s rows differ from the full fused op", differs));
  row.max_error = fused_max_error(dtype, seed, world, residual.data(), weight.data(), expected_out.data(), tokens, hidden);

  tpcoll_plan_info_t plan{};
  const std::int64_t shape[2] = {static_cast<std::int64_t>(tokens), static_cast<std::int64_t>(hidden)};
  tpcoll::check(tpcoll_plan(job.ranks().front().comm, TPCOLL_OP_FUSED_REDUCE_SCATTER_RMSNORM,
                            static_cast<tpcoll_dtype_t>(dtype), 2, shape, 0, &plan));
  row.algo = plan.algorithm;
  const int calls = calls_per_replay(bytes);
  row.time_us = job.time_graph(
      [&] {
        for (int i = 0; i < calls; ++i) job.fused_reduce_scatter(dtype, tokens, hidden);
      },
      calls, replays);
  row.baseline_time_us = job.time_graph(
      [&] {
        for (int i = 0; i < calls; ++i) job.fused(dtype, tokens, hidden);
      },
      calls, replays);
  row.algbw = static_cast<double>(bytes) / row.time_us / 1e3;
  row.busbw = row.algbw * (world - 1) / world;
  return row;
}

}  // namespace

bool gpu_available() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

namespace {

int device_count() {
  int devices = 0;
  check(cudaGetDeviceCount(&devices), "cudaGetDeviceCount");
  return devices;
}

// Whether TPCOLL_DEVICE names one GPU for every launched rank (as
// device_from_env reads it), not "auto".
bool one_device_for_all() {
  const char* device = std::getenv("TPCOLL_DEVICE");
  return device != nullptr && std::string(device) != "auto";
}

// Whether the ranks share a GPU: always as streams of this process.
bool ranks_share_gpu(bool launched, int world) {
  return !launched || one_device_for_all() || device_count() < world;
}

// Where a launched job's ranks are.
std::string process_placement(int world) {
  if (!ranks_share_gpu(true, world)) return fmt::format("{} ranks as processes, one GPU each", world);
  const std::string mps = cuda::mps_running() ? "MPS running" : "MPS not running";
  return fmt::format("{} ranks as processes sharing {} GPU(s) ({})", world, one_device_for_all() ? 1 : device_count(),
                     mps);
}

}  // namespace

int run_gpu(const Options& o) {
  const bool launched = std::getenv("TPCOLL_RANK") != nullptr;
  tpcoll_comm_config_t config{};
  if (launched) {
    tpcoll::check(tpcoll_comm_config_from_env(&config));
    if (config.device == TPCOLL_DEVICE_CPU)
      throw std::runtime_error("the GPU bench's ranks need TPCOLL_DEVICE (a GPU ordinal or auto)");
  } else {
    check(cudaGetDevice(&config.device), "cudaGetDevice");
  }
  const int world = launched ? config.world_size : o.ranks;
  const bool printer = !launched || config.rank == 0;
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, config.device), "cudaGetDeviceProperties");
  RunInfo info = describe_run();
  info.device = fmt::format("cuda: {} (device {})", prop.name, config.device);
  info.placement = launched ? process_placement(world)
                            : fmt::format("{} ranks sharing one GPU, as streams of one process", world);
  check(cudaSetDevice(config.device), "cudaSetDevice");
  // Measured before the communicator exists, so that no peer's kernel shares
  // the GPU with the copy; peers wait in the bootstrap meanwhile.
  const double copy_bw = printer ? copy_bandwidth(5) : 0.0;
  if (printer) {
    print_header(info, world, "copy-roofline (same-run device-to-device copy bandwidth)");
    fmt::print("# device-to-device copy: {:.0f} GB/s (bytes read + written)\n", copy_bw / 1e9);
  }

  // Creation time, before the job's own communicator exists.
  const Row init = init_row(world, "cuda", [&] {
    if (launched) {
      tpcoll_comm_t comm = nullptr;
      tpcoll::check(tpcoll_comm_create(&config, &comm));
      tpcoll_comm_destroy(comm);
      return;
    }
    std::vector<int> devices(world, config.device);
    std::vector<tpcoll_comm_t> comms(world);
    tpcoll::check(tpcoll_comm_create_local(world, devices.data(), comms.data()));
    for (tpcoll_comm_t c : comms) tpcoll_comm_destroy(c);
  });
  const std::unique_ptr<GpuJob> job = launched ? std::make_unique<GpuJob>(config, o.max_bytes)
                                               : std::make_unique<GpuJob>(world, config.device, o.max_bytes);
  std::vector<Row> rows;
  const auto add = [&](Row row) {
    if (printer) print_row(row);
    rows.push_back(std::move(row));
  };
  add(init);
  const int replays = std::max(5, o.iterations);
  for (Op op : o.ops) {
    if (op == Op::kAllReduce)
      for (DType d : o.dtypes)
        for (std::size_t b : sweep_sizes(o))
          if (b >= dtype_size(d)) add(run_all_reduce(*job, o, d, b / dtype_size(d), copy_bw));
    if (op == Op::kAllGather) {
      for (DType d : o.gather_dtypes)
        for (std::size_t b : sweep_sizes(o))
          if (b >= dtype_size(d))
            add(run_all_gather(*job, d, {static_cast<std::int64_t>(b / dtype_size(d))}, 0, GatherBaseline::kRoofline,
                               copy_bw, replays));
      // Vocab-parallel logits, [tokens, vocab / world] along the last dim,
      // where they fit the buffers.
      for (DType d : {DType::kBFloat16, DType::kFloat32})
        for (std::int64_t vocab : {128256, 151936, 201088})
          for (std::int64_t tokens : {1, 8, 32, 128, 512}) {
            const std::int64_t part = vocab / world;
            if (static_cast<std::size_t>(tokens * part) * dtype_size(d) <= o.max_bytes)
              add(run_all_gather(*job, d, {tokens, part}, 1, GatherBaseline::kFlatGatherThenConcat, copy_bw, replays));
          }
    }
    if (op == Op::kFusedAllReduceRmsNorm)
      for (DType d : o.dtypes)
        for (std::size_t h : o.hidden)
          for (std::size_t t : o.tokens)
            if (t * h * dtype_size(d) <= o.max_bytes) add(run_fused(*job, d, t, h, copy_bw, replays, o.all_algos));
    if (op == Op::kFusedAllReduceRmsNormFp8)
      for (DType d : o.dtypes)
        for (std::size_t h : o.hidden)
          for (std::size_t t : o.tokens)
            for (Fp8Scaling s : kFp8Scalings)
              if (t * h * dtype_size(d) <= o.max_bytes) add(run_fused_fp8(*job, d, t, h, s, replays));
    if (op == Op::kReduceScatter)
      for (DType d : o.dtypes)
        for (std::size_t b : sweep_sizes(o))
          if (const std::size_t count = whole_shares_down(b / dtype_size(d), world); count > 0)
            add(run_reduce_scatter(*job, d, count, replays));
    if (op == Op::kFusedReduceScatterRmsNorm)
      for (DType d : o.dtypes)
        for (std::size_t h : o.hidden)
          for (std::size_t t : o.tokens)
            if (const std::size_t tokens = whole_shares_up(t, world); tokens * h * dtype_size(d) <= o.max_bytes)
              add(run_fused_reduce_scatter(*job, d, tokens, h, replays));
  }
  const int rc = summarize(info, rows, printer ? o.json_path : std::string(), printer);
  if (o.tune && printer && rc == 0) {
    tools::print_wins(rows);
    const TuneKey key = cuda::tune_key(config.device, world, ranks_share_gpu(launched, world));
    tools::write_tune_table(o.tune_path.empty() ? tune_file_path(key) : o.tune_path, key, rows);
  }
  return rc;
}

}  // namespace tpcoll::bench
