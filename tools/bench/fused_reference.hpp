// The fused op's inputs and its fp64 reference, shared by the CPU and GPU
// benches: x of rank r, and the residual and weight every rank shares, are
// pure functions of a seed, so the reference needs no communication.
#pragma once

#include "tools/bench/data.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

namespace tpcoll::bench {

inline constexpr float kFusedEps = 1e-6f;
inline constexpr int kResidualSeedRank = 1000;  // residual and weight are the same on every rank
inline constexpr int kWeightSeedRank = 1001;

inline std::uint64_t fused_seed(DType dtype, std::size_t tokens, std::size_t hidden) {
  return mix(tokens * 7919 + hidden * 31 + static_cast<std::uint64_t>(dtype));
}

// Rank `rank`'s operands of a fused row: its own x, and the residual and
// weight every rank shares, from the row's seed.
struct FusedOperands {
  std::uint64_t seed;
  std::vector<std::byte> x, residual, weight;
};

inline FusedOperands fused_operands(DType dtype, std::size_t tokens, std::size_t hidden, int rank) {
  const std::size_t count = tokens * hidden, elem = dtype_size(dtype);
  FusedOperands f{fused_seed(dtype, tokens, hidden), std::vector<std::byte>(count * elem),
                  std::vector<std::byte>(count * elem), std::vector<std::byte>(hidden * elem)};
  fill_floats(dtype, f.x.data(), count, f.seed, rank);
  fill_floats(dtype, f.residual.data(), count, f.seed, kResidualSeedRank);
  fill_floats(dtype, f.weight.data(), hidden, f.seed, kWeightSeedRank);
  return f;
}

// Largest |out - fp64 reference| over up to 64 evenly spaced rows of `out`.
inline double fused_max_error(DType dtype, std::uint64_t seed, int world, const void* residual, const void* weight,
                              const void* out, std::size_t tokens, std::size_t hidden) {
  double max_error = 0;
  const std::size_t row_stride = std::max<std::size_t>(1, tokens / 64);
  std::vector<double> s(hidden);
  for (std::size_t t = 0; t < tokens; t += row_stride) {
    double sumsq = 0;
    for (std::size_t h = 0; h < hidden; ++h) {
      const std::size_t i = t * hidden + h;
      double v = load_float(dtype, residual, i);
      for (int r = 0; r < world; ++r) v += rounded_sample(dtype, seed, r, i);
      s[h] = v;
      sumsq += v * v;
    }
    const double inv_rms = 1.0 / std::sqrt(sumsq / static_cast<double>(hidden) + kFusedEps);
    for (std::size_t h = 0; h < hidden; ++h) {
      const double ref = s[h] * inv_rms * load_float(dtype, weight, h);
      max_error = std::max(max_error, std::fabs(load_float(dtype, out, t * hidden + h) - ref));
    }
  }
  return max_error;
}

}  // namespace tpcoll::bench
