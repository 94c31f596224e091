// The algorithm table: data, not code. A row says which algorithm wins for an
// op and world-size range up to a per-rank message size (for the fused op,
// optionally at one measured hidden size). Tables are written by measurement
// (bench/results/); the built-in one ships with the library.
#pragma once

#include <tpcoll/tpcoll.h>

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace tpcoll {

inline constexpr int kAnyDtype = -1;
inline constexpr std::size_t kAnyHidden = 0;

struct TableRow {
  tpcoll_op_t op;
  int dtype;  // a tpcoll_dtype_t, or kAnyDtype
  int min_world;
  int max_world;
  std::size_t max_bytes;  // per-rank input bytes, inclusive
  tpcoll_algo_t algo;
  // The fused op: the hidden size the row was measured at (its sizes are then
  // token counts at that hidden), or kAnyHidden: a row for every hidden.
  std::size_t hidden = kAnyHidden;
};

struct TuneTable {
  const char* name;
  const char* source;  // where its figures come from
  std::span<const TableRow> rows;
};

struct TableChoice {
  tpcoll_algo_t algo;
  const TableRow* row;
};

// The CPU vendors the CPU backend's built-in rows were measured on.
enum class CpuVendor { kIntel, kAmd };
// The GPUs the CUDA backend's built-in rows were measured on.
enum class GpuModel { kH100, kH200 };

// The tables the backends ship with. The CPU backend's rows are those of the
// vendor of the CPU this process runs on (AMD's on AMD, else Intel's): ranks
// of a CPU communicator share one host, so they plan alike. The CUDA
// backend's are those of a GPU model; the communicator takes rank 0's GPU's
// for every rank, so that ranks on mixed GPUs plan alike.
const TuneTable& builtin_cpu_table(CpuVendor vendor);
const TuneTable& builtin_cpu_table();
const TuneTable& builtin_cuda_table(GpuModel model);
// The measured model for a GPU of this name (cudaDeviceProp::name): an H200's
// own, and the H100's for every other GPU, as nothing nearer was measured.
GpuModel gpu_model(std::string_view device_name);

// The first row matching op, dtype and world whose max_bytes >= bytes. Where
// such rows were measured at given hidden sizes, a fused call of `hidden`
// takes those of the first measured hidden at or above it, else of the
// largest (see row_hidden in tune_table.cpp for why); ops without a hidden
// pass kAnyHidden.
std::optional<TableChoice> lookup(const TuneTable& table, tpcoll_op_t op, tpcoll_dtype_t dtype, int world,
                                  std::size_t bytes, std::size_t hidden = kAnyHidden);
// Why `choice` was made, in words (off the hot path: it formats).
std::string explain(const TuneTable& table, const TableChoice& choice, tpcoll_dtype_t dtype, int world,
                    std::size_t bytes, std::size_t hidden = kAnyHidden);

}  // namespace tpcoll
