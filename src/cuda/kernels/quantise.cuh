// The FP8 quantisation of the fused op's out rows (common/fp8_quantise.hpp):
// one block per row, element by element (any hidden size and alignment).
// Per-token scaling takes the row's max |out| with one block reduction; max
// is exact in any order, so the scale is the CPU's bit for bit.
#pragma once

#include "common/fp8_quantise.hpp"
#include "cuda/launch.hpp"
#include "cuda/kernels/sync.cuh"
#include "cuda/kernels/vector.cuh"

#include <cstddef>

namespace tpcoll::cuda {

inline constexpr int kQuantiseThreads = 256;

// The largest of every thread's `value`, on every thread: a warp's shuffles,
// one barrier, then every warp reads the warps' maxima. Not NaN-propagating
// (fmaxf), as the rule wants.
__device__ __forceinline__ float block_max(float value, float* warp_maxima) {
  for (int half = 16; half >= 1; half /= 2) value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, half));
  if (threadIdx.x % 32 == 0) warp_maxima[threadIdx.x / 32] = value;
  __syncthreads();
  float all = warp_maxima[0];
  for (unsigned w = 1; w < blockDim.x / 32; ++w) all = fmaxf(all, warp_maxima[w]);
  return all;
}

template <typename E>
__global__ void __launch_bounds__(kQuantiseThreads) quantise_fp8_kernel(const QuantiseRows a) {
  using S = typename E::Storage;
  __shared__ float warp_maxima[kQuantiseThreads / 32];
  wait_for_previous_kernel();  // out is the output of the kernel before us
  allow_next_kernel();         // as in the add + RMSNorm kernels
  const std::size_t offset = static_cast<std::size_t>(blockIdx.x) * a.hidden;
  const S* row = static_cast<const S*>(a.out) + offset;
  auto* codes = static_cast<std::uint8_t*>(a.fp8.out_fp8) + offset;
  float scale = a.fp8.static_scale;
  if (a.fp8.scaling == TPCOLL_FP8_PER_TOKEN) {
    float max_abs = 0.0f;
    for (std::size_t e = threadIdx.x; e < a.hidden; e += blockDim.x) max_abs = fmaxf(max_abs, fabsf(E::load(row[e])));
    scale = fp8::per_token_scale(block_max(max_abs, warp_maxima));
    if (threadIdx.x == 0) a.fp8.row_scales[blockIdx.x] = scale;
  }
  const float divisor = fp8::divisor_of(scale);
  for (std::size_t e = threadIdx.x; e < a.hidden; e += blockDim.x) codes[e] = fp8::quantise(E::load(row[e]), divisor);
}

}  // namespace tpcoll::cuda
