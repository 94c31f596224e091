#include "core/log.hpp"

#include "core/config.hpp"

#include <atomic>
#include <cstdio>

namespace tpcoll {
namespace {

std::atomic<int> g_level{-1};

LogLevel parse_level(const std::string& v) {
  if (v == "NONE") return LogLevel::kNone;
  if (v == "INFO") return LogLevel::kInfo;
  if (v == "TRACE") return LogLevel::kTrace;
  return LogLevel::kWarn;
}

}  // namespace

void refresh_log_level() { g_level.store(static_cast<int>(parse_level(env::kDebug.value()))); }

bool log_enabled(LogLevel level) {
  if (g_level.load(std::memory_order_relaxed) < 0) refresh_log_level();
  return static_cast<int>(level) <= g_level.load(std::memory_order_relaxed);
}

void log_line(LogLevel level, std::string_view subsystem, std::string_view message) {
  static constexpr const char* kNames[] = {"", "WARN", "INFO", "TRACE"};
  // One fprintf per line so that lines of concurrent ranks do not interleave.
  std::fprintf(stderr, "tpcoll %s [%.*s] %.*s\n", kNames[static_cast<int>(level)],
               static_cast<int>(subsystem.size()), subsystem.data(), static_cast<int>(message.size()),
               message.data());
}

}  // namespace tpcoll
