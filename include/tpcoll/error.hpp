// tpcoll::Error, the library's one error type: a result code and a message
// naming the problem. The C++ API throws it; the C API returns its code.
#pragma once

#include <tpcoll/tpcoll.h>

#include <stdexcept>
#include <string>

namespace tpcoll {

class Error : public std::runtime_error {
 public:
  Error(tpcoll_result_t code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  tpcoll_result_t code() const noexcept { return code_; }

 private:
  tpcoll_result_t code_;
};

// Turns a C result into an Error carrying this thread's last message.
inline void check(tpcoll_result_t result) {
  if (result != TPCOLL_SUCCESS) throw Error(result, tpcoll_last_error());
}

}  // namespace tpcoll
