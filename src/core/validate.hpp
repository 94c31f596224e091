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
Call validate_reduce_scatter(const void* in, const void* out, std::size_t count, tpcoll_dtype_t dtype);

// The scatter ops split the input into `world` equal shares of whole rows
// (reduce-scatter: elements; the fused one: tokens).
void require_equal_shares(const Call& call, int world);
// out (share `rank` of the result) either is share `rank` of the input, in
// place, or lies outside the input: a peer's share may still be read from the
// input while out is written.
void require_share_placement(const Call& call, const void* in, const void* out, int world, int rank);

// The shape-only part, for tpcoll_plan.
Call validate_plan_request(tpcoll_op_t op, tpcoll_dtype_t dtype, int ndim, const std::int64_t* shape, int dim);

}  // namespace tpcoll
