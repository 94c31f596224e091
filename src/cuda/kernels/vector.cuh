// 16-byte vectors of fp32 / fp16 / bf16 widened to fp32 and narrowed back
// with the numeric contract of common/numerics.hpp.
#pragma once

#include "common/numerics.hpp"

#include <tpcoll/tpcoll.h>

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace tpcoll::cuda {

struct Float32 {
  using Storage = float;
  __device__ static float load(float v) { return v; }
  __device__ static float store(float f) { return f; }
};
struct BFloat16 {
  using Storage = std::uint16_t;
  __device__ static float load(std::uint16_t v) { return numerics::bf16_to_float(v); }
  __device__ static std::uint16_t store(float f) { return numerics::float_to_bf16(f); }
};
// The hardware conversions give numerics.hpp's bits (tests/gpu checks it),
// NaN aside, which is narrowed to the canonical 0x7fff as everywhere.
struct Float16 {
  using Storage = std::uint16_t;
  __device__ static float load(std::uint16_t v) { return __half2float(__ushort_as_half(v)); }
  __device__ static std::uint16_t store(float f) {
    return f != f ? std::uint16_t{0x7fff} : __half_as_ushort(__float2half_rn(f));
  }
};

// Calls f(E{}) with the element type of `dtype`, then returns the launch's
// error: the one dtype switch of the reducing kernels' launchers.
template <typename F>
cudaError_t with_element(tpcoll_dtype_t dtype, F&& f) {
  switch (dtype) {
    case TPCOLL_FLOAT32: f(Float32{}); break;
    case TPCOLL_FLOAT16: f(Float16{}); break;
    case TPCOLL_BFLOAT16: f(BFloat16{}); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

// Calls f(E{}) for every element type (to list every instantiation).
template <typename F>
void for_each_element(F&& f) {
  f(Float32{});
  f(Float16{});
  f(BFloat16{});
}

// kBytes elements' worth moved as one access: 16 bytes when the buffers
// are 16-byte aligned, else a single element.
template <typename E, int kBytes>
struct alignas(kBytes) Vec {
  static constexpr int kLanes = kBytes / static_cast<int>(sizeof(typename E::Storage));
  typename E::Storage lanes[kLanes];
};

// Reduces vector i of every rank's data in rank order 0..n-1, starting from
// rank 0's value, with one rounding at the end.
template <typename E, int kBytes, typename Source>
__device__ __forceinline__ Vec<E, kBytes> reduce_ranks(Source&& source, int world, std::size_t i) {
  constexpr int kLanes = Vec<E, kBytes>::kLanes;
  float acc[kLanes];
  const Vec<E, kBytes> first = source(0)[i];
#pragma unroll
  for (int l = 0; l < kLanes; ++l) acc[l] = E::load(first.lanes[l]);
  for (int r = 1; r < world; ++r) {
    const Vec<E, kBytes> v = source(r)[i];
#pragma unroll
    for (int l = 0; l < kLanes; ++l) acc[l] = __fadd_rn(acc[l], E::load(v.lanes[l]));
  }
  Vec<E, kBytes> out;
#pragma unroll
  for (int l = 0; l < kLanes; ++l) out.lanes[l] = E::store(acc[l]);
  return out;
}

}  // namespace tpcoll::cuda
