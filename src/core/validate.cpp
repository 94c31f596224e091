#include "core/validate.hpp"

#include "core/dtype.hpp"
#include "core/error.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace tpcoll {
namespace {

void require_pointer(const void* p, const char* name) {
  if (p == nullptr) fail(TPCOLL_INVALID_ARGUMENT, "{} is NULL", name);
}

// Elements are read and written as whole words, so each buffer must be
// aligned to its element size (any allocator's pointer is).
void require_aligned(const void* p, const char* name, tpcoll_dtype_t dtype) {
  const std::size_t size = dtype_size(dtype);
  if (reinterpret_cast<std::uintptr_t>(p) % size != 0)
    fail(TPCOLL_INVALID_ARGUMENT, "{} ({}) is not aligned to the {}-byte element size of {}", name, p, size,
         dtype_name(dtype));
}

void require_buffer(const void* p, const char* name, tpcoll_dtype_t dtype) {
  require_pointer(p, name);
  require_aligned(p, name, dtype);
}

void require_dtype(tpcoll_dtype_t dtype) {
  if (dtype_size(dtype) == 0) fail(TPCOLL_INVALID_ARGUMENT, "dtype {} is not a tpcoll_dtype_t", static_cast<int>(dtype));
}

void require_reducible(tpcoll_op_t op, tpcoll_dtype_t dtype) {
  require_dtype(dtype);
  if (!is_reducible(dtype))
    fail(TPCOLL_INVALID_ARGUMENT, "{} does not support dtype {}: use float32, float16 or bfloat16", op_name(op),
         dtype_name(dtype));
}

// count * size must fit comfortably in size_t and in the signature's fields.
void require_count(std::size_t count, tpcoll_dtype_t dtype, const char* name) {
  if (count == 0) fail(TPCOLL_INVALID_ARGUMENT, "{} is 0: nothing to do is not a valid call", name);
  constexpr std::size_t kMaxBytes = std::size_t{1} << 48;
  if (count > kMaxBytes / dtype_size(dtype))
    fail(TPCOLL_INVALID_ARGUMENT, "{} {} is larger than the supported 2^48 bytes", name, count);
}

Call shaped_call(tpcoll_op_t op, tpcoll_dtype_t dtype, int ndim, const std::int64_t* shape, int dim) {
  require_dtype(dtype);
  require_pointer(shape, "shape");
  if (ndim < 1 || ndim > TPCOLL_MAX_DIMS)
    fail(TPCOLL_INVALID_ARGUMENT, "ndim {} is outside 1..{}", ndim, TPCOLL_MAX_DIMS);
  Call call;
  call.op = op;
  call.dtype = dtype;
  call.ndim = ndim;
  call.dim = dim;
  std::size_t count = 1;
  for (int i = 0; i < ndim; ++i) {
    if (shape[i] <= 0) fail(TPCOLL_INVALID_ARGUMENT, "shape[{}] is {}: every extent must be positive", i, shape[i]);
    call.shape[i] = shape[i];
    if (count > std::numeric_limits<std::size_t>::max() / static_cast<std::size_t>(shape[i]))
      fail(TPCOLL_INVALID_ARGUMENT, "shape has more elements than fit in size_t");
    count *= static_cast<std::size_t>(shape[i]);
  }
  require_count(count, dtype, "the element count of shape");
  call.count = count;
  call.bytes = count * dtype_size(dtype);
  return call;
}

Call gather_call(tpcoll_dtype_t dtype, int ndim, const std::int64_t* shape, int dim) {
  Call call = shaped_call(TPCOLL_OP_ALL_GATHER, dtype, ndim, shape, dim);
  if (dim < 0 || dim >= ndim) fail(TPCOLL_INVALID_ARGUMENT, "dim {} is out of range for a {}-d tensor", dim, ndim);
  std::size_t outer = 1;
  for (int i = 0; i < dim; ++i) outer *= static_cast<std::size_t>(shape[i]);
  call.outer = outer;
  call.inner_bytes = call.bytes / outer;
  return call;
}

Call rmsnorm_call(tpcoll_op_t op, std::size_t tokens, std::size_t hidden, tpcoll_dtype_t dtype, float eps) {
  require_reducible(op, dtype);
  if (tokens == 0) fail(TPCOLL_INVALID_ARGUMENT, "tokens is 0");
  if (hidden == 0) fail(TPCOLL_INVALID_ARGUMENT, "hidden is 0");
  if (!(eps >= 0.0f) || !std::isfinite(eps)) fail(TPCOLL_INVALID_ARGUMENT, "eps {} is not a finite value >= 0", eps);
  constexpr auto kMaxExtent = static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max());
  if (tokens > kMaxExtent || hidden > kMaxExtent || tokens > (std::size_t{1} << 48) / hidden)
    fail(TPCOLL_INVALID_ARGUMENT, "tokens x hidden ({} x {}) is too large", tokens, hidden);
  const std::int64_t shape[2] = {static_cast<std::int64_t>(tokens), static_cast<std::int64_t>(hidden)};
  Call call = shaped_call(op, dtype, 2, shape, 0);
  call.outer = tokens;
  call.inner_bytes = hidden * dtype_size(dtype);
  call.eps = eps;
  return call;
}

}  // namespace

Call validate_all_reduce(const void* in, const void* out, std::size_t count, tpcoll_dtype_t dtype) {
  require_reducible(TPCOLL_OP_ALL_REDUCE, dtype);
  require_buffer(in, "in", dtype);
  require_buffer(out, "out", dtype);
  require_count(count, dtype, "count");
  const std::int64_t shape[1] = {static_cast<std::int64_t>(count)};
  return shaped_call(TPCOLL_OP_ALL_REDUCE, dtype, 1, shape, 0);
}

Call validate_reduce_scatter(const void* in, const void* out, std::size_t count, tpcoll_dtype_t dtype) {
  require_reducible(TPCOLL_OP_REDUCE_SCATTER, dtype);
  require_buffer(in, "in", dtype);
  require_buffer(out, "out", dtype);
  require_count(count, dtype, "count");
  const std::int64_t shape[1] = {static_cast<std::int64_t>(count)};
  return shaped_call(TPCOLL_OP_REDUCE_SCATTER, dtype, 1, shape, 0);
}

void require_equal_shares(const Call& call, int world) {
  const std::size_t units = call.op == TPCOLL_OP_REDUCE_SCATTER ? call.count : call.rows();
  if (units % static_cast<std::size_t>(world) != 0)
    fail(TPCOLL_INVALID_ARGUMENT, "{}: {} {} is not a multiple of the world size {}, so the ranks' shares cannot be equal",
         op_name(call.op), call.op == TPCOLL_OP_REDUCE_SCATTER ? "count" : "tokens", units, world);
}

void require_share_placement(const Call& call, const void* in, const void* out, int world, int rank) {
  const auto in_at = reinterpret_cast<std::uintptr_t>(in);
  const auto out_at = reinterpret_cast<std::uintptr_t>(out);
  const std::size_t share = call.bytes / static_cast<std::size_t>(world);
  const bool overlaps = out_at < in_at + call.bytes && in_at < out_at + share;
  if (overlaps && out_at != in_at + share * static_cast<std::size_t>(rank))
    fail(TPCOLL_INVALID_ARGUMENT,
         "{}: out ({}) overlaps the input ({}, {} B) but is not rank {}'s share of it ({}): in place, out must be "
         "the input + {} B",
         op_name(call.op), out, in, call.bytes, rank, static_cast<const void*>(static_cast<const std::byte*>(in) + share * rank),
         share * static_cast<std::size_t>(rank));
}

Call validate_all_gather(const void* in, const void* out, tpcoll_dtype_t dtype, int ndim,
                         const std::int64_t* shape, int dim) {
  require_dtype(dtype);
  require_buffer(in, "in", dtype);
  require_buffer(out, "out", dtype);
  return gather_call(dtype, ndim, shape, dim);
}

Call validate_rmsnorm(tpcoll_op_t op, const RmsNormBuffers& b, std::size_t tokens, std::size_t hidden,
                      tpcoll_dtype_t dtype, float eps) {
  Call call = rmsnorm_call(op, tokens, hidden, dtype, eps);
  require_buffer(b.x, "x", dtype);
  require_buffer(b.weight, "weight", dtype);
  // The FP8 op writes out only when asked to.
  if (op != TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM_FP8 || b.out != nullptr) require_buffer(b.out, "out", dtype);
  if (b.residual != nullptr) {
    require_aligned(b.residual, "residual", dtype);
    if (b.residual_out == nullptr)
      fail(TPCOLL_INVALID_ARGUMENT, "residual_out is NULL but residual is given (it may alias residual)");
    require_aligned(b.residual_out, "residual_out", dtype);
    call.has_residual = true;
  }
  return call;
}

void validate_fp8_output(const fp8::Fp8Output& fp8) {
  require_pointer(fp8.out_fp8, "out_fp8");
  switch (fp8.scaling) {
    case TPCOLL_FP8_STATIC:
      if (!(fp8.static_scale > 0.0f) || !std::isfinite(fp8.static_scale))
        fail(TPCOLL_INVALID_ARGUMENT, "static_scale {} is not a finite value > 0", fp8.static_scale);
      return;
    case TPCOLL_FP8_PER_TOKEN:
      require_buffer(fp8.row_scales, "row_scales", TPCOLL_FLOAT32);
      return;
  }
  fail(TPCOLL_INVALID_ARGUMENT, "scaling {} is neither TPCOLL_FP8_STATIC nor TPCOLL_FP8_PER_TOKEN",
       static_cast<int>(fp8.scaling));
}

Call validate_plan_request(tpcoll_op_t op, tpcoll_dtype_t dtype, int ndim, const std::int64_t* shape, int dim) {
  switch (op) {
    case TPCOLL_OP_ALL_REDUCE:
    case TPCOLL_OP_REDUCE_SCATTER:
      require_reducible(op, dtype);
      return shaped_call(op, dtype, ndim, shape, 0);
    case TPCOLL_OP_ALL_GATHER:
      return gather_call(dtype, ndim, shape, dim);
    case TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM_FP8:
      // Quantising is an epilogue of the rows a rank already holds: the FP8
      // op moves the same data as the fused op and is planned as it.
      op = TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM;
      [[fallthrough]];
    case TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM:
    case TPCOLL_OP_FUSED_REDUCE_SCATTER_RMSNORM:
      require_pointer(shape, "shape");
      if (ndim != 2) fail(TPCOLL_INVALID_ARGUMENT, "{}'s shape is [tokens, hidden]; got ndim {}", op_name(op), ndim);
      if (shape[0] <= 0 || shape[1] <= 0)
        fail(TPCOLL_INVALID_ARGUMENT, "tokens and hidden must be positive; got [{}, {}]", shape[0], shape[1]);
      return rmsnorm_call(op, static_cast<std::size_t>(shape[0]), static_cast<std::size_t>(shape[1]), dtype, 0.0f);
  }
  fail(TPCOLL_INVALID_ARGUMENT, "op {} is not a tpcoll_op_t", static_cast<int>(op));
}

}  // namespace tpcoll
