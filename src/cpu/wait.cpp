#include "cpu/wait.hpp"

#include <sched.h>

#include <chrono>
#include <thread>

namespace tpcoll::cpu {

void back_off(std::uint32_t attempt) {
  constexpr std::uint32_t kSpin = 256;     // ~ a few microseconds of pauses
  constexpr std::uint32_t kYield = 16384;  // then give the core to other ranks
  if (attempt < kSpin) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  } else if (attempt < kYield) {
    sched_yield();
  } else {
    std::this_thread::sleep_for(std::chrono::microseconds(50));  // a long wait: stop burning a core
  }
}

}  // namespace tpcoll::cpu
