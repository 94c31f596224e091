// A validated call: everything about an op that every rank must agree on.
#pragma once

#include <tpcoll/tpcoll.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace tpcoll {

struct Call {
  tpcoll_op_t op = TPCOLL_OP_ALL_REDUCE;
  tpcoll_dtype_t dtype = TPCOLL_FLOAT32;
  int ndim = 1;
  std::array<std::int64_t, TPCOLL_MAX_DIMS> shape{};  // this rank's input shape
  int dim = 0;                                        // all-gather dim
  std::size_t count = 0;                              // elements of this rank's (whole) input
  std::size_t bytes = 0;                              // count * element size
  // All-gather viewed as [outer, inner_bytes]; the fused ops as [tokens, hidden].
  std::size_t outer = 0;
  std::size_t inner_bytes = 0;
  bool has_residual = false;
  float eps = 0.0f;

  std::size_t rows() const { return static_cast<std::size_t>(shape[0]); }     // fused: tokens (of the whole x)
  std::size_t hidden() const { return static_cast<std::size_t>(shape[1]); }   // fused: hidden
};

const char* op_name(tpcoll_op_t op);
// The ops with a residual, a weight and eps (all-reduce or reduce-scatter, then add + RMSNorm).
bool is_fused(tpcoll_op_t op);
// The ops whose result is this rank's share (1 / world) of the input.
bool is_scatter(tpcoll_op_t op);
const char* algo_name(tpcoll_algo_t algo);
// "all_gather(bfloat16, shape [4, 7], dim 1)"
std::string describe(const Call& call);
std::string describe_call(std::uint32_t op, std::uint32_t dtype, std::span<const std::int64_t> shape,
                          std::int32_t dim, std::uint32_t has_residual);

}  // namespace tpcoll
