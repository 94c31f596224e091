#include "core/tune_file.hpp"

#include "core/call.hpp"
#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/plan.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <set>
#include <tuple>
#include <utility>

namespace tpcoll {
namespace {

using Json = nlohmann::json;

constexpr std::size_t kAnyBytes = std::numeric_limits<std::size_t>::max();

template <typename... Args>
[[noreturn]] void reject(fmt::format_string<Args...> format, Args&&... args) {
  fail(TPCOLL_INVALID_ARGUMENT, format, std::forward<Args>(args)...);
}

// A hand-edited field name would otherwise be ignored silently.
void only_fields(const Json& object, const std::string& where, std::initializer_list<const char*> allowed) {
  for (const auto& item : object.items()) {
    const std::string& name = item.key();
    if (std::none_of(allowed.begin(), allowed.end(), [&](const char* a) { return name == a; }))
      reject("{}: unknown field \"{}\"", where, name);
  }
}

const Json& member(const Json& object, const std::string& where, const char* name) {
  const auto it = object.find(name);
  if (it == object.end()) reject("{}: field \"{}\" is missing", where, name);
  return *it;
}

const Json& typed(const Json& object, const std::string& where, const char* name, Json::value_t type,
                  const char* type_name) {
  const Json& value = member(object, where, name);
  if (value.type() != type) reject("{}.{} is {}, expected {}", where, name, value.type_name(), type_name);
  return value;
}

std::string text_field(const Json& object, const std::string& where, const char* name) {
  return typed(object, where, name, Json::value_t::string, "a string").get<std::string>();
}

// JSON numbers written without sign or fraction parse as unsigned.
std::uint64_t count_field(const Json& object, const std::string& where, const char* name) {
  const std::uint64_t n =
      typed(object, where, name, Json::value_t::number_unsigned, "a positive integer").get<std::uint64_t>();
  if (n == 0) reject("{}.{} is 0, expected a positive integer", where, name);
  return n;
}

template <typename Enum, std::size_t N>
Enum by_name(const std::string& name, const Enum (&values)[N], const char* (*name_of)(Enum), const std::string& where,
             const char* what) {
  for (Enum v : values)
    if (name == name_of(v)) return v;
  reject("{}: unknown {} \"{}\"", where, what, name);
}

constexpr tpcoll_op_t kOps[] = {TPCOLL_OP_ALL_REDUCE, TPCOLL_OP_ALL_GATHER, TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM};
constexpr tpcoll_algo_t kAlgos[] = {TPCOLL_ALGO_ONESHOT, TPCOLL_ALGO_TWOSHOT, TPCOLL_ALGO_UNFUSED,
                                    TPCOLL_ALGO_FALLBACK};
constexpr tpcoll_dtype_t kDtypes[] = {TPCOLL_FLOAT32,     TPCOLL_FLOAT16,     TPCOLL_BFLOAT16, TPCOLL_FLOAT64,
                                      TPCOLL_FLOAT8_E4M3, TPCOLL_FLOAT8_E5M2, TPCOLL_INT8,     TPCOLL_UINT8,
                                      TPCOLL_INT32,       TPCOLL_INT64};

tpcoll_algo_t parse_algo(const std::string& name, tpcoll_op_t op, const std::string& where) {
  const tpcoll_algo_t algo = by_name(name, kAlgos, algo_name, where, "algorithm");
  if (!algo_applies(op, algo)) reject("{}: {} cannot run {}", where, name, op_name(op));
  return algo;
}

TuneKey parse_key(const Json& key) {
  const std::string where = "key";
  only_fields(key, where, {"backend", "device", "world", "topology", "version"});
  const std::uint64_t world = count_field(key, where, "world");
  if (world > TPCOLL_MAX_RANKS) reject("key.world is {}, more than {} ranks", world, TPCOLL_MAX_RANKS);
  return TuneKey{text_field(key, where, "backend"), text_field(key, where, "device"), static_cast<int>(world),
                 text_field(key, where, "topology"), text_field(key, where, "version")};
}

}  // namespace

void check_tune_key(const TuneKey& found, const TuneKey& expected) {
  const auto differs = [](const char* field, const auto& f, const auto& e) {
    if (f != e) reject("key.{} is \"{}\", this communicator's is \"{}\"", field, f, e);
  };
  differs("backend", found.backend, expected.backend);
  differs("device", found.device, expected.device);
  differs("world", found.world, expected.world);
  differs("topology", found.topology, expected.topology);
  differs("version", found.version, expected.version);
}

namespace {

// One grid point's winner, checked against its measured times: a winner that
// was not the fastest candidate means the table was edited by hand.
tpcoll_algo_t parse_point(const Json& point, tpcoll_op_t op, const std::string& where) {
  if (!point.is_object()) reject("{} is {}, expected an object", where, point.type_name());
  only_fields(point, where, {"bytes", "algo", "us"});
  const tpcoll_algo_t algo = parse_algo(text_field(point, where, "algo"), op, where + ".algo");
  const Json& times = typed(point, where, "us", Json::value_t::object, "an object");
  if (!times.contains(algo_name(algo))) reject("{}: winner {} has no measured time in \"us\"", where, algo_name(algo));
  double best = std::numeric_limits<double>::infinity();
  std::string fastest;
  for (const auto& [name, value] : times.items()) {
    parse_algo(name, op, where + ".us");
    if (!value.is_number() || value.get<double>() <= 0)
      reject("{}.us.{} is {}, expected a positive number of microseconds", where, name, value.dump());
    if (value.get<double>() < best) best = value.get<double>(), fastest = name;
  }
  if (fastest != algo_name(algo))
    reject("{}: names {} the winner, but {} measured faster ({} us vs {} us)", where, algo_name(algo), fastest, best,
           times[algo_name(algo)].get<double>());
  return algo;
}

// What a row is for: a table has one row per op x dtype (x hidden).
struct RowKey {
  std::string op, dtype;
  std::uint64_t hidden;  // kAnyHidden: every hidden
  bool operator<(const RowKey& o) const { return std::tie(op, dtype, hidden) < std::tie(o.op, o.dtype, o.hidden); }
};

// Each grid point becomes a table row (so plan() can name the points around
// a size), and one more row gives the last point's winner every larger size.
RowKey parse_row(const Json& row, const std::string& where, int world, std::vector<TableRow>& out) {
  if (!row.is_object()) reject("{} is {}, expected an object", where, row.type_name());
  only_fields(row, where, {"op", "dtype", "hidden", "points"});
  const tpcoll_op_t op = by_name(text_field(row, where, "op"), kOps, op_name, where + ".op", "op");
  const tpcoll_dtype_t dtype = by_name(text_field(row, where, "dtype"), kDtypes, dtype_name, where + ".dtype", "dtype");
  if (op != TPCOLL_OP_ALL_GATHER && !is_reducible(dtype))
    reject("{}: {} cannot reduce {}", where, op_name(op), dtype_name(dtype));
  // The fused op's rows may be measured at one hidden size: their points are
  // then whole rows of it (token counts), which a hand edit may break.
  std::uint64_t hidden = kAnyHidden;
  if (row.contains("hidden")) {
    if (!is_fused(op)) reject("{}: \"hidden\" is for the fused ops' rows, not {}", where, op_name(op));
    hidden = count_field(row, where, "hidden");
  }
  const Json& points = typed(row, where, "points", Json::value_t::array, "an array");
  if (points.empty()) reject("{}.points is empty", where);
  std::uint64_t previous = 0;
  for (std::size_t i = 0; i < points.size(); ++i) {
    const std::string at = fmt::format("{}.points[{}]", where, i);
    const tpcoll_algo_t algo = parse_point(points[i], op, at);
    const std::uint64_t bytes = count_field(points[i], at, "bytes");
    if (bytes <= previous) reject("{}.bytes is {}, not above the previous point's {}: the grid must grow", at, bytes, previous);
    // (The first test keeps hidden x the element size from overflowing.)
    if (hidden != kAnyHidden && (bytes / dtype_size(dtype) < hidden || bytes % (hidden * dtype_size(dtype)) != 0))
      reject("{}.bytes is {}, not whole rows of hidden {} {}", at, bytes, hidden, dtype_name(dtype));
    previous = bytes;
    out.push_back(TableRow{op, dtype, world, world, static_cast<std::size_t>(bytes), algo, hidden});
  }
  out.push_back(TableRow{op, dtype, world, world, kAnyBytes, out.back().algo, hidden});
  return RowKey{op_name(op), dtype_name(dtype), hidden};
}

}  // namespace

LoadedTable parse_tune_table(std::string_view text) {
  Json doc;
  try {
    doc = Json::parse(text);
  } catch (const Json::parse_error& e) {
    reject("not valid JSON (truncated?): {}", e.what());
  }
  if (!doc.is_object()) reject("the table is {}, expected an object", doc.type_name());
  only_fields(doc, "table", {"format", "key", "source", "rows"});
  const std::string format = text_field(doc, "table", "format");
  if (format != kTuneFormat) reject("format is \"{}\", expected \"{}\"", format, kTuneFormat);

  LoadedTable table;
  table.key = parse_key(typed(doc, "table", "key", Json::value_t::object, "an object"));
  table.source = text_field(doc, "table", "source");
  table.name = fmt::format("{}-{}-x{}", table.key.backend, table.key.device, table.key.world);

  const Json& rows = typed(doc, "table", "rows", Json::value_t::array, "an array");
  if (rows.empty()) reject("rows is empty");
  std::set<RowKey> seen;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const std::string where = fmt::format("rows[{}]", i);
    const RowKey row = parse_row(rows[i], where, table.key.world, table.rows);
    if (!seen.insert(row).second)
      reject("{}: a second row for {} {}{}", where, row.op, row.dtype,
             row.hidden == kAnyHidden ? std::string() : fmt::format(" at hidden {}", row.hidden));
    // A row for every hidden beside rows for given ones would never serve
    // (lookup takes a measured hidden wherever there is one): a hand edit.
    const auto first = seen.lower_bound(RowKey{row.op, row.dtype, kAnyHidden});  // kAnyHidden sorts first
    const auto second = std::next(first);
    if (first->hidden == kAnyHidden && second != seen.end() && second->op == row.op && second->dtype == row.dtype)
      reject("{}: {} {} has a row for every hidden beside rows for given hidden sizes; the first would never serve",
             where, row.op, row.dtype);
  }
  return table;
}

}  // namespace tpcoll
