// A measured tuning table in a file (JSON, written by measurement): its key
// says which machine it was measured on, its rows give for each op x dtype a
// grid of per-rank sizes with the winning algorithm and every candidate's
// measured time. The loader is strict: a table that fails any check is
// refused whole, since a half-read table could make ranks choose differently.
//
//   {"format": "tpcoll-tune/1",
//    "key": {"backend": "cpu-shm", "device": "...", "world": 2, "topology": "2 cores", "version": "..."},
//    "source": "where the figures come from",
//    "rows": [{"op": "all_reduce", "dtype": "float32",
//              "points": [{"bytes": 1024, "algo": "oneshot", "us": {"oneshot": 2.1, "twoshot": 3.4}}, ...]},
//             {"op": "fused_allreduce_residual_rmsnorm", "dtype": "bfloat16", "hidden": 8192,
//              "points": [{"bytes": 16384, "algo": "unfused", "us": {...}}, ...]}, ...]}
//
// A size takes the winner of the first grid point at or above it; sizes past
// the last point take the last point's winner. A fused op's row may carry
// "hidden": its points are then whole rows of that hidden (token counts), and
// a call takes the rows of the first measured hidden at or above its own,
// else of the largest (tune_table.cpp says why). A row without "hidden"
// serves every hidden, as in the tables written before hidden rows existed
// (the format is still tpcoll-tune/1: the field is optional, and a reader
// older than it refuses it by name). One row per op x dtype x hidden, and an
// op x dtype has either one row for every hidden or rows for given ones.
#pragma once

#include "core/tune_table.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace tpcoll {

inline constexpr const char* kTuneFormat = "tpcoll-tune/1";

// What a table must have been measured on to be used here.
struct TuneKey {
  std::string backend;   // "cpu-shm" or "cuda-p2p"
  std::string device;    // CPU or GPU model
  int world = 0;
  std::string topology;  // CPU cores; for GPUs their link, or ranks sharing one GPU
  std::string version;   // driver and library versions
  bool operator==(const TuneKey&) const = default;
};

// A parsed table; view() points into it, so it must outlive the view.
struct LoadedTable {
  TuneKey key;
  std::string name;
  std::string source;
  std::vector<TableRow> rows;
  TuneTable view() const { return TuneTable{name.c_str(), source.c_str(), rows}; }
};

// Parses and checks `text`; throws Error (TPCOLL_INVALID_ARGUMENT) naming the
// first problem found.
LoadedTable parse_tune_table(std::string_view text);
// Throws Error (TPCOLL_INVALID_ARGUMENT) naming the first field of `found`
// that differs from `expected`. Rank 0 checks the key; the other ranks take
// the table rank 0 accepted, so that every rank plans alike.
void check_tune_key(const TuneKey& found, const TuneKey& expected);

}  // namespace tpcoll
