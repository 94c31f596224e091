// Argument checks run before any byte is touched: each failure is
// TPCOLL_INVALID_ARGUMENT with a message naming the argument.
#pragma once

#include "common/fp8_quantise.hpp"
#include "core/call.hpp"

namespace tpcoll {

Call validate_all_reduce(const void* in, const void* out, std::size_t count, tpcoll_dtype_t dtype);

Call validate_all_gather(const void* in, const void* out, tpcoll_dtype_t dtype, int ndim,
                         const std::int64_t* shape, int dim);

struct RmsNormBuffers {
  const void* x;
  const void* residual;
  const void* weight;
  const void* out;
  const void* residual_out;
};
Call validate_rmsnorm(tpcoll_op_t op, const RmsNormBuffers& buffers, std::size_t tokens, std::size_t hidden,
                      tpcoll_dtype_t dtype, float eps);

// The FP8 output of tpcoll_fused_allreduce_residual_rmsnorm_fp8 (its other
// arguments go through validate_rmsnorm, where out may then be NULL).
void validate_fp8_output(const fp8::Fp8Output& fp8);

// The shape-only part, for tpcoll_plan.
Call validate_plan_request(tpcoll_op_t op, tpcoll_dtype_t dtype, int ndim, const std::int64_t* shape, int dim);

}  // namespace tpcoll
