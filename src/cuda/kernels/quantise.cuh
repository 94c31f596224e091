// The FP8 quantisation of the fused op's out rows (common/fp8_quantise.hpp)
// as a kernel of its own, for the fused two-shot, which has no epilogue: one
// block per row, element by element (any hidden size and alignment).
#pragma once

#include "common/fp8_quantise.hpp"
#include "cuda/kernels/fp8_epilogue.cuh"
#include "cuda/launch.hpp"
#include "cuda/kernels/sync.cuh"
#include "cuda/kernels/vector.cuh"

#include <cstddef>

namespace tpcoll::cuda {

inline constexpr int kQuantiseThreads = 256;

template <typename E>
__global__ void __launch_bounds__(kQuantiseThreads) quantise_fp8_kernel(const QuantiseRows a) {
  using S = typename E::Storage;
  __shared__ float warp_maxima[kQuantiseThreads / 32];
  wait_for_previous_kernel();  // out is the output of the kernel before us
  allow_next_kernel();         // as in the add + RMSNorm kernels
  const std::size_t offset = static_cast<std::size_t>(blockIdx.x) * a.hidden;
  const S* row = static_cast<const S*>(a.out) + offset;
  auto* codes = static_cast<std::uint8_t*>(a.fp8.out_fp8) + offset;
  float max_abs = 0.0f;
  if (a.fp8.scaling == TPCOLL_FP8_PER_TOKEN)
    for (std::size_t e = threadIdx.x; e < a.hidden; e += blockDim.x) max_abs = fmaxf(max_abs, fabsf(E::load(row[e])));
  const fp8::RowDivisor divisor = row_divisor(a.fp8, blockIdx.x, max_abs, warp_maxima);
  for (std::size_t e = threadIdx.x; e < a.hidden; e += blockDim.x) codes[e] = fp8::quantise(E::load(row[e]), divisor);
}

}  // namespace tpcoll::cuda
