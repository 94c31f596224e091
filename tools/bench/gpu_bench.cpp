#include "tools/bench/gpu_bench.hpp"

#include "tools/bench/gpu_cases.hpp"
#include "tools/bench/init_time.hpp"
#include "tools/bench/report.hpp"

#include "core/tune_load.hpp"
#include "cuda/cuda_backend.hpp"
#include "cuda/tune_key.hpp"
#include "tools/tune.hpp"

#include <cuda_runtime.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <vector>

namespace tpcoll::bench {

using namespace gpu;

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

// The largest per-rank input of the run: -e bounds the size sweeps, the
// fused ops' inputs are --tokens x --hidden (the fused reduce-scatter's
// tokens rounded up to whole shares), so that a tune of the fused grid is
// not cut short by the all-reduce's largest size.
std::size_t largest_input(const Options& o, int world) {
  std::size_t bytes = o.max_bytes;
  const bool fused = std::any_of(o.ops.begin(), o.ops.end(), [](Op op) {
    return op == Op::kFusedAllReduceRmsNorm || op == Op::kFusedAllReduceRmsNormFp8 ||
           op == Op::kFusedReduceScatterRmsNorm;
  });
  if (fused)
    for (DType d : o.dtypes)
      for (std::size_t h : o.hidden)
        for (std::size_t t : o.tokens) bytes = std::max(bytes, whole_shares_up(t, world) * h * dtype_size(d));
  return bytes;
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
  const std::size_t buffer_bytes = largest_input(o, world);
  const SampleBudget budget = sample_budget(o);
  const std::unique_ptr<GpuJob> job = launched ? std::make_unique<GpuJob>(config, buffer_bytes, budget)
                                               : std::make_unique<GpuJob>(world, config.device, buffer_bytes, budget);
  std::vector<Row> rows;
  const auto add = [&](Row row) {
    if (printer) print_row(row);
    rows.push_back(std::move(row));
  };
  add(init);
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
                               copy_bw));
      // Vocab-parallel logits, [tokens, vocab / world] along the last dim,
      // where they fit the buffers.
      for (DType d : {DType::kBFloat16, DType::kFloat32})
        for (std::int64_t vocab : {128256, 151936, 201088})
          for (std::int64_t tokens : {1, 8, 32, 128, 512}) {
            const std::int64_t part = vocab / world;
            if (static_cast<std::size_t>(tokens * part) * dtype_size(d) <= o.max_bytes)
              add(run_all_gather(*job, d, {tokens, part}, 1, GatherBaseline::kFlatGatherThenConcat, copy_bw));
          }
    }
    if (op == Op::kFusedAllReduceRmsNorm)
      for (DType d : o.dtypes)
        for (std::size_t h : o.hidden)
          for (std::size_t t : o.tokens) add(run_fused(*job, d, t, h, copy_bw, o.all_algos));
    if (op == Op::kFusedAllReduceRmsNormFp8)
      for (DType d : o.dtypes)
        for (std::size_t h : o.hidden)
          for (std::size_t t : o.tokens)
            for (Fp8Scaling s : kFp8Scalings) add(run_fused_fp8(*job, d, t, h, s));
    if (op == Op::kReduceScatter)
      for (DType d : o.dtypes)
        for (std::size_t b : sweep_sizes(o))
          if (const std::size_t count = whole_shares_down(b / dtype_size(d), world); count > 0)
            add(run_reduce_scatter(*job, d, count));
    if (op == Op::kFusedReduceScatterRmsNorm)
      for (DType d : o.dtypes)
        for (std::size_t h : o.hidden)
          for (std::size_t t : o.tokens) add(run_fused_reduce_scatter(*job, d, whole_shares_up(t, world), h));
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
