// libFuzzer target: the C API's argument checking, through the real entry
// points of a one-rank CPU communicator (created once).
//
// The input is read as a call: which entry point, dtype, counts or shape,
// which pointers are NULL, misaligned, aliased or overlapping, eps, and for
// the FP8 op its scaling, static scale and row scales. Buffers are exactly as
// large as a valid call needs, so a check that lets a bad call through shows
// up as an AddressSanitizer report. Oracles: every result is SUCCESS or
// INVALID_ARGUMENT (UNSUPPORTED for forcing an algorithm a call cannot use),
// a failure leaves a message in tpcoll_last_error() and every buffer
// untouched, sizes past 2^48 bytes are always refused, a successful one-rank
// all-reduce, reduce-scatter or all-gather returns its input, a reduce-scatter
// whose output partly overlaps its input never succeeds, and the norm ops of
// zeros (with a normal eps) give zeros, in FP8 too.
#include <tpcoll/tpcoll.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

// Buffers above this are not allocated; calls that would need one are
// only planned (the size checks are the same).
constexpr std::size_t kMaxBufferBytes = 1 << 16;

class Input {
 public:
  Input(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  std::uint64_t take(int bytes) {
    std::uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v = (v << 8) | (pos_ < size_ ? data_[pos_++] : 0);
    return v;
  }
  // A count: mostly small, sometimes at or past the limits.
  std::uint64_t count() {
    switch (take(1) % 4) {
      case 0: return take(1);
      case 1: return take(2);
      case 2: return take(8);
      default: return (std::uint64_t{1} << 48) / (1 + take(1) % 8) + take(1) - 128;
    }
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

void require(bool ok) {
  if (!ok) std::abort();  // an oracle failed: libFuzzer records the input
}

void require_result(tpcoll_result_t r) {
  require(r == TPCOLL_SUCCESS || r == TPCOLL_INVALID_ARGUMENT);
  if (r != TPCOLL_SUCCESS) require(std::strlen(tpcoll_last_error()) > 0);
}

tpcoll_comm_t communicator() {
  static tpcoll_comm_t comm = [] {
    tpcoll_comm_config_t config{0, 1, TPCOLL_DEVICE_CPU, "fuzz", nullptr, nullptr};
    tpcoll_comm_t c = nullptr;
    if (tpcoll_comm_create(&config, &c) != TPCOLL_SUCCESS) std::abort();
    return c;
  }();
  return comm;
}

// A heap buffer of exactly `bytes` (ASan sees one byte past it) filled with
// a pattern; the input says whether the call gets it aligned, misaligned by
// one byte, or NULL.
struct Buffer {
  std::vector<std::uint8_t> storage;
  void* ptr = nullptr;
  Buffer(std::size_t bytes, std::uint64_t how, std::uint8_t fill) {
    const std::size_t shift = how % 8 == 1 ? 1 : 0;
    storage.assign(bytes + shift, fill);
    if (how % 8 != 0) ptr = storage.data() + shift;
  }
};

// Every value an enum of these enumerators can hold in C++ (0..15), the
// unknown ones included; a value outside that range is undefined behaviour
// in the caller already (UBSan reports the cast), so none is made.
tpcoll_dtype_t dtype_of(Input& in) { return static_cast<tpcoll_dtype_t>(in.take(1) % 16); }

std::size_t elem(tpcoll_dtype_t d) { return tpcoll_dtype_size(d); }

void fuzz_all_reduce(Input& in) {
  const auto dtype = dtype_of(in);
  const std::uint64_t count = in.count();
  const std::uint64_t how_in = in.take(1), how_out = in.take(1);
  const bool in_place = in.take(1) & 1;
  const std::size_t size = elem(dtype);
  const bool allocatable = size != 0 && count <= kMaxBufferBytes / size;
  if (!allocatable) {
    // Not allocatable: the same call with dummy pointers must be refused
    // when it is too large, and is otherwise only planned.
    alignas(8) static std::uint8_t dummy[8];
    if (size != 0 && count > (std::uint64_t{1} << 48) / size)
      require(tpcoll_all_reduce(communicator(), dummy, dummy, count, dtype, nullptr) == TPCOLL_INVALID_ARGUMENT);
    const std::int64_t shape[1] = {static_cast<std::int64_t>(count)};
    tpcoll_plan_info_t plan;
    require_result(tpcoll_plan(communicator(), TPCOLL_OP_ALL_REDUCE, dtype, 1, shape, 0, &plan));
    return;
  }
  Buffer a(count * size, how_in, 0x3c), b(count * size, how_out, 0xa5);
  void* out = in_place ? a.ptr : b.ptr;
  const std::vector<std::uint8_t> before(a.storage);
  const std::vector<std::uint8_t> out_before(b.storage);
  const tpcoll_result_t r = tpcoll_all_reduce(communicator(), a.ptr, out, count, dtype, nullptr);
  require_result(r);
  if (r == TPCOLL_SUCCESS)
    require(std::memcmp(out, before.data() + (static_cast<std::uint8_t*>(a.ptr) - a.storage.data()), count * size) == 0);
  else if (!in_place)
    require(b.storage == out_before);
}

void fuzz_all_gather(Input& in) {
  const auto dtype = dtype_of(in);
  const int ndim = static_cast<int>(in.take(1) % 12) - 1;
  const int dim = static_cast<int>(in.take(1) % 12) - 2;
  // Exactly TPCOLL_MAX_DIMS extents on the heap: reading past them is caught.
  std::vector<std::int64_t> shape(TPCOLL_MAX_DIMS);
  for (auto& e : shape) {
    e = static_cast<std::int64_t>(in.count());
    if ((in.take(1) & 7) == 0) e = ~e;  // negative (or zero) extents too
  }
  const std::uint64_t how_in = in.take(1), how_out = in.take(1);
  const std::size_t size = elem(dtype);
  // The byte count a valid call reads, if it is small enough to allocate.
  std::uint64_t bytes = size;
  bool small = size != 0 && ndim >= 1 && ndim <= TPCOLL_MAX_DIMS;
  for (int i = 0; small && i < ndim; ++i) {
    if (shape[i] <= 0) { small = false; break; }
    if (static_cast<std::uint64_t>(shape[i]) > kMaxBufferBytes || bytes * static_cast<std::uint64_t>(shape[i]) > kMaxBufferBytes) {
      small = false;
      break;
    }
    bytes *= static_cast<std::uint64_t>(shape[i]);
  }
  tpcoll_plan_info_t plan;
  const tpcoll_result_t planned = tpcoll_plan(communicator(), TPCOLL_OP_ALL_GATHER, dtype, ndim, shape.data(), dim, &plan);
  require_result(planned);
  if (!small) return;
  Buffer a(bytes, how_in, 0x11), b(bytes, how_out, 0x77);
  const std::vector<std::uint8_t> out_before(b.storage);
  const tpcoll_result_t r = tpcoll_all_gather(communicator(), a.ptr, b.ptr, dtype, ndim, shape.data(), dim, nullptr);
  require_result(r);
  if (r == TPCOLL_SUCCESS) {
    require(std::memcmp(a.ptr, b.ptr, bytes) == 0);
  } else {
    require(b.storage == out_before);
  }
}

// Reduce-scatter at one rank: the share is the whole input, so out may be in
// itself (in place), and any other overlap with it is refused.
void fuzz_reduce_scatter(Input& in) {
  const auto dtype = dtype_of(in);
  const std::uint64_t count = in.count();
  const std::uint64_t how_in = in.take(1), how_out = in.take(1);
  const std::uint64_t placement = in.take(1) % 4;  // apart, in place, out after in, in after out
  const std::uint64_t shift_choice = in.take(2);
  const std::size_t size = elem(dtype);
  if (size == 0 || count > kMaxBufferBytes / size) {
    // Too large, or a dtype that is none: refused before any pointer is used.
    alignas(8) static std::uint8_t dummy[8];
    if (size == 0 || count > (std::uint64_t{1} << 48) / size)
      require(tpcoll_reduce_scatter(communicator(), dummy, dummy, count, dtype, nullptr) == TPCOLL_INVALID_ARGUMENT);
    const std::int64_t shape[1] = {static_cast<std::int64_t>(count)};
    tpcoll_plan_info_t plan;
    require_result(tpcoll_plan(communicator(), TPCOLL_OP_REDUCE_SCATTER, dtype, 1, shape, 0, &plan));
    return;
  }
  const std::size_t bytes = count * size;
  if (placement == 0) {
    Buffer a(bytes, how_in, 0x3c), b(bytes, how_out, 0xa5);
    const std::vector<std::uint8_t> in_before(a.storage), out_before(b.storage);
    const tpcoll_result_t r = tpcoll_reduce_scatter(communicator(), a.ptr, b.ptr, count, dtype, nullptr);
    require_result(r);
    require(a.storage == in_before);
    if (r == TPCOLL_SUCCESS)
      require(std::memcmp(b.ptr, in_before.data() + (static_cast<std::uint8_t*>(a.ptr) - a.storage.data()), bytes) == 0);
    else
      require(b.storage == out_before);
    return;
  }
  // One block holds both: out at in + shift, or in at out + shift (shift 0:
  // in place; shift == bytes: adjacent, no overlap; else a partial overlap).
  const std::size_t shift = placement == 1 || bytes == 0 ? 0 : 1 + shift_choice % bytes;
  Buffer block(bytes + shift, how_in, 0x3c);
  std::uint8_t* base = static_cast<std::uint8_t*>(block.ptr);
  const void* src = base == nullptr ? nullptr : base + (placement == 3 ? shift : 0);
  void* dst = base == nullptr ? nullptr : base + (placement == 2 ? shift : 0);
  const std::vector<std::uint8_t> before(block.storage);
  const tpcoll_result_t r = tpcoll_reduce_scatter(communicator(), src, dst, count, dtype, nullptr);
  require_result(r);
  if (r == TPCOLL_SUCCESS) require(shift == 0 || shift == bytes);
  // Refused: nothing written; done: one rank's sum of 0x3c.. elements is 0x3c..
  require(block.storage == before);
}

enum class NormOp { kAddRmsnorm, kFused, kFusedReduceScatter, kFusedFp8 };

// The norm ops on zeros in every dtype (no NaN traps anything); the outputs
// start as a 0xa5 pattern, so that a write is seen. `alias` puts out on x
// (allowed for the fused ops), residual_out on residual (allowed), or out on
// x + shift bytes inside one block (the fused reduce-scatter refuses a
// partial overlap; the others are only memory-checked).
void fuzz_rmsnorm(Input& in, NormOp op) {
  const auto dtype = dtype_of(in);
  const std::uint64_t tokens = in.count(), hidden = in.count();
  const std::uint32_t eps_bits = static_cast<std::uint32_t>(in.take(4));
  float eps;
  std::memcpy(&eps, &eps_bits, sizeof eps);
  const std::uint64_t how[7] = {in.take(1), in.take(1), in.take(1), in.take(1), in.take(1), in.take(1), in.take(1)};
  const std::uint64_t alias = in.take(1) % 4;  // none, out = x, residual_out = residual, out = x + shift
  const std::uint64_t shift_choice = in.take(2);
  // FP8 only: scaling (both enumerators; another value would be undefined
  // behaviour here, see dtype_of), any float as the static scale.
  const auto scaling = static_cast<tpcoll_fp8_scaling_t>(in.take(1) & 1);
  const std::uint32_t scale_bits = static_cast<std::uint32_t>(in.take(4));
  float static_scale;
  std::memcpy(&static_scale, &scale_bits, sizeof static_scale);

  const std::size_t size = elem(dtype);
  const bool small = size != 0 && tokens <= kMaxBufferBytes && hidden <= kMaxBufferBytes &&
                     tokens * hidden <= kMaxBufferBytes / size;
  const auto call = [&](const void* x, const void* residual, const void* weight, void* out, void* residual_out,
                        void* out_fp8, float* row_scales) {
    switch (op) {
      case NormOp::kAddRmsnorm:
        return tpcoll_add_rmsnorm(communicator(), x, residual, weight, out, residual_out, tokens, hidden, dtype, eps,
                                  nullptr);
      case NormOp::kFused:
        return tpcoll_fused_allreduce_residual_rmsnorm(communicator(), x, residual, weight, out, residual_out, tokens,
                                                       hidden, dtype, eps, nullptr);
      case NormOp::kFusedReduceScatter:
        return tpcoll_fused_reduce_scatter_residual_rmsnorm(communicator(), x, residual, weight, out, residual_out,
                                                            tokens, hidden, dtype, eps, nullptr);
      case NormOp::kFusedFp8:
        break;
    }
    return tpcoll_fused_allreduce_residual_rmsnorm_fp8(communicator(), x, residual, weight, out, residual_out, out_fp8,
                                                       scaling, static_scale, row_scales, tokens, hidden, dtype, eps,
                                                       nullptr);
  };
  if (!small) {
    alignas(8) static std::uint8_t dummy[8];
    alignas(8) static float dummy_scales[2];
    // Too large, or a dtype that is none: refused before any pointer is used.
    if (size == 0 || (tokens != 0 && hidden != 0 &&
                      (tokens > (std::uint64_t{1} << 48) || tokens > (std::uint64_t{1} << 48) / hidden)))
      require(call(dummy, nullptr, dummy, dummy, nullptr, dummy, dummy_scales) == TPCOLL_INVALID_ARGUMENT);
    return;
  }
  const std::size_t row_bytes = hidden * size, bytes = tokens * row_bytes;
  const std::size_t shift = alias == 3 && bytes != 0 ? 1 + shift_choice % bytes : 0;
  Buffer x(bytes + shift, how[0], 0), residual(bytes, how[1], 0), weight(row_bytes, how[2], 0),
      out(bytes, how[3], 0xa5), residual_out(bytes, how[4], 0xa5), out_fp8(tokens * hidden, how[5], 0xa5),
      row_scales(tokens * sizeof(float), how[6], 0xa5);
  void* out_ptr = out.ptr;
  void* residual_out_ptr = residual_out.ptr;
  if (alias == 1) out_ptr = x.ptr;
  if (alias == 2) residual_out_ptr = residual.ptr;
  if (alias == 3) out_ptr = x.ptr == nullptr ? nullptr : static_cast<std::uint8_t*>(x.ptr) + shift;
  const std::vector<std::vector<std::uint8_t>> before = {x.storage, residual.storage, out.storage,
                                                         residual_out.storage, out_fp8.storage, row_scales.storage};
  const tpcoll_result_t r = call(x.ptr, residual.ptr, weight.ptr, out_ptr, residual_out_ptr, out_fp8.ptr,
                                 static_cast<float*>(row_scales.ptr));
  require_result(r);
  if (r != TPCOLL_SUCCESS) {
    const std::vector<std::vector<std::uint8_t>> after = {x.storage, residual.storage, out.storage,
                                                          residual_out.storage, out_fp8.storage, row_scales.storage};
    require(after == before);
    return;
  }
  require(eps >= 0.0f && std::isfinite(eps));
  if (op == NormOp::kFusedReduceScatter) require(shift == 0 || shift == bytes);
  if (op == NormOp::kFusedFp8) {
    require(out_fp8.ptr != nullptr);
    if (scaling == TPCOLL_FP8_STATIC) require(static_scale > 0.0f && std::isfinite(static_scale));
    else require(row_scales.ptr != nullptr && how[6] % 8 != 1);
  }
  // Zeros in, zeros out: s = 0, and 0 * rsqrt(eps) * 0 = +0 for a normal eps
  // (a subnormal one may be flushed, and 0 * inf is NaN).
  if (!std::isnormal(eps) || alias == 3) return;
  const auto all_zero = [](const void* p, std::size_t n) {
    const auto* b = static_cast<const std::uint8_t*>(p);
    return std::all_of(b, b + n, [](std::uint8_t v) { return v == 0; });
  };
  if (out_ptr != nullptr) require(all_zero(out_ptr, bytes));
  if (op == NormOp::kFusedFp8) {
    require(all_zero(out_fp8.ptr, tokens * hidden));
    if (scaling == TPCOLL_FP8_PER_TOKEN) require(all_zero(row_scales.ptr, tokens * sizeof(float)));
  }
}

void fuzz_small_calls(Input& in) {
  tpcoll_comm_t comm = communicator();
  switch (in.take(1) % 6) {
    case 0: {
      const int algo = static_cast<int>(in.take(1)) - 4;
      const tpcoll_result_t r = tpcoll_comm_force_algo(comm, algo);
      require(r == ((algo >= TPCOLL_ALGO_AUTO && algo <= TPCOLL_ALGO_FALLBACK) ? TPCOLL_SUCCESS
                                                                               : TPCOLL_INVALID_ARGUMENT));
      tpcoll_comm_force_algo(comm, TPCOLL_ALGO_AUTO);
      break;
    }
    case 1: {
      const auto op = static_cast<tpcoll_op_t>(in.take(1) % 8);  // the six ops and two that are none
      const auto dtype = dtype_of(in);
      const int ndim = static_cast<int>(in.take(1) % 12) - 1;
      std::vector<std::int64_t> shape(TPCOLL_MAX_DIMS);
      for (auto& e : shape) e = static_cast<std::int64_t>(in.take(8));
      tpcoll_plan_info_t plan;
      const bool null_shape = in.take(1) % 5 == 0, null_plan = in.take(1) % 5 == 0;
      const tpcoll_result_t r = tpcoll_plan(comm, op, dtype, ndim, null_shape ? nullptr : shape.data(),
                                            static_cast<int>(in.take(1) % 10) - 1, null_plan ? nullptr : &plan);
      require_result(r);
      if (r == TPCOLL_SUCCESS) require(std::memchr(plan.reason, '\0', sizeof plan.reason) != nullptr);
      break;
    }
    case 2:
      require(tpcoll_all_reduce(nullptr, nullptr, nullptr, in.take(2), TPCOLL_FLOAT32, nullptr) ==
              TPCOLL_INVALID_ARGUMENT);
      break;
    case 3: {
      tpcoll_result_t async = TPCOLL_INTERNAL_ERROR;
      require(tpcoll_comm_get_async_error(comm, &async) == TPCOLL_SUCCESS && async == TPCOLL_SUCCESS);
      require(tpcoll_comm_get_async_error(comm, nullptr) == TPCOLL_INVALID_ARGUMENT);
      break;
    }
    case 4: {
      const auto d = dtype_of(in);
      require(tpcoll_dtype_name(d) != nullptr);
      require(tpcoll_result_string(static_cast<tpcoll_result_t>(in.take(1) % 16)) != nullptr);
      break;
    }
    default: {
      // A stream on a CPU communicator is refused.
      float x = 1, y = 0;
      require(tpcoll_all_reduce(comm, &x, &y, 1, TPCOLL_FLOAT32, &x) == TPCOLL_INVALID_ARGUMENT && y == 0);
      break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Input in(data, size);
  switch (in.take(1) % 8) {
    case 0: fuzz_all_reduce(in); break;
    case 1: fuzz_all_gather(in); break;
    case 2: fuzz_rmsnorm(in, NormOp::kFused); break;
    case 3: fuzz_rmsnorm(in, NormOp::kAddRmsnorm); break;
    case 4: fuzz_reduce_scatter(in); break;
    case 5: fuzz_rmsnorm(in, NormOp::kFusedReduceScatter); break;
    case 6: fuzz_rmsnorm(in, NormOp::kFusedFp8); break;
    default: fuzz_small_calls(in); break;
  }
  return 0;
}
