// The operands of an add + RMSNorm over rows, as the CPU and GPU kernels take
// them: s = x + residual (rounded) -> residual_out; out = rmsnorm(s) * weight,
// and, when fp8.out_fp8 is set, out's FP8 quantisation as an epilogue
// (common/fp8_quantise.hpp; the GPU kernels only: the CPU quantises after).
#pragma once

#include "common/fp8_quantise.hpp"

#include <cstddef>

namespace tpcoll {

struct RmsNormRows {
  const void* x;          // [rows, hidden] (for the fused kernel: this rank's input, not yet reduced)
  const void* residual;   // nullable
  const void* weight;     // [hidden]
  void* out;              // may alias x; with an FP8 epilogue it may be NULL (not written)
  void* residual_out;     // may alias residual; unused without residual
  std::size_t rows;
  std::size_t hidden;
  float eps;
  fp8::Fp8Output fp8{};   // out_fp8 NULL: no FP8 output (the kernels without the epilogue ignore it)
};

}  // namespace tpcoll
