// `tpcoll tune`: the bench with every candidate forced in turn, on a grid
// whose per-rank sizes grow within each op x dtype (the fused op: a token
// grid at each hidden size, one table row each); rank 0 then writes the
// winners as a tuning table (src/core/tune_file.hpp) and says where each won.
//
// Only ops with a choice are tuned: all_reduce (one-shot, two-shot) and the
// fused all-reduce + add + RMSNorm (one-shot, two-shot, unfused), whose rows
// the FP8 op shares (it is planned as the fused op). The reduce-scatter has
// one algorithm on either backend (each share travels to its owner, which
// reduces it), the fused reduce-scatter one form (that, then add + RMSNorm),
// the all-gather one: a row could only ever name it. The fallback (NCCL on
// the GPU, which ranks sharing one GPU cannot run) is never a candidate.
#pragma once

#include "core/tune_file.hpp"
#include "tools/bench/harness.hpp"

#include <string>
#include <vector>

namespace tpcoll::tools {

// The table of `rows` (each with its candidates' times), measured where
// `key` says, written to `path`.
void write_tune_table(const std::string& path, const TuneKey& key, const std::vector<bench::Row>& rows);

// One line per op x dtype (x hidden): the size (token) ranges where each
// candidate won.
void print_wins(const std::vector<bench::Row>& rows);

}  // namespace tpcoll::tools
