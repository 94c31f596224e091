#include "core/config.hpp"

#include "core/error.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstdlib>

namespace tpcoll {

std::string EnvParam::value() const {
  const char* v = std::getenv(name);
  return (v && *v) ? std::string(v) : std::string(default_value);
}

std::int64_t EnvParam::as_int() const {
  const std::string v = value();
  std::int64_t out = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || end != v.data() + v.size())
    fail(TPCOLL_INVALID_ARGUMENT, "{}={:?} is not an integer", name, v);
  return out;
}

bool EnvParam::as_bool() const {
  std::string v = value();
  std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return std::tolower(c); });
  if (v == "1" || v == "true" || v == "yes" || v == "on") return true;
  if (v == "0" || v == "false" || v == "no" || v == "off") return false;
  fail(TPCOLL_INVALID_ARGUMENT, "{}={:?} is not a boolean (use 1 or 0)", name, v);
}

namespace env {

std::span<const EnvParam> all() {
  static constexpr std::array params{kDisable,        kAlgo,            kDebug,  kTimeoutMs,     kBootstrapTimeoutMs,
                                     kCpuBufferBytes, kCudaBufferBytes, kCudaLowLatencyBytes, kCudaEarlyLaunch, kFaultIpcOpen, kTuneFile, kNcclLib, kDevice, kLocalRank,     kRank,
                                     kWorldSize,      kJob,             kRunDir};
  return params;
}

std::vector<std::pair<int, int>> ipc_open_faults() {
  const std::string v = kFaultIpcOpen.value();
  std::vector<std::pair<int, int>> pairs;
  if (v.empty()) return pairs;
  for (std::size_t at = 0;;) {
    const std::size_t comma = v.find(',', at);
    const std::string item = v.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    int rank = -1, peer = -1;
    const char* text = item.data();
    const char* stop = text + item.size();
    auto [colon, e1] = std::from_chars(text, stop, rank);
    if (e1 != std::errc() || colon == stop || *colon != ':' || rank < 0)
      fail(TPCOLL_INVALID_ARGUMENT, "{}={:?}: {:?} is not rank:peer", kFaultIpcOpen.name, v, item);
    auto [last, e2] = std::from_chars(colon + 1, stop, peer);
    if (e2 != std::errc() || last != stop || peer < 0)
      fail(TPCOLL_INVALID_ARGUMENT, "{}={:?}: {:?} is not rank:peer", kFaultIpcOpen.name, v, item);
    pairs.emplace_back(rank, peer);
    if (comma == std::string::npos) return pairs;
    at = comma + 1;
  }
}

std::optional<tpcoll_algo_t> forced_algo() {
  const std::string v = kAlgo.value();
  if (v.empty() || v == "auto") return std::nullopt;
  if (v == "oneshot") return TPCOLL_ALGO_ONESHOT;
  if (v == "twoshot") return TPCOLL_ALGO_TWOSHOT;
  if (v == "unfused") return TPCOLL_ALGO_UNFUSED;
  if (v == "fallback") return TPCOLL_ALGO_FALLBACK;
  fail(TPCOLL_INVALID_ARGUMENT, "TPCOLL_ALGO={:?} is not one of auto, oneshot, twoshot, unfused, fallback", v);
}

}  // namespace env
}  // namespace tpcoll
