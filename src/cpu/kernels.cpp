#include "cpu/kernels.hpp"

#include "common/numerics.hpp"
#include "core/error.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>

namespace tpcoll::cpu {
namespace {

namespace nx = tpcoll::numerics;

struct Float32 {
  using Storage = float;
  static float load(float v) { return v; }
  static float store(float f) { return f; }
};
struct BFloat16 {
  using Storage = std::uint16_t;
  static float load(std::uint16_t v) { return nx::bf16_to_float(v); }
  static std::uint16_t store(float f) { return nx::float_to_bf16(f); }
};
struct Float16 {
  using Storage = std::uint16_t;
  static float load(std::uint16_t v) { return nx::fp16_to_float(v); }
  static std::uint16_t store(float f) { return nx::float_to_fp16(f); }
};

// Fixed-size blocks let the compiler vectorise the widening, the adds and
// the narrowing; the tail runs the same code with a shorter trip count.
template <typename E, std::size_t kBlock>
inline void reduce_block(const void* const* srcs, int n, typename E::Storage* dst, std::size_t i, std::size_t m) {
  using S = typename E::Storage;
  float acc[kBlock];
  const S* first = static_cast<const S*>(srcs[0]) + i;
  for (std::size_t j = 0; j < m; ++j) acc[j] = E::load(first[j]);
  for (int r = 1; r < n; ++r) {
    const S* src = static_cast<const S*>(srcs[r]) + i;
    for (std::size_t j = 0; j < m; ++j) acc[j] += E::load(src[j]);
  }
  for (std::size_t j = 0; j < m; ++j) dst[i + j] = E::store(acc[j]);
}

template <typename E>
void reduce_typed(const void* const* srcs, int n, void* dst_v, std::size_t count) {
  constexpr std::size_t kBlock = 64;
  auto* dst = static_cast<typename E::Storage*>(dst_v);
  std::size_t i = 0;
  for (; i + kBlock <= count; i += kBlock) reduce_block<E, kBlock>(srcs, n, dst, i, kBlock);
  if (i < count) reduce_block<E, kBlock>(srcs, n, dst, i, count - i);
}

// The canonical order of numerics.hpp: element e goes to partial
// (e / kNormGroup) % kNormPartials. Squares are formed a block of
// kNormPartials groups at a time (a vectorisable loop), then each partial
// adds its group's squares in element order; the tail continues the same
// assignment (a block boundary is group 0 again).
template <typename E>
float sum_of_squares(const typename E::Storage* s, std::size_t hidden) {
  constexpr std::size_t kPartials = nx::kNormPartials;
  constexpr std::size_t kGroup = nx::kNormGroup;
  constexpr std::size_t kBlock = kPartials * kGroup;
  float partial[kPartials] = {};
  float squares[kBlock];
  for (std::size_t base = 0; base < hidden; base += kBlock) {
    const std::size_t n = std::min(kBlock, hidden - base);
    for (std::size_t e = 0; e < n; ++e) {
      const float v = E::load(s[base + e]);
      squares[e] = v * v;
    }
    for (std::size_t e = 0; e < n; ++e) partial[e / kGroup] = partial[e / kGroup] + squares[e];
  }
  for (std::size_t half = kPartials / 2; half >= 1; half /= 2)
    for (std::size_t i = 0; i < half; ++i) partial[i] = partial[i] + partial[i + half];
  return partial[0];
}

// One row: s = x + residual (rounded) -> residual_out; out = s * inv_rms * w.
// Aliasing residual_out == residual and out == x is allowed (element-wise).
template <typename E>
void add_rmsnorm_row(const typename E::Storage* x, const typename E::Storage* residual,
                     const typename E::Storage* weight, typename E::Storage* out, typename E::Storage* residual_out,
                     std::size_t hidden, float eps) {
  const typename E::Storage* s = x;
  if (residual != nullptr) {
    for (std::size_t e = 0; e < hidden; ++e) residual_out[e] = E::store(E::load(x[e]) + E::load(residual[e]));
    s = residual_out;
  }
  const float mean = sum_of_squares<E>(s, hidden) / static_cast<float>(hidden);
  const float inv_rms = 1.0f / std::sqrt(mean + eps);
  for (std::size_t e = 0; e < hidden; ++e) out[e] = E::store((E::load(s[e]) * inv_rms) * E::load(weight[e]));
}

template <typename E>
void add_rmsnorm_typed(const RmsNormRows& a) {
  using S = typename E::Storage;
  for (std::size_t row = 0; row < a.rows; ++row) {
    const std::size_t offset = row * a.hidden;
    add_rmsnorm_row<E>(static_cast<const S*>(a.x) + offset,
                       a.residual ? static_cast<const S*>(a.residual) + offset : nullptr, static_cast<const S*>(a.weight),
                       static_cast<S*>(a.out) + offset, a.residual ? static_cast<S*>(a.residual_out) + offset : nullptr,
                       a.hidden, a.eps);
  }
}

template <typename E>
void quantise_fp8_typed(const void* out, std::size_t rows, std::size_t hidden, const fp8::Fp8Output& fp8) {
  const auto* in = static_cast<const typename E::Storage*>(out);
  auto* codes = static_cast<std::uint8_t*>(fp8.out_fp8);
  for (std::size_t row = 0; row < rows; ++row) {
    const auto* v = in + row * hidden;
    float scale = fp8.static_scale;
    if (fp8.scaling == TPCOLL_FP8_PER_TOKEN) {
      // The largest |v| as the largest magnitude's bits (their integer order
      // is the values' order): a plain integer max, which vectorises where a
      // float one (NaN rules) does not. A row holding NaN (bits above
      // infinity's) takes a second pass that leaves NaN out, as fmax does.
      const auto magnitude = [&](std::size_t e) { return nx::float_bits(E::load(v[e])) & 0x7fffffffu; };
      std::uint32_t max_bits = 0;
      for (std::size_t e = 0; e < hidden; ++e) max_bits = std::max(max_bits, magnitude(e));
      if (max_bits > 0x7f800000u) {
        max_bits = 0;
        for (std::size_t e = 0; e < hidden; ++e)
          if (magnitude(e) <= 0x7f800000u) max_bits = std::max(max_bits, magnitude(e));
      }
      scale = fp8::per_token_scale(std::bit_cast<float>(max_bits));
      fp8.row_scales[row] = scale;
    }
    const float divisor = fp8::divisor_of(scale);
    for (std::size_t e = 0; e < hidden; ++e) codes[row * hidden + e] = fp8::quantise(E::load(v[e]), divisor);
  }
}

// Entry points per element type, each built twice (AVX2 and baseline x86-64)
// and picked at load time by the CPU's features; `flatten` inlines the
// templates into each clone so the whole loop gets the wider vectors. This
// and the F16C loop below are GCC's; a clang build (the fuzz targets) takes
// the portable loops.
#if defined(__x86_64__) && !defined(__clang__)
#define TPCOLL_CPU_KERNEL __attribute__((target_clones("avx2", "default"), flatten))
#else
#define TPCOLL_CPU_KERNEL
#endif

TPCOLL_CPU_KERNEL void reduce_f32(const void* const* s, int n, void* d, std::size_t c) { reduce_typed<Float32>(s, n, d, c); }
TPCOLL_CPU_KERNEL void reduce_bf16(const void* const* s, int n, void* d, std::size_t c) { reduce_typed<BFloat16>(s, n, d, c); }
TPCOLL_CPU_KERNEL void reduce_f16(const void* const* s, int n, void* d, std::size_t c) { reduce_typed<Float16>(s, n, d, c); }
TPCOLL_CPU_KERNEL void add_rmsnorm_f32(const RmsNormRows& rows) { add_rmsnorm_typed<Float32>(rows); }
TPCOLL_CPU_KERNEL void add_rmsnorm_bf16(const RmsNormRows& rows) { add_rmsnorm_typed<BFloat16>(rows); }
TPCOLL_CPU_KERNEL void add_rmsnorm_f16(const RmsNormRows& rows) { add_rmsnorm_typed<Float16>(rows); }
TPCOLL_CPU_KERNEL void quantise_f32(const void* o, std::size_t r, std::size_t h, const fp8::Fp8Output& f) {
  quantise_fp8_typed<Float32>(o, r, h, f);
}
TPCOLL_CPU_KERNEL void quantise_bf16(const void* o, std::size_t r, std::size_t h, const fp8::Fp8Output& f) {
  quantise_fp8_typed<BFloat16>(o, r, h, f);
}
TPCOLL_CPU_KERNEL void quantise_f16(const void* o, std::size_t r, std::size_t h, const fp8::Fp8Output& f) {
  quantise_fp8_typed<Float16>(o, r, h, f);
}

#undef TPCOLL_CPU_KERNEL

#if defined(__x86_64__) && !defined(__clang__)
// float16 sums with the F16C conversion instructions, where the CPU has them:
// GCC does not vectorise _Float16 conversions, so this one loop is written
// with intrinsics. vcvtps2ph rounds to nearest even like float_to_fp16 (the
// two agree on all 2^32 floats, NaN aside); NaN lanes get our canonical 0x7fff.
__attribute__((target("avx2,f16c"))) void reduce_f16c(const void* const* srcs, int n, void* dst_v,
                                                      std::size_t count) {
  auto* dst = static_cast<std::uint16_t*>(dst_v);
  const __m128i canonical_nan = _mm_set1_epi16(0x7fff);
  std::size_t i = 0;
  for (; i + 8 <= count; i += 8) {
    // (No lambda: it would not inherit this function's target.)
    __m256 acc = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const std::uint16_t*>(srcs[0]) + i)));
    for (int r = 1; r < n; ++r)
      acc = _mm256_add_ps(acc, _mm256_cvtph_ps(_mm_loadu_si128(
                                   reinterpret_cast<const __m128i*>(static_cast<const std::uint16_t*>(srcs[r]) + i))));
    const __m256i nan32 = _mm256_castps_si256(_mm256_cmp_ps(acc, acc, _CMP_UNORD_Q));
    const __m128i nan16 = _mm_packs_epi32(_mm256_castsi256_si128(nan32), _mm256_extracti128_si256(nan32, 1));
    const __m128i half = _mm256_cvtps_ph(acc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm_blendv_epi8(half, canonical_nan, nan16));
  }
  if (i == count) return;
  std::array<const void*, TPCOLL_MAX_RANKS> tail;
  for (int r = 0; r < n; ++r) tail[r] = static_cast<const std::uint16_t*>(srcs[r]) + i;
  reduce_f16(tail.data(), n, dst + i, count - i);
}
const bool kHasF16C = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
#else
constexpr bool kHasF16C = false;
void reduce_f16c(const void* const* s, int n, void* d, std::size_t c) { reduce_f16(s, n, d, c); }
#endif

[[noreturn]] void unsupported(tpcoll_dtype_t dtype) {
  fail(TPCOLL_INTERNAL_ERROR, "cpu kernel called with dtype {}", static_cast<int>(dtype));
}

}  // namespace

void reduce(tpcoll_dtype_t dtype, const void* const* srcs, int nsrcs, void* dst, std::size_t count) {
  switch (dtype) {
    case TPCOLL_FLOAT32: return reduce_f32(srcs, nsrcs, dst, count);
    case TPCOLL_BFLOAT16: return reduce_bf16(srcs, nsrcs, dst, count);
    case TPCOLL_FLOAT16: return kHasF16C ? reduce_f16c(srcs, nsrcs, dst, count) : reduce_f16(srcs, nsrcs, dst, count);
    default: unsupported(dtype);
  }
}

void add_rmsnorm(tpcoll_dtype_t dtype, const RmsNormRows& rows) {
  switch (dtype) {
    case TPCOLL_FLOAT32: return add_rmsnorm_f32(rows);
    case TPCOLL_BFLOAT16: return add_rmsnorm_bf16(rows);
    case TPCOLL_FLOAT16: return add_rmsnorm_f16(rows);
    default: unsupported(dtype);
  }
}

void quantise_fp8(tpcoll_dtype_t dtype, const void* out, std::size_t rows, std::size_t hidden,
                  const fp8::Fp8Output& fp8) {
  switch (dtype) {
    case TPCOLL_FLOAT32: return quantise_f32(out, rows, hidden, fp8);
    case TPCOLL_BFLOAT16: return quantise_bf16(out, rows, hidden, fp8);
    case TPCOLL_FLOAT16: return quantise_f16(out, rows, hidden, fp8);
    default: unsupported(dtype);
  }
}

}  // namespace tpcoll::cpu
