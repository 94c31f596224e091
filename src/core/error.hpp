// Raising the library's one error type (tpcoll::Error) from host code.
#pragma once

#include <tpcoll/error.hpp>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

namespace tpcoll {

template <typename... Args>
[[noreturn]] void fail(tpcoll_result_t code, fmt::format_string<Args...> format, Args&&... args) {
  throw Error(code, fmt::format(format, std::forward<Args>(args)...));
}

// For a failed OS call: the message ends with errno's text.
template <typename... Args>
[[noreturn]] void fail_errno(fmt::format_string<Args...> format, Args&&... args) {
  const int saved = errno;
  throw Error(TPCOLL_SYSTEM_ERROR,
              fmt::format(format, std::forward<Args>(args)...) + ": " + std::strerror(saved));
}

}  // namespace tpcoll
