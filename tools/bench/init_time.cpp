#include "tools/bench/init_time.hpp"

#include <algorithm>
#include <chrono>
#include <vector>

namespace tpcoll::bench {

Row init_row(int world, const std::string& backend, const std::function<void()>& create) {
  constexpr int kCreations = 5;
  std::vector<double> us;
  for (int i = 0; i < kCreations; ++i) {
    const auto start = std::chrono::steady_clock::now();
    create();
    us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(us.begin(), us.end());
  // Strings moved in whole: GCC 12 warns (-Wrestrict, falsely) on assigning these literals.
  Row row;
  row.op = std::string("init");
  row.dtype = std::string("none");
  row.world = world;
  row.algo = backend;
  row.shape = std::string("communicator creation + destruction, median of 5");
  row.time_us = us[kCreations / 2];
  row.check = std::string("ok");
  return row;
}

}  // namespace tpcoll::bench
