#include "cpu/kernels.hpp"

#include "common/numerics.hpp"
#include "core/error.hpp"

#include <algorithm>
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

template <typename Fn>
void with_element(tpcoll_dtype_t dtype, Fn&& fn) {
  switch (dtype) {
    case TPCOLL_FLOAT32: return fn(Float32{});
    case TPCOLL_BFLOAT16: return fn(BFloat16{});
    case TPCOLL_FLOAT16: return fn(Float16{});
    default: fail(TPCOLL_INTERNAL_ERROR, "cpu kernel called with dtype {}", static_cast<int>(dtype));
  }
}

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

template <typename E>
float sum_of_squares(const typename E::Storage* s, std::size_t hidden) {
  float partial[nx::kNormPartials] = {};
  for (std::size_t begin = 0, group = 0; begin < hidden; begin += nx::kNormGroup, ++group) {
    float& acc = partial[group % nx::kNormPartials];
    const std::size_t end = std::min<std::size_t>(begin + nx::kNormGroup, hidden);
    for (std::size_t e = begin; e < end; ++e) {
      const float v = E::load(s[e]);
      acc = acc + v * v;
    }
  }
  for (int half = nx::kNormPartials / 2; half >= 1; half /= 2)
    for (int i = 0; i < half; ++i) partial[i] = partial[i] + partial[i + half];
  return partial[0];
}

template <typename E>
void add_rmsnorm_typed(const RmsNormRows& a) {
  using S = typename E::Storage;
  const auto* weight = static_cast<const S*>(a.weight);
  for (std::size_t row = 0; row < a.rows; ++row) {
    const std::size_t offset = row * a.hidden;
    const S* s = static_cast<const S*>(a.x) + offset;
    if (a.residual != nullptr) {
      const S* res = static_cast<const S*>(a.residual) + offset;
      S* res_out = static_cast<S*>(a.residual_out) + offset;
      for (std::size_t e = 0; e < a.hidden; ++e) res_out[e] = E::store(E::load(s[e]) + E::load(res[e]));
      s = res_out;
    }
    const float mean = sum_of_squares<E>(s, a.hidden) / static_cast<float>(a.hidden);
    const float inv_rms = 1.0f / std::sqrt(mean + a.eps);
    S* out = static_cast<S*>(a.out) + offset;
    for (std::size_t e = 0; e < a.hidden; ++e) out[e] = E::store((E::load(s[e]) * inv_rms) * E::load(weight[e]));
  }
}

}  // namespace

void reduce(tpcoll_dtype_t dtype, const void* const* srcs, int nsrcs, void* dst, std::size_t count) {
  with_element(dtype, [&](auto e) { reduce_typed<decltype(e)>(srcs, nsrcs, dst, count); });
}

void add_rmsnorm(tpcoll_dtype_t dtype, const RmsNormRows& rows) {
  with_element(dtype, [&](auto e) { add_rmsnorm_typed<decltype(e)>(rows); });
}

}  // namespace tpcoll::cpu
