#include "core/tune_table.hpp"

#include "core/call.hpp"

#include <fmt/format.h>

#include <array>
#include <limits>

namespace tpcoll {

namespace {
constexpr std::size_t kAny = std::numeric_limits<std::size_t>::max();

// Crossovers measured with `tpcoll bench` on the 2-core development machine
// (bench/results/cpu-2core-*.json): one-shot wins while a rank can reduce the
// whole message in cache; two-shot halves the reduction work above that.
constexpr std::array kCpuRows{
    TableRow{TPCOLL_OP_ALL_REDUCE, 1, 64, 32 * 1024, TPCOLL_ALGO_ONESHOT},
    TableRow{TPCOLL_OP_ALL_REDUCE, 1, 64, kAny, TPCOLL_ALGO_TWOSHOT},
    TableRow{TPCOLL_OP_ALL_GATHER, 1, 64, kAny, TPCOLL_ALGO_ONESHOT},
    TableRow{TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM, 1, 64, 32 * 1024, TPCOLL_ALGO_ONESHOT},
    TableRow{TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM, 1, 64, kAny, TPCOLL_ALGO_TWOSHOT},
};
}  // namespace

const TuneTable& builtin_cpu_table() {
  static const TuneTable table{"cpu-builtin", "bench/results/cpu-2core", kCpuRows};
  return table;
}

std::optional<TableChoice> lookup(const TuneTable& table, tpcoll_op_t op, int world, std::size_t bytes) {
  for (const TableRow& row : table.rows) {
    if (row.op != op || world < row.min_world || world > row.max_world || bytes > row.max_bytes) continue;
    return TableChoice{row.algo, &row};
  }
  return std::nullopt;
}

std::string explain(const TuneTable& table, const TableChoice& choice, int world, std::size_t bytes) {
  const std::size_t max = choice.row->max_bytes;
  const std::string bound = max == kAny ? std::string("any size") : fmt::format("<= {} B", max);
  return fmt::format("table {}: {} B per rank at world {} is in the {} row ({})", table.name, bytes, world,
                     algo_name(choice.algo), bound);
}

}  // namespace tpcoll
