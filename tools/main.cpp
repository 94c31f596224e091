// The `tpcoll` command: run (launcher), bench, env.
#include "core/config.hpp"
#include "tools/bench/bench.hpp"
#include "tools/check.hpp"
#include "tools/launcher.hpp"
#include "tools/soak.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <tpcoll/tpcoll.hpp>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace {

using tpcoll::DType;
using tpcoll::Op;

// Sizes as nccl-tests writes them: 1024, 64K, 16M, 1G.
std::size_t parse_size(const std::string& text) {
  std::size_t pos = 0;
  const double value = std::stod(text, &pos);
  const std::string unit = text.substr(pos);
  double scale = 1;
  if (unit == "K" || unit == "k") scale = 1024.0;
  else if (unit == "M" || unit == "m") scale = 1024.0 * 1024;
  else if (unit == "G" || unit == "g") scale = 1024.0 * 1024 * 1024;
  else if (!unit.empty()) throw CLI::ValidationError("size", "bad unit in " + text + " (use K, M or G)");
  return static_cast<std::size_t>(value * scale);
}

const std::map<std::string, DType> kDTypes{
    {"float32", DType::kFloat32},      {"fp32", DType::kFloat32},         {"float16", DType::kFloat16},
    {"fp16", DType::kFloat16},         {"bfloat16", DType::kBFloat16},    {"bf16", DType::kBFloat16},
    {"float64", DType::kFloat64},      {"fp8_e4m3", DType::kFloat8E4M3}, {"fp8_e5m2", DType::kFloat8E5M2},
    {"int8", DType::kInt8},            {"uint8", DType::kUInt8},          {"int32", DType::kInt32},
    {"int64", DType::kInt64}};

std::vector<DType> parse_dtypes(const std::vector<std::string>& names) {
  std::vector<DType> out;
  for (const auto& n : names) {
    auto it = kDTypes.find(n);
    if (it == kDTypes.end()) throw CLI::ValidationError("--dtype", "unknown dtype " + n);
    out.push_back(it->second);
  }
  return out;
}

// CLI11 takes single-dash options as one letter; nccl-tests users type -np.
std::vector<std::string> normalise_args(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  for (auto& a : args)
    if (a == "-np") a = "--np";
  std::reverse(args.begin(), args.end());  // CLI11 parses a reversed vector
  return args;
}

int print_env() {
  for (const tpcoll::EnvParam& p : tpcoll::env::all())
    fmt::print("{:<28} = {:<12} (default {:?}) {}\n", p.name, p.value(), p.default_value, p.help);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tpcoll: custom collectives for tensor-parallel inference"};
  app.require_subcommand(1);

  // ---- run ----
  tpcoll::tools::LaunchOptions launch;
  auto* run = app.add_subcommand("run", "start N ranks of a command on this host (tpcoll run -n N -- CMD ...)");
  run->add_option("-n,--ranks", launch.ranks, "number of ranks")->check(CLI::Range(1, 64));
  run->add_flag("!--no-prefix", launch.prefix_output, "do not prefix output lines with [rank]");
  run->add_flag("!--no-bind", launch.bind_cores,
                "let the scheduler place the ranks (default: rank r on the r-th usable CPU, round robin)");
  run->add_option("command", launch.command, "command and arguments, after --")->required();

  // ---- bench ----
  tpcoll::bench::Options bench;
  std::string min_bytes = "1K", max_bytes = "64M", baseline = "none";
  std::vector<std::string> ops, dtypes, gather_dtypes;
  // The size sweep, iterations and ranks: bench and tune read them alike.
  const auto add_sweep_options = [&](CLI::App* command, std::string& max) {
    command->add_option("-b,--minbytes", min_bytes, "smallest per-rank size (1K, 64K, 16M)");
    command->add_option("-e,--maxbytes", max, "largest per-rank size");
    command->add_option("-f,--stepfactor", bench.factor, "size multiplier")->check(CLI::Range(1.0, 1024.0));
    command->add_option("-n,--iters", bench.iterations, "timed iterations")->check(CLI::Range(1, 1000000));
    command->add_option("-w,--warmup_iters", bench.warmup, "untimed iterations")->check(CLI::Range(0, 1000000));
    command
        ->add_option("--min-ms", bench.min_ms,
                     "time each op for at least this many ms (more iterations than -n where calls are fast; "
                     "the median of a noisy machine settles)")
        ->check(CLI::Range(0.0, 600000.0));
    command
        ->add_option("--max-noise", bench.max_noise,
                     "time more calls (doubling) until every median of a row is known within this many percent, "
                     "at 95% confidence; 0 (default): -n and --min-ms only")
        ->check(CLI::Range(0.0, 100.0));
    command->add_option("--max-ms", bench.max_ms, "with --max-noise, time each op for at most this many ms")
        ->check(CLI::Range(0.0, 600000.0));
    command->add_option("--np", bench.ranks, "ranks (-np)")->check(CLI::Range(1, 64));
  };
  const auto parse_sweep = [&](const std::string& max) {
    bench.min_bytes = parse_size(min_bytes);
    bench.max_bytes = parse_size(max);
    if (bench.min_bytes == 0 || bench.max_bytes < bench.min_bytes)
      throw CLI::ValidationError("-b/-e", "need 0 < minbytes <= maxbytes");
  };
  auto* b = app.add_subcommand("bench", "check, then time, every op x dtype x size");
  add_sweep_options(b, max_bytes);
  b->add_option("--op", ops,
                "all_reduce, all_gather, fused (default: these three), fused_ar_rmsnorm_fp8 (static and per-token "
                "scaling, beside the same-run fused op), reduce_scatter, fused_rs_rmsnorm");
  b->add_option("--dtype", dtypes, "dtypes of all_reduce and fused (default: fp32 fp16 bf16)");
  b->add_option("--gather-dtype", gather_dtypes, "dtypes of all_gather (default: bf16 fp8_e4m3 int64)");
  b->add_option("--tokens", bench.tokens, "token counts of the fused op");
  b->add_option("--hidden", bench.hidden, "hidden sizes of the fused op");
  b->add_option("--baseline", baseline, "none or mpi (MPI_Allreduce/MPI_Allgather, same ranks)")
      ->check(CLI::IsMember({"none", "mpi"}));
  b->add_option("--json", bench.json_path, "write the rows as JSON");
  b->add_flag("--all-algos", bench.all_algos,
              "also time every candidate algorithm, forced, beside the dispatched one; the fused op's default "
              "--tokens and --hidden are then tune's");
  std::string backend = "auto";
  b->add_option("--backend", backend, "auto (CUDA when a GPU is visible), cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  std::string placement = "streams";
  b->add_option("--placement", placement,
                "CUDA ranks as streams of this process, or as processes (TPCOLL_DEVICE, default auto)")
      ->check(CLI::IsMember({"streams", "processes"}));

  // ---- tune ----
  // The bench's options, with a grid whose sizes grow within each op x dtype.
  auto* t = app.add_subcommand("tune", "time every candidate algorithm of all_reduce and the fused op and write "
                                       "the winners as this machine's tuning table for the backend");
  std::string tune_max_bytes = "16M";
  add_sweep_options(t, tune_max_bytes);  // the all_reduce sizes
  t->add_option("--dtype", dtypes, "dtypes (default: fp32 fp16 bf16)");
  std::vector<std::size_t> tune_tokens = tpcoll::bench::kTuneTokens, tune_hidden = tpcoll::bench::kTuneHidden;
  t->add_option("--tokens", tune_tokens, "token counts of the fused op, ascending (default 1 8 32 128 512 2048)")
      ->check(CLI::PositiveNumber);
  t->add_option("--hidden", tune_hidden,
                "hidden sizes of the fused op, ascending: one table row each (default 2880 4096 5120 7168 8192)")
      ->check(CLI::PositiveNumber);
  t->add_option("-o,--output", bench.tune_path, "table file (default: TPCOLL_TUNE_FILE, else "
                                                "$XDG_CACHE_HOME/tpcoll/<key>.json)");
  std::string tune_backend = "cpu";
  t->add_option("--backend", tune_backend, "cpu (ranks as processes), or cuda (ranks as streams sharing the current "
                                           "GPU)")
      ->check(CLI::IsMember({"cpu", "cuda"}));

  // ---- check ----
  int check_ranks = 2;
  auto* chk = app.add_subcommand("check", "GPUs, peer access, MPS, placement and the paths tpcoll will take");
  chk->add_option("-n,--ranks", check_ranks, "ranks to place")->check(CLI::Range(1, 64));

  // ---- soak ----
  tpcoll::tools::SoakOptions soak;
  std::string soak_max_bytes = "1M", soak_backend = "cpu";
  auto* sk = app.add_subcommand("soak", "random mixes of ops, sizes, dtypes, world sizes and algorithms, every "
                                        "result checked, for --seconds; prints ops run and errors");
  sk->add_option("--seconds", soak.seconds, "how long in all")->check(CLI::PositiveNumber);
  sk->add_option("--np", soak.world_sizes, "world sizes, one round each in turn")->check(CLI::Range(1, 64));
  sk->add_option("--round-seconds", soak.round_seconds, "length of one round (one job)")->check(CLI::PositiveNumber);
  sk->add_option("--max-bytes", soak_max_bytes, "largest per-rank input (1K, 1M)");
  sk->add_option("--seed", soak.seed, "seed of the call sequence");
  sk->add_flag("--arena", soak.arena, "CUDA: carve device buffers from one allocation per round instead of "
                                      "cudaMalloc/cudaFree per op (as an engine's caching allocator does)");
  sk->add_option("--backend", soak_backend, "cpu, or cuda (ranks on TPCOLL_DEVICE, default auto)")
      ->check(CLI::IsMember({"cpu", "cuda"}));

  // ---- env ----
  auto* env = app.add_subcommand("env", "list the environment variables tpcoll reads");

  try {
    app.parse(normalise_args(argc, argv));
    if (run->parsed()) return tpcoll::tools::launch(launch);
    if (b->parsed()) {
      parse_sweep(max_bytes);
      if (!ops.empty()) {
        bench.ops.clear();
        for (const auto& o : ops) {
          if (o == "all_reduce") bench.ops.push_back(Op::kAllReduce);
          else if (o == "all_gather") bench.ops.push_back(Op::kAllGather);
          else if (o == "fused") bench.ops.push_back(Op::kFusedAllReduceRmsNorm);
          else if (o == "fused_ar_rmsnorm_fp8") bench.ops.push_back(Op::kFusedAllReduceRmsNormFp8);
          else if (o == "reduce_scatter") bench.ops.push_back(Op::kReduceScatter);
          else if (o == "fused_rs_rmsnorm") bench.ops.push_back(Op::kFusedReduceScatterRmsNorm);
          else throw CLI::ValidationError("--op", "unknown op " + o);
        }
      }
      if (!dtypes.empty()) bench.dtypes = parse_dtypes(dtypes);
      if (!gather_dtypes.empty()) bench.gather_dtypes = parse_dtypes(gather_dtypes);
      if (bench.all_algos && b->count("--tokens") == 0) bench.tokens = tpcoll::bench::kTuneTokens;
      if (bench.all_algos && b->count("--hidden") == 0) bench.hidden = tpcoll::bench::kTuneHidden;
      bench.baseline = baseline == "mpi" ? tpcoll::bench::BaselineKind::kMpi : tpcoll::bench::BaselineKind::kNone;
      bench.backend = backend == "cpu"    ? tpcoll::bench::BackendKind::kCpu
                      : backend == "cuda" ? tpcoll::bench::BackendKind::kCuda
                                          : tpcoll::bench::BackendKind::kAuto;
      bench.processes = placement == "processes";
      if (bench.processes && bench.backend == tpcoll::bench::BackendKind::kCpu)
        throw CLI::ValidationError("--placement", "places CUDA ranks; CPU ranks are always processes");
      return tpcoll::bench::run(bench, argc, argv);
    }
    if (t->parsed()) {
      parse_sweep(tune_max_bytes);
      const auto grows = [](const std::vector<std::size_t>& v) {
        return std::is_sorted(v.begin(), v.end()) && std::adjacent_find(v.begin(), v.end()) == v.end();
      };
      if (!grows(tune_tokens)) throw CLI::ValidationError("--tokens", "must grow: the table's grid points must");
      if (!grows(tune_hidden)) throw CLI::ValidationError("--hidden", "must grow: one table row per hidden size");
      bench.ops = {Op::kAllReduce, Op::kFusedAllReduceRmsNorm};
      if (!dtypes.empty()) bench.dtypes = parse_dtypes(dtypes);
      bench.tokens = tune_tokens;
      bench.hidden = tune_hidden;
      bench.backend = tune_backend == "cuda" ? tpcoll::bench::BackendKind::kCuda : tpcoll::bench::BackendKind::kCpu;
      bench.all_algos = true;
      bench.tune = true;
      return tpcoll::bench::run(bench, argc, argv);
    }
    if (sk->parsed()) {
      soak.max_bytes = parse_size(soak_max_bytes);
      if (soak.max_bytes < 8) throw CLI::ValidationError("--max-bytes", "at least 8");
      soak.cuda = soak_backend == "cuda";
      return tpcoll::tools::soak(soak, tpcoll::tools::own_command_line(argc, argv));
    }
    if (env->parsed()) return print_env();
    if (chk->parsed()) return tpcoll::tools::check(check_ranks);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const tpcoll::Error& e) {
    fmt::print(stderr, "tpcoll: {} ({})\n", e.what(), tpcoll_result_string(e.code()));
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "tpcoll: {}\n", e.what());
    return 1;
  }
  return 0;
}
