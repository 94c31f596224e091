#include "core/tune_table.hpp"

#include "core/call.hpp"
#include "core/dtype.hpp"
#include "core/host_cpu.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <iterator>
#include <limits>

namespace tpcoll {

namespace {
constexpr std::size_t kAny = std::numeric_limits<std::size_t>::max();

// The ops with one algorithm each, on either backend: a gather (push to
// every peer, then copy into place), a reduce-scatter (each share travels to
// its owner, which reduces it) and the fused reduce-scatter (that, then add +
// RMSNorm).
constexpr TableRow kOneAlgorithmRows[] = {
    TableRow{TPCOLL_OP_ALL_GATHER, kAnyDtype, 1, TPCOLL_MAX_RANKS, kAny, TPCOLL_ALGO_ONESHOT},
    TableRow{TPCOLL_OP_REDUCE_SCATTER, kAnyDtype, 1, TPCOLL_MAX_RANKS, kAny, TPCOLL_ALGO_ONESHOT},
    TableRow{TPCOLL_OP_FUSED_REDUCE_SCATTER_RMSNORM, kAnyDtype, 1, TPCOLL_MAX_RANKS, kAny, TPCOLL_ALGO_UNFUSED},
};

// A built-in table: the measured rows, then those of the one-algorithm ops.
template <std::size_t N>
constexpr auto with_one_algorithm_rows(const TableRow (&measured)[N]) {
  std::array<TableRow, N + std::size(kOneAlgorithmRows)> rows{};
  std::copy(std::begin(measured), std::end(measured), rows.begin());
  std::copy(std::begin(kOneAlgorithmRows), std::end(kOneAlgorithmRows), rows.begin() + N);
  return rows;
}

// Measured with `tpcoll tune` at 2 and 4 ranks on 2-core development
// machines, one of each CPU vendor, and generated from their tables
// (scripts/builtin_tables.py; a ctest checks that the rows are what the
// tables give). The two disagree: in three acceptance runs on the AMD EPYC,
// timed in the same run, the first AMD rows' choice was within 1.03x of the
// best candidate in 95-97 of 117 rows, the Intel rows' in 51-56
// (bench/results/cpu-epyc-2core-acceptance-x2-*). The AMD rows now come from
// a tune with the ranks bound to CPUs and timed where the host keeps them
// close (tools/bench/placement_probe.hpp), and from the acceptance runs that
// followed it: at each point, the candidate least far from the best in any
// of those runs, as the EPYC VM's winners move between runs.
constexpr TableRow kIntelMeasured[] = {
#include "core/cpu_defaults_intel.inc"
};
constexpr TableRow kAmdMeasured[] = {
#include "core/cpu_defaults_amd.inc"
};
constexpr auto kIntelRows = with_one_algorithm_rows(kIntelMeasured);
constexpr auto kAmdRows = with_one_algorithm_rows(kAmdMeasured);
// Measured with `tpcoll tune --backend cuda` at 2 and 4 ranks sharing an H100,
// and sharing an H200, and generated from their tables as the CPU rows are.
// The H100 rows serve the H200 less well: at 2 ranks, 114 of 117 acceptance
// rows within 1.03x of the best candidate (fp32 fused at 512 x 2880, 512 x
// 8192 and 2048 x 8192 missed, by up to 1.068x), against 117 with the H200's
// own table (bench/results/h200-s12-acceptance-*).
constexpr TableRow kH100Measured[] = {
#include "core/cuda_defaults_h100.inc"
};
constexpr TableRow kH200Measured[] = {
#include "core/cuda_defaults_h200.inc"
};
constexpr auto kH100Rows = with_one_algorithm_rows(kH100Measured);
constexpr auto kH200Rows = with_one_algorithm_rows(kH200Measured);
}  // namespace

const TuneTable& builtin_cpu_table(CpuVendor vendor) {
  static const TuneTable intel{"cpu-builtin-intel", "bench/results/cpu-2core-tune-x{2,4}.json", kIntelRows};
  static const TuneTable amd{"cpu-builtin-amd",
                             "bench/results/cpu-epyc-2core-tune-bound-x{2,4}.json and "
                             "cpu-epyc-2core-bound-acceptance-x{2,4}*.json",
                             kAmdRows};
  return vendor == CpuVendor::kAmd ? amd : intel;
}

const TuneTable& builtin_cpu_table() {
  static const CpuVendor here = cpu_is_amd() ? CpuVendor::kAmd : CpuVendor::kIntel;
  return builtin_cpu_table(here);
}

GpuModel gpu_model(std::string_view device_name) {
  return device_name.find("H200") != std::string_view::npos ? GpuModel::kH200 : GpuModel::kH100;
}

const TuneTable& builtin_cuda_table(GpuModel model) {
  static const TuneTable h100{"cuda-builtin-h100", "bench/results/h100-shared-x{2,4}-tune.json", kH100Rows};
  static const TuneTable h200{"cuda-builtin-h200", "bench/results/h200-shared-x{2,4}-tune.json", kH200Rows};
  return model == GpuModel::kH200 ? h200 : h100;
}

namespace {

bool serves(const TableRow& row, tpcoll_op_t op, tpcoll_dtype_t dtype, int world) {
  return row.op == op && (row.dtype == kAnyDtype || row.dtype == dtype) && world >= row.min_world &&
         world <= row.max_world;
}

// The measured hidden whose rows serve a fused call of `hidden`: the first at
// or above it, else the largest; kAnyHidden where no row has one. Upward,
// because the fused kernels' limits are longest rows (the CUDA one-shot takes
// rows of up to 4096 elements, every fused kernel rows of up to half the
// staging buffer): the winner at a larger hidden runs at this one too, while
// a smaller hidden's winner may not run here at all, and plan() would then
// run an algorithm that was never timed against the others. It is also the
// sizes' own rule (the first grid point at or above). Above the largest
// measured hidden nothing better is known than the largest.
std::size_t row_hidden(const TuneTable& table, tpcoll_op_t op, tpcoll_dtype_t dtype, int world, std::size_t hidden) {
  std::size_t above = kAnyHidden, largest = kAnyHidden;
  for (const TableRow& row : table.rows) {
    if (row.hidden == kAnyHidden || !serves(row, op, dtype, world)) continue;
    largest = std::max(largest, row.hidden);
    if (row.hidden >= hidden && (above == kAnyHidden || row.hidden < above)) above = row.hidden;
  }
  return above != kAnyHidden ? above : largest;
}

// The bound of the row before `row` that serves the same op, dtype, world
// and hidden: with `row`'s own bound, the grid points a size lies between.
std::optional<std::size_t> lower_bound_of(const TuneTable& table, const TableRow& row, tpcoll_dtype_t dtype, int world) {
  std::optional<std::size_t> lower;
  for (const TableRow& r : table.rows) {
    if (&r == &row) break;
    if (serves(r, row.op, dtype, world) && r.hidden == row.hidden) lower = r.max_bytes;
  }
  return lower;
}

}  // namespace

std::optional<TableChoice> lookup(const TuneTable& table, tpcoll_op_t op, tpcoll_dtype_t dtype, int world,
                                  std::size_t bytes, std::size_t hidden) {
  const std::size_t wanted = hidden == kAnyHidden ? kAnyHidden : row_hidden(table, op, dtype, world, hidden);
  for (const TableRow& row : table.rows) {
    if (!serves(row, op, dtype, world) || bytes > row.max_bytes || (row.hidden != kAnyHidden && row.hidden != wanted))
      continue;
    return TableChoice{row.algo, &row};
  }
  return std::nullopt;
}

std::string explain(const TuneTable& table, const TableChoice& choice, tpcoll_dtype_t dtype, int world,
                    std::size_t bytes, std::size_t hidden) {
  const std::size_t max = choice.row->max_bytes;
  const std::optional<std::size_t> min = lower_bound_of(table, *choice.row, dtype, world);
  std::string where;
  if (min && max != kAny)
    where = fmt::format("lies between the {} B and {} B grid points", *min, max);
  else if (min)
    where = fmt::format("lies above the {} B grid point", *min);
  else if (max != kAny)
    where = fmt::format("lies at or below the first grid point, {} B", max);
  else
    where = "takes the one row for any size";
  std::string measured_at;  // the fused op's hidden row, where the table has them
  if (const std::size_t h = choice.row->hidden; h != kAnyHidden) {
    if (h == hidden)
      measured_at = fmt::format("hidden {} row, ", h);
    else if (h > hidden)
      measured_at = fmt::format("hidden {} row (the next measured above {}), ", h, hidden);
    else
      measured_at = fmt::format("hidden {} row (the largest measured, below {}), ", h, hidden);
  }
  const char* which = choice.row->dtype == kAnyDtype ? "any dtype" : dtype_name(dtype);
  return fmt::format("{}: table {}, {}{} B of {} per rank at world {} {} ({} row)", algo_name(choice.algo), table.name,
                     measured_at, bytes, dtype_name(dtype), world, where, which);
}

}  // namespace tpcoll
