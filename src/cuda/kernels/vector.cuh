// 16-byte vectors of fp32 / fp16 / bf16 widened to fp32 and narrowed back
// with the numeric contract of common/numerics.hpp.
#pragma once

#include "common/numerics.hpp"

#include <tpcoll/tpcoll.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace tpcoll::cuda {

struct Float32 {
  using Storage = float;
  __device__ static float load(float v) { return v; }
  __device__ static float store(float f) { return f; }
};
// The bits of a pair of 16-bit values, low half first.
template <typename Pair>
__device__ __forceinline__ std::uint32_t pair_bits(const Pair& pair) {
  static_assert(sizeof(Pair) == sizeof(std::uint32_t));
  std::uint32_t bits;
  memcpy(&bits, &pair, sizeof bits);
  return bits;
}

// The 16-bit types narrow with the hardware's conversions (cvt.rn), which
// give numerics.hpp's bits, NaN included (the canonical 0x7fff): tests/gpu
// checks both. store_pair narrows two floats in one instruction, `lo` into
// the low half.
struct BFloat16 {
  using Storage = std::uint16_t;
  __device__ static float load(std::uint16_t v) { return numerics::bf16_to_float(v); }
  __device__ static std::uint16_t store(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }
  __device__ static std::uint32_t store_pair(float lo, float hi) { return pair_bits(__floats2bfloat162_rn(lo, hi)); }
};
struct Float16 {
  using Storage = std::uint16_t;
  __device__ static float load(std::uint16_t v) { return __half2float(__ushort_as_half(v)); }
  __device__ static std::uint16_t store(float f) { return __half_as_ushort(__float2half_rn(f)); }
  __device__ static std::uint32_t store_pair(float lo, float hi) { return pair_bits(__floats2half2_rn(lo, hi)); }
};

// Narrows kLanes floats to the element type, two at a time where it has
// store_pair.
template <typename E, int kLanes>
__device__ __forceinline__ void narrow(const float (&f)[kLanes], typename E::Storage (&out)[kLanes]) {
  if constexpr (sizeof(typename E::Storage) == 2 && kLanes % 2 == 0) {
#pragma unroll
    for (int l = 0; l < kLanes; l += 2) {
      const std::uint32_t pair = E::store_pair(f[l], f[l + 1]);
      memcpy(&out[l], &pair, sizeof pair);
    }
  } else {
#pragma unroll
    for (int l = 0; l < kLanes; ++l) out[l] = E::store(f[l]);
  }
}

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
  narrow<E>(acc, out.lanes);
  return out;
}

}  // namespace tpcoll::cuda
