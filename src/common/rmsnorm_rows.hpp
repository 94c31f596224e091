// The operands of an add + RMSNorm over rows, as the CPU and GPU kernels take
// them: s = x + residual (rounded) -> residual_out; out = rmsnorm(s) * weight.
#pragma once

#include <cstddef>

namespace tpcoll {

struct RmsNormRows {
  const void* x;          // [rows, hidden] (for the fused kernel: this rank's input, not yet reduced)
  const void* residual;   // nullable
  const void* weight;     // [hidden]
  void* out;              // may alias x
  void* residual_out;     // may alias residual; unused without residual
  std::size_t rows;
  std::size_t hidden;
  float eps;
};

}  // namespace tpcoll
