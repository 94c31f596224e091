#include "tools/tune.hpp"

#include "tools/bench/report.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

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

}  // namespace

void write_tune_table(const std::string& path, const TuneKey& key, const std::vector<bench::Row>& rows) {
  nlohmann::json table = {
      {"format", kTuneFormat},
      {"key", {{"backend", key.backend}, {"device", key.device}, {"world", key.world}, {"topology", key.topology},
               {"version", key.version}}},
      {"source", fmt::format("tpcoll tune, {}, commit {}", bench::describe_run().date, bench::describe_run().commit)},
      {"rows", nlohmann::json::array()}};
  nlohmann::json* current = nullptr;
  for (const bench::Row& r : rows) {
    if (r.candidates.size() < 2) continue;  // one candidate: nothing to choose
    const std::string op = table_op(r.op);
    if (!current || (*current)["op"] != op || (*current)["dtype"] != r.dtype) {
      table["rows"].push_back({{"op", op}, {"dtype", r.dtype}, {"points", nlohmann::json::array()}});
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
}

void print_wins(const std::vector<bench::Row>& rows) {
  std::string line, last_key, last_algo;
  std::size_t from = 0, to = 0;
  const auto close_run = [&] {
    if (!last_algo.empty()) line += fmt::format(" {} {}-{} B;", last_algo, from, to);
  };
  for (const bench::Row& r : rows) {
    if (r.candidates.size() < 2) continue;
    const std::string key = r.op + " " + r.dtype;
    if (key != last_key) {
      close_run();
      if (!line.empty()) fmt::print("{}\n", line);
      line = "# wins: " + key + ":";
      last_key = key;
      last_algo.clear();
    }
    if (winner(r) != last_algo) {
      close_run();
      last_algo = winner(r);
      from = r.bytes;
    }
    to = r.bytes;
  }
  close_run();
  if (!line.empty()) fmt::print("{}\n", line);
}

}  // namespace tpcoll::tools
