#include "core/call.hpp"

#include "core/dtype.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace tpcoll {

const char* op_name(tpcoll_op_t op) {
  switch (op) {
    case TPCOLL_OP_ALL_REDUCE: return "all_reduce";
    case TPCOLL_OP_ALL_GATHER: return "all_gather";
    case TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM: return "fused_allreduce_residual_rmsnorm";
    case TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM_FP8: return "fused_allreduce_residual_rmsnorm_fp8";
    case TPCOLL_OP_REDUCE_SCATTER: return "reduce_scatter";
    case TPCOLL_OP_FUSED_REDUCE_SCATTER_RMSNORM: return "fused_reduce_scatter_residual_rmsnorm";
  }
  return "unknown_op";
}

const char* algo_name(tpcoll_algo_t algo) {
  switch (algo) {
    case TPCOLL_ALGO_ONESHOT: return "oneshot";
    case TPCOLL_ALGO_TWOSHOT: return "twoshot";
    case TPCOLL_ALGO_UNFUSED: return "unfused";
    case TPCOLL_ALGO_FALLBACK: return "fallback";
  }
  return "unknown_algo";
}

bool is_fused(tpcoll_op_t op) {
  return op == TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM || op == TPCOLL_OP_FUSED_REDUCE_SCATTER_RMSNORM ||
         op == TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM_FP8;
}

bool is_scatter(tpcoll_op_t op) {
  return op == TPCOLL_OP_REDUCE_SCATTER || op == TPCOLL_OP_FUSED_REDUCE_SCATTER_RMSNORM;
}

std::string describe_call(std::uint32_t op, std::uint32_t dtype, std::span<const std::int64_t> shape,
                          std::int32_t dim, std::uint32_t has_residual) {
  std::string s = fmt::format("{}({}, shape [{}]", op_name(static_cast<tpcoll_op_t>(op)),
                              dtype_name(static_cast<tpcoll_dtype_t>(dtype)), fmt::join(shape, ", "));
  if (op == TPCOLL_OP_ALL_GATHER) s += fmt::format(", dim {}", dim);
  if (is_fused(static_cast<tpcoll_op_t>(op))) s += has_residual ? ", residual" : ", no residual";
  return s + ")";
}

std::string describe(const Call& call) {
  return describe_call(call.op, call.dtype, std::span(call.shape.data(), call.ndim), call.dim, call.has_residual);
}

}  // namespace tpcoll
