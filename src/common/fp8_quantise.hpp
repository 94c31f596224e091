// The FP8 output of the fused op (tpcoll_fused_allreduce_residual_rmsnorm_fp8)
// and the rule that fills it, one source for the CPU and the GPU:
//   static:    out_fp8 = e4m3(out / scale)
//   per token: scale_row = max|out_row| / 448, out_fp8 = e4m3(out_row / scale_row)
// where out is the fused op's output rounded to its dtype and widened to
// fp32, the division is IEEE (correctly rounded) on both sides and e4m3() is
// fp8::float_to_e4m3 (round to nearest even, saturating at +-448, NaN 0x7f).
// The CPU divides; the GPU kernels reach the same bits through the row
// divisor's reciprocal (common/division.hpp), which is much cheaper than a
// division per element.
// The row maximum ignores NaN (fmax); a row whose maximum is 0 (all +-0, or
// too small for max / 448 to stay above 0) keeps scale 0 and is divided by 1,
// so its codes are the e4m3 of the values themselves (+-0) and nothing
// divides by zero. A row holding an infinity gets scale inf: its finite
// values become +-0 and its infinities NaN.
#pragma once

#include "common/division.hpp"
#include "common/fp8.hpp"

#include <tpcoll/tpcoll.h>

#if defined(__CUDACC__)
#include <cuda_fp8.h>
#endif

#include <cmath>
#include <cstdint>

namespace tpcoll::fp8 {

struct Fp8Output {
  void* out_fp8 = nullptr;        // [rows, hidden] e4m3
  float* row_scales = nullptr;    // per token: [rows]; unused for static scaling
  tpcoll_fp8_scaling_t scaling = TPCOLL_FP8_STATIC;
  float static_scale = 1.0f;      // static: > 0 and finite (validated)
};

// 448 with its reciprocal RN(1/448), for numerics::quotient.
TPCOLL_HOST_DEVICE inline numerics::Divisor e4m3_max_divisor() { return {kE4m3Max, 0x1.24924ap-9f, true}; }

// max / 448: the CPU divides; a GPU row takes the same bits by the
// reciprocal, one division less between its maximum and its codes.
TPCOLL_HOST_DEVICE inline float per_token_scale(float row_max_abs) {
#if defined(__CUDA_ARCH__)
  return numerics::quotient(row_max_abs, e4m3_max_divisor());
#else
  return numerics::divided(row_max_abs, kE4m3Max);
#endif
}

// What a row is divided by: its scale, or 1 for a scale of 0.
TPCOLL_HOST_DEVICE inline float divisor_of(float scale) { return scale == 0.0f ? 1.0f : scale; }

// The code of a quotient.
TPCOLL_HOST_DEVICE inline std::uint8_t e4m3_code(float q) {
#if defined(__CUDA_ARCH__)
  // The hardware conversion (cvt.rn.satfinite.e4m3x2.f32 on sm_89+), NaN
  // made canonical as on the host.
  return isnan(q) ? kE4m3NaN : static_cast<std::uint8_t>(__nv_cvt_float_to_fp8(q, __NV_SATFINITE, __NV_E4M3));
#else
  return float_to_e4m3(q);
#endif
}

// The code of v / divisor: by IEEE division (the CPU) ...
TPCOLL_HOST_DEVICE inline std::uint8_t quantise(float v, float divisor) {
  return e4m3_code(numerics::divided(v, divisor));
}

// ... or, the same bits, by the divisor's reciprocal (the GPU kernels).
TPCOLL_HOST_DEVICE inline std::uint8_t quantise(float v, const numerics::Divisor& divisor) {
  return e4m3_code(numerics::quotient(v, divisor));
}

}  // namespace tpcoll::fp8
