// `tpcoll soak`: runs random but every-rank-identical mixes of ops, sizes,
// dtypes, world sizes and algorithms for a while, checks every result, and
// counts ops and errors.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tpcoll::tools {

struct SoakOptions {
  double seconds = 60;
  std::vector<int> world_sizes{2, 3, 4};
  double round_seconds = 30;   // each round: one job of one world size
  std::size_t max_bytes = 1 << 20;  // largest per-rank input
  std::uint64_t seed = 1;
  bool cuda = false;           // ranks on TPCOLL_DEVICE (default auto), buffers in device memory
  bool arena = false;          // CUDA: buffers carved from one allocation per round, no cudaMalloc/cudaFree per op
};

// Starts rounds of `tpcoll soak` ranks (own_command) until the time is up;
// a rank started by it runs one round. Returns 0 when no op failed.
int soak(const SoakOptions& options, const std::vector<std::string>& own_command);

}  // namespace tpcoll::tools
