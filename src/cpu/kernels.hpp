// CPU compute kernels, one per numeric building block, following
// common/numerics.hpp bit for bit. Dispatch on dtype happens here once.
#pragma once

#include "common/fp8_quantise.hpp"
#include "common/rmsnorm_rows.hpp"

#include <tpcoll/tpcoll.h>

#include <cstddef>

namespace tpcoll::cpu {

// dst[i] = round(src[0][i] + src[1][i] + ... + src[n-1][i]) with fp32 accumulation.
void reduce(tpcoll_dtype_t dtype, const void* const* srcs, int nsrcs, void* dst, std::size_t count);

// s = x + residual (rounded) -> residual_out; out = s * rsqrt(mean(s^2) + eps) * weight.
void add_rmsnorm(tpcoll_dtype_t dtype, const RmsNormRows& rows);

// The FP8 output of `rows` x `hidden` elements of the fused op's out (dtype),
// by the rule of common/fp8_quantise.hpp.
void quantise_fp8(tpcoll_dtype_t dtype, const void* out, std::size_t rows, std::size_t hidden,
                  const fp8::Fp8Output& fp8);

}  // namespace tpcoll::cpu
