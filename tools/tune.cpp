#include "tools/tune.hpp"

#include "tools/bench/report.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace tpcoll::tools {
namespace {

const std::string& winner(const bench::Row& row) {
  const auto* best = &row.candidates.front();
  for (const auto& c : row.candidates)
    if (c.second < best->second) best = &c;
  return best->first;
}

// The table's ops are the library's names (the bench calls the fused op "fused_allreduce_rmsnorm").
std::string table_op(const std::string& bench_op) {
  return bench_op == "fused_allreduce_rmsnorm" ? "fused_allreduce_residual_rmsnorm" : bench_op;
}

// The table row a bench row belongs to: op x dtype, and the fused op's hidden.
std::string table_key(const bench::Row& row) {
  return row.tokens ? fmt::format("{} {} hidden {}", row.op, row.dtype, row.hidden) : row.op + " " + row.dtype;
}

}  // namespace

void write_tune_table(const std::string& path, const TuneKey& key, const std::vector<bench::Row>& rows) {
  nlohmann::json table = {
      {"format", kTuneFormat},
      {"key", {{"backend", key.backend}, {"device", key.device}, {"world", key.world}, {"topology", key.topology},
               {"version", key.version}}},
      {"source", fmt::format("tpcoll tune, {}, commit {}", bench::describe_run().date, bench::describe_run().commit)},
      {"rows", nlohmann::json::array()}};
  nlohmann::json* current = nullptr;
  std::string current_key;
  for (const bench::Row& r : rows) {
    if (r.candidates.size() < 2) continue;  // one candidate: nothing to choose
    if (table_key(r) != current_key) {
      current_key = table_key(r);
      nlohmann::json row = {{"op", table_op(r.op)}, {"dtype", r.dtype}};
      if (r.tokens) row["hidden"] = r.hidden;  // a fused row: its points are token counts at this hidden
      row["points"] = nlohmann::json::array();
      table["rows"].push_back(std::move(row));
      current = &table["rows"].back();
    }
    nlohmann::json times = nlohmann::json::object();
    for (const auto& [algo, us] : r.candidates) times[algo] = us;
    (*current)["points"].push_back({{"bytes", r.bytes}, {"algo", winner(r)}, {"us", times}});
  }
  const std::filesystem::path file(path);
  if (file.has_parent_path()) std::filesystem::create_directories(file.parent_path());
  std::ofstream out(path);
  if (!(out << table.dump(1) << "\n")) throw std::runtime_error("cannot write " + path);
  fmt::print("# tpcoll tune: table for {} at {} ranks ({}) written to {}\n", key.device, key.world, key.topology, path);
  const auto moved = std::count_if(rows.begin(), rows.end(), [](const bench::Row& r) { return r.placement_moved; });
  if (moved > 0)
    fmt::print("# tpcoll tune: warning: {} points were timed only while the ranks' placement had moved; their "
               "winners may be that placement's: run tune again\n",
               moved);
  const auto noisy = std::count_if(rows.begin(), rows.end(), [](const bench::Row& r) { return bench::too_noisy(r); });
  if (noisy > 0)
    fmt::print("# tpcoll tune: warning: {} points have medians known too loosely to tell 3% apart; their winners "
               "may be noise: run tune with --max-noise (and a larger --max-ms)\n",
               noisy);
}

void print_wins(const std::vector<bench::Row>& rows) {
  std::string line, last_key, last_algo;
  const bench::Row* from = nullptr;
  const bench::Row* to = nullptr;
  // A fused row's range in tokens, the others' in bytes.
  const auto close_run = [&] {
    if (last_algo.empty()) return;
    if (from->tokens)
      line += fmt::format(" {} {}-{} tokens;", last_algo, from->tokens, to->tokens);
    else
      line += fmt::format(" {} {}-{} B;", last_algo, from->bytes, to->bytes);
  };
  for (const bench::Row& r : rows) {
    if (r.candidates.size() < 2) continue;
    if (table_key(r) != last_key) {
      close_run();
      if (!line.empty()) fmt::print("{}\n", line);
      line = "# wins: " + table_key(r) + ":";
      last_key = table_key(r);
      last_algo.clear();
    }
    if (winner(r) != last_algo) {
      close_run();
      last_algo = winner(r);
      from = &r;
    }
    to = &r;
  }
  close_run();
  if (!line.empty()) fmt::print("{}\n", line);
}

}  // namespace tpcoll::tools
