// Which measured tuning table a communicator uses. Rank 0 alone reads the
// file and checks it; the other ranks take the bytes it accepted, so every
// rank plans from the same table (divergent choices would deadlock).
#pragma once

#include "core/tune_file.hpp"

#include <string>

namespace tpcoll {

// This machine's key for the CPU backend at `world` ranks.
TuneKey cpu_tune_key(int world);

// TPCOLL_TUNE_FILE, else $XDG_CACHE_HOME/tpcoll/<key>.json (default ~/.cache).
std::string tune_file_path(const TuneKey& key);

struct TuneFileText {
  std::string text;  // empty: use the built-in defaults
  std::string why;   // which table, or why none: for the log
  bool warn = false; // a table was there but refused
};

// Rank 0's reading of `path`: the text when it parses and matches `key`.
TuneFileText read_tune_file(const std::string& path, const TuneKey& key);

}  // namespace tpcoll
