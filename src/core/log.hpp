// Logging filtered by TPCOLL_DEBUG, to stderr: "tpcoll INFO [init] message".
#pragma once

#include <fmt/format.h>

#include <string_view>
#include <utility>

namespace tpcoll {

enum class LogLevel { kNone = 0, kWarn = 1, kInfo = 2, kTrace = 3 };

// Re-reads TPCOLL_DEBUG (called at communicator creation).
void refresh_log_level();
bool log_enabled(LogLevel level);
void log_line(LogLevel level, std::string_view subsystem, std::string_view message);

template <typename... Args>
void log(LogLevel level, std::string_view subsystem, fmt::format_string<Args...> format, Args&&... args) {
  if (log_enabled(level)) log_line(level, subsystem, fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace tpcoll
