#include "tools/bench/bench.hpp"

#include "tools/bench/baseline.hpp"
#include "tools/bench/gpu_bench.hpp"
#include "tools/bench/harness.hpp"
#include "tools/bench/init_time.hpp"
#include "tools/bench/report.hpp"
#include "tools/launcher.hpp"
#include "tools/tune.hpp"
#include "core/tune_load.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <stdexcept>
#include <vector>

namespace tpcoll::bench {
namespace {

int run_rank(const Options& o, Communicator& comm, Baseline* baseline, const Row* init) {
  Harness harness(comm, o, baseline);
  const bool printer = comm.rank() == 0;
  const RunInfo info = describe_run();
  if (printer) print_header(info, comm.world_size(), baseline ? baseline->name() : "none");

  // Every row as a case that can be timed again (below).
  std::vector<std::function<Row()>> cases;
  for (Op op : o.ops) {
    if (op == Op::kAllReduce)
      for (DType d : o.dtypes)
        for (std::size_t b : sweep_sizes(o))
          if (b >= dtype_size(d))
            cases.emplace_back([&harness, d, b] { return harness.all_reduce(d, b / dtype_size(d)); });
    if (op == Op::kAllGather)
      for (DType d : o.gather_dtypes)
        for (std::size_t b : sweep_sizes(o))
          for (int dim_kind = 0; dim_kind < 3; ++dim_kind)
            if (b >= dtype_size(d))
              cases.emplace_back(
                  [&harness, d, b, dim_kind] { return harness.all_gather(d, b / dtype_size(d), dim_kind); });
    if (op == Op::kFusedAllReduceRmsNorm)
      for (DType d : o.dtypes)
        for (std::size_t h : o.hidden)
          for (std::size_t t : o.tokens) cases.emplace_back([&harness, d, t, h] { return harness.fused(d, t, h); });
    if (op == Op::kFusedAllReduceRmsNormFp8)
      for (DType d : o.dtypes)
        for (std::size_t h : o.hidden)
          for (std::size_t t : o.tokens)
            for (Fp8Scaling s : kFp8Scalings)
              cases.emplace_back([&harness, d, t, h, s] { return harness.fused_fp8(d, t, h, s); });
    if (op == Op::kReduceScatter)
      for (DType d : o.dtypes)
        for (std::size_t b : sweep_sizes(o))
          if (const std::size_t count = whole_shares_down(b / dtype_size(d), comm.world_size()); count > 0)
            cases.emplace_back([&harness, d, count] { return harness.reduce_scatter(d, count); });
    if (op == Op::kFusedReduceScatterRmsNorm)
      for (DType d : o.dtypes)
        for (std::size_t h : o.hidden)
          for (std::size_t t : o.tokens)
            cases.emplace_back([&harness, d, t, h, world = comm.world_size()] {
              return harness.fused_reduce_scatter(d, whole_shares_up(t, world), h);
            });
  }

  std::vector<Row> rows;
  if (init) {
    if (printer) print_row(*init);
    rows.push_back(*init);
  }
  const std::size_t first_case = rows.size();
  for (const auto& timed : cases) {
    rows.push_back(timed());
    if (printer) print_row(rows.back());
  }
  // A run that began with the ranks apart learns it only once the host
  // brings them close; the rows timed before then are timed again, once.
  // Every rank holds the same probe times, so all pick the same rows.
  for (std::size_t i = 0; i < cases.size(); ++i) {
    Row& row = rows[first_case + i];
    if (harness.timed_apart(row)) {
      const int retimed = row.retimed + 1;
      row = cases[i]();
      row.retimed += retimed;
      if (printer) {
        fmt::print("# timed again at the end: the ranks had been apart\n");
        print_row(row);
      }
    }
    row.placement_moved = harness.timed_apart(row);
  }

  const int rc = summarize(info, rows, o.json_path, printer);
  if (o.tune && printer && rc == 0) {
    tools::print_wins(rows);
    const TuneKey key = cpu_tune_key(comm.world_size());
    tools::write_tune_table(o.tune_path.empty() ? tune_file_path(key) : o.tune_path, key, rows);
  }
  return rc;
}

}  // namespace

int run(const Options& o, int argc, char** argv) {
  const bool launched_rank = std::getenv("TPCOLL_RANK") != nullptr || started_by_mpirun();
  const bool cuda = o.backend == BackendKind::kCuda || (o.backend == BackendKind::kAuto && o.processes) ||
                    (o.backend == BackendKind::kAuto && o.baseline == BaselineKind::kNone && !launched_rank &&
                     gpu_available());
  if (cuda && o.processes && !launched_rank) {
    tools::LaunchOptions launch;
    launch.ranks = o.ranks;
    launch.command = tools::own_command_line(argc, argv);
    launch.prefix_output = false;  // rank 0 alone prints the table
    if (std::getenv("TPCOLL_DEVICE") == nullptr) launch.environment.emplace_back("TPCOLL_DEVICE", "auto");
    return tools::launch(launch);
  }
  if (cuda) return run_gpu(o);
  if (o.baseline == BaselineKind::kMpi) {
    if (!started_by_mpirun()) {
      std::vector<std::string> args = mpirun_prefix(o.ranks);
      if (args.empty()) make_mpi_baseline(&argc, &argv);  // throws: no MPI in this build
      for (auto& a : tools::own_command_line(argc, argv)) args.push_back(std::move(a));
      return tools::launch_in_place(args);
    }
    auto baseline = make_mpi_baseline(&argc, &argv);
    Config config;
    config.rank = baseline->rank();
    config.world_size = baseline->world_size();
    // Bootstrap through MPI's all-gather: the framework-supplied path of the C API.
    config.allgather = [b = baseline.get()](const void* send, void* recv, std::size_t bytes) {
      b->all_gather_bytes(send, recv, bytes);
    };
    int rc = 0;
    {
      Communicator comm(config);
      rc = run_rank(o, comm, baseline.get(), nullptr);
    }
    return rc;
  }
  if (std::getenv("TPCOLL_RANK") == nullptr) {
    tools::LaunchOptions launch;
    launch.ranks = o.ranks;
    launch.command = tools::own_command_line(argc, argv);
    launch.prefix_output = false;  // rank 0 alone prints the table
    return tools::launch(launch);
  }
  const Config config = Config::from_env();
  const Row init = init_row(config.world_size, "cpu", [&] { Communicator timed(config); });
  Communicator comm(config);
  return run_rank(o, comm, nullptr, &init);
}

}  // namespace tpcoll::bench
