// `tpcoll tune`: the bench with every candidate forced in turn, on a grid
// whose per-rank sizes grow within each op x dtype; rank 0 then writes the
// winners as a tuning table (src/core/tune_file.hpp) and says where each won.
#pragma once

#include "core/tune_file.hpp"
#include "tools/bench/harness.hpp"

#include <string>
#include <vector>

namespace tpcoll::tools {

// The table of `rows` (each with its candidates' times), measured where
// `key` says, written to `path`.
void write_tune_table(const std::string& path, const TuneKey& key, const std::vector<bench::Row>& rows);

// One line per op x dtype: the size ranges where each candidate won.
void print_wins(const std::vector<bench::Row>& rows);

}  // namespace tpcoll::tools
