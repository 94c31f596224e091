// The bench's table (nccl-tests-like columns) and its JSON rows.
#pragma once

#include "tools/bench/harness.hpp"

#include <string>
#include <vector>

namespace tpcoll::bench {

struct RunInfo {
  std::string device;     // "cpu: <model>, N cores"
  std::string placement;  // where the ranks are
  std::string date;       // UTC, ISO 8601
  std::string commit;     // $TPCOLL_COMMIT, set by scripts/bench-record.sh
};

RunInfo describe_run();
void print_header(const RunInfo& info, int world, const std::string& baseline);
void print_row(const Row& row);
// Whether a row's medians are known too loosely (95% confidence) to tell
// apart candidates 3% apart, issue 14's acceptance margin.
bool too_noisy(const Row& row);
// --all-algos: the fastest candidate's time, and the candidates as a column.
double best_candidate_us(const Row& row);
std::string candidates_text(const Row& row);
// Writes {"meta": ..., "rows": [...]}; every row also carries device and placement.
void write_json(const std::string& path, const RunInfo& info, const std::vector<Row>& rows);
// The run's last line (and the JSON, if a path is given) when `print`;
// returns the exit code: 0 when every check passed.
int summarize(const RunInfo& info, const std::vector<Row>& rows, const std::string& json_path, bool print);

}  // namespace tpcoll::bench
