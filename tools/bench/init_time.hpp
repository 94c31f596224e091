// How long creating a communicator takes (vllm#5528, vllm#39249: custom
// all-reduce init took seconds): the bench's first row, "init", the median
// of a few creations (collective: every rank creates, rank 0's clock).
#pragma once

#include "tools/bench/harness.hpp"

#include <functional>
#include <string>

namespace tpcoll::bench {

// create() makes one communicator of `world` ranks (all of this process's)
// and destroys it; only the creation should dominate.
Row init_row(int world, const std::string& backend, const std::function<void()>& create);

}  // namespace tpcoll::bench
