// Deterministic inputs: element i of rank r is a pure function of (seed, r, i),
// so any rank can recompute every rank's input for the reference checks.
#pragma once

#include "common/numerics.hpp"

#include <tpcoll/tpcoll.hpp>

#include <cstdint>
#include <cstring>
#include <stdexcept>

namespace tpcoll::bench {

inline std::uint64_t mix(std::uint64_t x) {  // splitmix64
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

inline std::uint64_t sample_bits(std::uint64_t seed, int rank, std::size_t i) {
  return mix(seed ^ (static_cast<std::uint64_t>(rank) << 48) ^ mix(i));
}

// Uniform in [-1, 1).
inline float sample_float(std::uint64_t seed, int rank, std::size_t i) {
  return static_cast<float>(sample_bits(seed, rank, i) >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

// Element i of a float32/float16/bfloat16 buffer, widened.
inline float load_float(DType dtype, const void* p, std::size_t i) {
  switch (dtype) {
    case DType::kFloat32: return static_cast<const float*>(p)[i];
    case DType::kFloat16: return numerics::fp16_to_float(static_cast<const std::uint16_t*>(p)[i]);
    case DType::kBFloat16: return numerics::bf16_to_float(static_cast<const std::uint16_t*>(p)[i]);
    default: throw std::invalid_argument("load_float: not a float dtype");
  }
}

inline void store_float(DType dtype, void* p, std::size_t i, float v) {
  switch (dtype) {
    case DType::kFloat32: static_cast<float*>(p)[i] = v; return;
    case DType::kFloat16: static_cast<std::uint16_t*>(p)[i] = numerics::float_to_fp16(v); return;
    case DType::kBFloat16: static_cast<std::uint16_t*>(p)[i] = numerics::float_to_bf16(v); return;
    default: throw std::invalid_argument("store_float: not a float dtype");
  }
}

// What rank `rank` holds at element i once its sample is rounded to dtype.
inline float rounded_sample(DType dtype, std::uint64_t seed, int rank, std::size_t i) {
  std::uint64_t storage = 0;
  store_float(dtype, &storage, 0, sample_float(seed, rank, i));
  return load_float(dtype, &storage, 0);
}

inline void fill_floats(DType dtype, void* p, std::size_t count, std::uint64_t seed, int rank) {
  for (std::size_t i = 0; i < count; ++i) store_float(dtype, p, i, sample_float(seed, rank, i));
}

inline std::uint8_t sample_byte(std::uint64_t seed, int rank, std::size_t i) {
  return static_cast<std::uint8_t>(sample_bits(seed, rank, i));
}

// Relative precision of a dtype: half its ulp at 1.0.
inline double unit_roundoff(DType dtype) {
  switch (dtype) {
    case DType::kFloat16: return 1.0 / 2048;
    case DType::kBFloat16: return 1.0 / 256;
    default: return 1.0 / 16777216;
  }
}

inline std::uint64_t fnv1a(const void* p, std::size_t n) {
  std::uint64_t h = 1469598103934665603ull;
  for (std::size_t i = 0; i < n; ++i) h = (h ^ static_cast<const std::uint8_t*>(p)[i]) * 1099511628211ull;
  return h;
}

}  // namespace tpcoll::bench
