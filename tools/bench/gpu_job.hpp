// The GPU bench's ranks: a job of communicators, streams and buffers driven
// by this process (every rank as a stream, or its own rank of a launched
// job), graph timing, and what every op's row needs.
#pragma once

#include "tools/bench/data.hpp"
#include "tools/bench/fused_reference.hpp"
#include "tools/bench/harness.hpp"

#include <tpcoll/tpcoll.hpp>

#include <cuda_runtime.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

namespace tpcoll::bench::gpu {

// Throws std::runtime_error naming `what` unless e is cudaSuccess.
void check(cudaError_t e, const char* what);

// Replaces each of a process's two figures with the largest any process of
// the job has, so that every process decides alike (a no-op where this
// process drives every rank).
using LargestOverRanks = std::function<void(std::array<double, 2>&)>;

// Microseconds per call, per graph replay, and how well their median is
// known: graph replays of `body` (`calls` calls) are enqueued back to back
// with events between them and timed after one sync per batch, so ranks in
// other processes, replaying their own graphs, stay in step. Batches follow
// `budget` (more_samples), on the replay time and noise every process
// agrees on through `largest`, so that all replay as often.
MedianEstimate time_graph(cudaStream_t origin, const std::vector<cudaStream_t>& streams,
                          const std::function<void()>& body, int calls, const SampleBudget& budget,
                          const LargestOverRanks& largest);

// Device-to-device copy bandwidth (bytes read + written per second) of a
// 256 MiB copy in this run, the median of `replays`: the roofline for ranks
// sharing one GPU.
double copy_bandwidth(int replays);

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
  // Every rank, as a stream of this process on `device`; each op timed for
  // as many graph replays as `budget` asks (at least 5).
  GpuJob(int world, int device, std::size_t max_bytes, const SampleBudget& budget)
      : world_(world), max_bytes_(max_bytes), budget_(replay_budget(budget)) {
    check(cudaSetDevice(device), "cudaSetDevice");
    std::vector<int> devices(world, device);
    std::vector<tpcoll_comm_t> comms(world);
    tpcoll::check(tpcoll_comm_create_local(world, devices.data(), comms.data()));
    for (int r = 0; r < world; ++r) add_rank(r, comms[r], max_bytes);
  }
  // This process's rank of a launched job; its device from TPCOLL_DEVICE.
  GpuJob(const tpcoll_comm_config_t& config, std::size_t max_bytes, const SampleBudget& budget)
      : world_(config.world_size), max_bytes_(max_bytes), budget_(replay_budget(budget)) {
    check(cudaSetDevice(config.device), "cudaSetDevice");
    tpcoll_comm_t comm = nullptr;
    tpcoll::check(tpcoll_comm_create(&config, &comm));
    add_rank(config.rank, comm, max_bytes);
    check(cudaMalloc(&exchange_, sizeof(double) * 2 * (1 + static_cast<std::size_t>(world_))), "cudaMalloc");
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
    cudaFree(exchange_);
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

  // Of `candidates`, those that run as themselves for this call: a forced
  // algorithm that plan() turns into another (the fused one-shot past its
  // longest row goes unfused) is not a candidate here, and its time would be
  // the other's.
  std::vector<Algo> runnable(std::initializer_list<Algo> candidates, tpcoll_op_t op, DType dtype,
                             const std::vector<std::int64_t>& shape) {
    std::vector<Algo> out;
    for (Algo algo : candidates) {
      force(algo);
      tpcoll_plan_info_t plan{};
      tpcoll::check(tpcoll_plan(ranks_.front().comm, op, static_cast<tpcoll_dtype_t>(dtype),
                                static_cast<int>(shape.size()), shape.data(), 0, &plan));
      if (plan.algo == static_cast<tpcoll_algo_t>(algo)) out.push_back(algo);
    }
    force(std::nullopt);
    return out;
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

  // Microseconds per call: a graph of `calls` back-to-back calls of `call`
  // (which drives every rank here), replayed as the budget asks; widens the
  // row's median_noise to this timing's.
  double time_calls(Row& row, const std::function<void()>& call, int calls) {
    std::vector<cudaStream_t> streams;
    for (GpuRank& g : ranks_) streams.push_back(g.stream);
    const auto body = [&] {
      for (int i = 0; i < calls; ++i) call();
    };
    const MedianEstimate t = gpu::time_graph(origin_, streams, body, calls, budget_,
                                             [this](std::array<double, 2>& v) { largest_over_ranks(v); });
    widen_median_noise(row, t);
    return t.median;
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

  // The bench's budget for graph replays: at least 5 (an interval of the
  // median needs 8), and few enough that a batch's events stay cheap.
  static SampleBudget replay_budget(SampleBudget budget) {
    budget.least = std::max<std::size_t>(budget.least, 5);
    budget.most = 20000;
    return budget;
  }

  // Through the job's own all-gather of the two figures (as 64-bit words),
  // where the job's ranks are processes.
  void largest_over_ranks(std::array<double, 2>& figures) {
    if (exchange_ == nullptr) return;
    const GpuRank& g = ranks_.front();
    auto* all = static_cast<double*>(exchange_) + 2;
    std::vector<double> host(2 * static_cast<std::size_t>(world_));
    const std::int64_t shape[1] = {2};
    check(cudaMemcpyAsync(exchange_, figures.data(), sizeof figures, cudaMemcpyHostToDevice, g.stream), "upload");
    tpcoll::check(tpcoll_all_gather(g.comm, exchange_, all, TPCOLL_INT64, 1, shape, 0, g.stream));
    check(cudaMemcpyAsync(host.data(), all, host.size() * sizeof(double), cudaMemcpyDeviceToHost, g.stream),
          "download");
    check(cudaStreamSynchronize(g.stream), "sync after exchange");
    for (std::size_t r = 0; r < host.size(); r += 2)
      for (std::size_t i = 0; i < 2; ++i) figures[i] = std::max(figures[i], host[r + i]);
  }

  int world_;
  std::size_t max_bytes_;
  SampleBudget budget_;
  std::vector<GpuRank> ranks_;
  cudaStream_t origin_ = nullptr;
  void* exchange_ = nullptr;  // launched jobs: this rank's two figures, then every rank's
};

// A row of `op` over `count` elements of `dtype` per rank.
Row start_row(const char* op, DType dtype, std::size_t count, int world);

// Ops per graph replay: enough that the replay's own launch is noise.
inline int calls_per_replay(std::size_t bytes) { return bytes <= (1u << 20) ? 200 : 5; }

// --all-algos: the row's candidates, each forced and timed like the
// dispatched call (`calls` calls of `call` per replay).
void time_candidates(GpuJob& job, Row& row, const std::vector<Algo>& candidates, const std::function<void()>& call,
                     int calls);

}  // namespace tpcoll::bench::gpu
