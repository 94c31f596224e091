// Add + RMSNorm on the GPU with the numeric contract of common/numerics.hpp:
// s = x + residual rounded to the storage type, the sum of squares of s in
// 256 partials of 8-element groups (partial p owns groups p, p + 256, ...,
// in element order) combined by a halving tree, then
// out = (s * (1 / sqrt(mean + eps))) * weight, every step rounded as on the
// CPU (no FMA, correctly rounded division and square root).
#pragma once

#include "common/numerics.hpp"
#include "cuda/kernels/fp8_epilogue.cuh"
#include "cuda/kernels/row_limits.hpp"
#include "cuda/kernels/sync.cuh"
#include "cuda/kernels/vector.cuh"

#include <cstddef>
#include <type_traits>

namespace tpcoll::cuda {


inline constexpr int kNormWarps = 4;  // rows per block of the add + RMSNorm kernel

constexpr int kPartials = numerics::kNormPartials;
constexpr int kPartialsPerLane = kPartials / 32;

// The contract's halving tree over the 256 partials, held by a warp as lane
// l: partials l, l + 32, ...: the levels with half >= 32 pair partials of one
// lane, the rest go through shuffles. The total is valid in lane 0.
__device__ __forceinline__ float warp_tree(float (&partial)[kPartialsPerLane]) {
#pragma unroll
  for (int half = kPartialsPerLane / 2; half >= 1; half /= 2)
#pragma unroll
    for (int k = 0; k < half; ++k) partial[k] = __fadd_rn(partial[k], partial[k + half]);
  float total = partial[0];
  for (int half = 16; half >= 1; half /= 2) total = __fadd_rn(total, __shfl_down_sync(0xffffffffu, total, half));
  return total;
}

// The contract's sum of squares of `s[0, hidden)` (any hidden, element-wise
// loads), on every lane of the warp: lane l forms partials l, l + 32, ...,
// whose first tree levels (half >= 32) pair partials of the same lane.
template <typename E>
__device__ __forceinline__ float warp_sum_of_squares(const typename E::Storage* s, std::size_t hidden) {
  constexpr int kGroup = numerics::kNormGroup;
  const unsigned lane = threadIdx.x % 32;
  float partial[kPartialsPerLane];
#pragma unroll
  for (int k = 0; k < kPartialsPerLane; ++k) {
    partial[k] = 0.0f;
    for (std::size_t first = (lane + 32 * k) * kGroup; first < hidden; first += kPartials * kGroup)
      for (std::size_t e = first; e < first + kGroup && e < hidden; ++e) {
        const float v = E::load(s[e]);
        partial[k] = __fadd_rn(partial[k], __fmul_rn(v, v));
      }
  }
  return __shfl_sync(0xffffffffu, warp_tree(partial), 0);
}

// 1 / sqrt(mean(s^2) + eps), rounded as the CPU rounds it.
__device__ __forceinline__ float inverse_rms(float sum_of_squares, std::size_t hidden, float eps) {
  const float mean = __fdiv_rn(sum_of_squares, static_cast<float>(hidden));
  return __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(mean, eps)));
}

// out[e] = (s[e] * inv) * weight[e] for this lane's elements of the row.
template <typename E>
__device__ __forceinline__ float normalized(typename E::Storage s, float inv, typename E::Storage w) {
  return __fmul_rn(__fmul_rn(E::load(s), inv), E::load(w));
}

// The contract's 8-element group, moved with 16-byte accesses (the row and
// every buffer 16-byte aligned).
template <typename E>
struct alignas(16) Group {
  typename E::Storage v[numerics::kNormGroup];
};

// A group of floats narrowed to the element type.
template <typename E>
__device__ __forceinline__ Group<E> narrowed(const float (&f)[numerics::kNormGroup]) {
  Group<E> g;
  narrow<E>(f, g.v);
  return g;
}

// The rounded element-wise sum s = a + b (x + residual, as the contract adds).
template <typename E>
__device__ __forceinline__ Group<E> added(const Group<E>& a, const Group<E>& b) {
  float s[numerics::kNormGroup];
#pragma unroll
  for (int e = 0; e < numerics::kNormGroup; ++e) s[e] = __fadd_rn(E::load(a.v[e]), E::load(b.v[e]));
  return narrowed<E>(s);
}

// A group's output: (s * inv) * weight, element by element.
template <typename E>
__device__ __forceinline__ Group<E> normalized_group(const Group<E>& s, float inv, const Group<E>& weight) {
  float o[numerics::kNormGroup];
#pragma unroll
  for (int e = 0; e < numerics::kNormGroup; ++e) o[e] = normalized<E>(s.v[e], inv, weight.v[e]);
  return narrowed<E>(o);
}


// The contract's sum of squares of a row of `groups` groups held in shared
// memory, by the whole block: thread t forms partials t, t + blockDim, ...;
// warp 0 then reads them as warp_sum_of_squares holds them (lane l: partials
// l, l + 32, ...) and runs the tree in registers and shuffles. Valid in
// thread 0; starts with a barrier and needs one after.
template <typename E>
__device__ __forceinline__ float block_sum_of_squares(const Group<E>* s, std::size_t groups, float* partials) {
  __syncthreads();
  for (unsigned p = threadIdx.x; p < kPartials; p += blockDim.x) {
    float acc = 0.0f;
    for (std::size_t g = p; g < groups; g += kPartials) {
      const Group<E> v = s[g];
#pragma unroll
      for (int e = 0; e < numerics::kNormGroup; ++e) {
        const float f = E::load(v.v[e]);
        acc = __fadd_rn(acc, __fmul_rn(f, f));
      }
    }
    partials[p] = acc;
  }
  __syncthreads();
  float total = 0.0f;
  if (threadIdx.x < 32) {
    float partial[kPartialsPerLane];
#pragma unroll
    for (int k = 0; k < kPartialsPerLane; ++k) partial[k] = partials[threadIdx.x + 32 * k];
    total = warp_tree(partial);
  }
  return total;
}

// Rows held in registers (row_limits.hpp): in a block of kHeldThreads =
// kPartials threads, thread t holds groups t, t + kPartials, ... of a row:
// exactly the groups of the contract's partial t, in its order, so each
// thread forms its partial from its own registers and the row never goes
// through shared memory.

// Whether this thread holds group k of a row of `groups` groups.
__device__ __forceinline__ bool holds(std::size_t groups, int k) { return threadIdx.x + k * kHeldThreads < groups; }

__device__ __forceinline__ std::size_t held_group(int k) { return threadIdx.x + k * kHeldThreads; }

// This thread's partial of the contract: its groups' squares in element order.
template <typename E, int kPerThread>
__device__ __forceinline__ float held_partial(const Group<E> (&s)[kPerThread], std::size_t groups) {
  float acc = 0.0f;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    if (!holds(groups, k)) break;
#pragma unroll
    for (int e = 0; e < numerics::kNormGroup; ++e) {
      const float f = E::load(s[k].v[e]);
      acc = __fadd_rn(acc, __fmul_rn(f, f));
    }
  }
  return acc;
}

// The inverse RMS of the row whose partial each thread passes, on every
// thread: one barrier, then every warp runs the contract's tree over the
// partials (redundantly, which costs less than a second barrier).
// `partials` must not be written again before every thread has returned
// (a kernel looping over rows alternates two arrays).
__device__ __forceinline__ float block_inverse_rms(float partial, float* partials, std::size_t hidden, float eps) {
  partials[threadIdx.x] = partial;
  __syncthreads();
  float lane_partials[kPartialsPerLane];
#pragma unroll
  for (int k = 0; k < kPartialsPerLane; ++k) lane_partials[k] = partials[threadIdx.x % 32 + 32 * k];
  const float total = __shfl_sync(0xffffffffu, warp_tree(lane_partials), 0);
  return inverse_rms(total, hidden, eps);
}

// The FP8 epilogue of a held row (fp8_epilogue.cuh): this thread's output
// groups `o` of row `row`, its codes stored as 8-byte groups (out_fp8 8-byte
// aligned, hidden % 8 == 0). Per token, the row's maximum takes one more
// barrier; the outputs never leave the registers.
template <typename E, int kPerThread>
__device__ __forceinline__ void quantise_held_row(const Group<E> (&o)[kPerThread], std::size_t groups, std::size_t row,
                                                  const fp8::Fp8Output& fp8, float* warp_maxima) {
  float max_abs = 0.0f;
  if (fp8.scaling == TPCOLL_FP8_PER_TOKEN) {
#pragma unroll
    for (int k = 0; k < kPerThread; ++k)
      if (holds(groups, k)) max_abs = group_max_abs<E>(o[k].v, max_abs);
  }
  const fp8::RowDivisor divisor = row_divisor(fp8, row, max_abs, warp_maxima);
  uint2* codes = static_cast<uint2*>(fp8.out_fp8) + row * groups;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k)
    if (holds(groups, k)) codes[held_group(k)] = quantised_group<E>(o[k].v, divisor);
}

// One block of kHeldThreads threads per row, the row in registers: load x
// and residual, add (writing residual_out), form the partial, get the
// inverse RMS, write out. kWeightFirst loads the weight with x and residual:
// one memory latency instead of two, for launches of one wave, which latency
// bounds; else it loads while the inverse RMS forms, costing no registers
// while x and residual do, so that more blocks stream rows at once. Needs
// hidden % 8 == 0, at most kPerThread * kHeldThreads groups and 16-byte
// aligned buffers. out may alias x and residual_out residual: each thread
// reads its groups before it writes them. kFp8 adds the FP8 epilogue (out
// then optional).
template <typename E, int kPerThread, bool kWeightFirst, bool kFp8 = false>
__global__ void __launch_bounds__(kHeldThreads) add_rmsnorm_held_kernel(const RmsNormRows a) {
  using G = Group<E>;
  __shared__ float partials[kPartials];
  wait_for_previous_kernel();  // x may be the output of the all-reduce before us
  const std::size_t groups = a.hidden / numerics::kNormGroup, offset = blockIdx.x * groups;
  const G* x = static_cast<const G*>(a.x) + offset;
  const auto load_weight = [&](G (&w)[kPerThread]) {
#pragma unroll
    for (int k = 0; k < kPerThread; ++k)
      if (holds(groups, k)) w[k] = static_cast<const G*>(a.weight)[held_group(k)];
  };
  G s[kPerThread], w[kPerThread];
  if constexpr (kWeightFirst) load_weight(w);
#pragma unroll
  for (int k = 0; k < kPerThread; ++k)
    if (holds(groups, k)) s[k] = x[held_group(k)];
  if (a.residual != nullptr) {
    const G* residual = static_cast<const G*>(a.residual) + offset;
    G r[kPerThread];
#pragma unroll
    for (int k = 0; k < kPerThread; ++k)
      if (holds(groups, k)) r[k] = residual[held_group(k)];
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) {
      if (!holds(groups, k)) break;
      s[k] = added<E>(s[k], r[k]);
      static_cast<G*>(a.residual_out)[offset + held_group(k)] = s[k];
    }
  }
  if constexpr (!kWeightFirst) load_weight(w);
  const float inv = block_inverse_rms(held_partial<E>(s, groups), partials, a.hidden, a.eps);
  G* out = static_cast<G*>(a.out) + offset;
  G o[kPerThread];
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    if (!holds(groups, k)) break;
    o[k] = normalized_group<E>(s[k], inv, w[k]);
    if (!kFp8 || a.out != nullptr) out[held_group(k)] = o[k];
  }
  if constexpr (kFp8) {
    __shared__ float warp_maxima[kHeldThreads / 32];
    quantise_held_row<E, kPerThread>(o, groups, blockIdx.x, a.fp8, warp_maxima);
  }
  allow_next_kernel();
}

// Calls f(std::integral_constant<int, K>{}) with K = held_groups_per_thread
// (row_limits.hpp); the caller checks hidden <= kMaxHeldHidden.
template <typename F>
void with_groups_per_thread(std::size_t hidden, F&& f) {
  switch (held_groups_per_thread(hidden)) {
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    default: f(std::integral_constant<int, kMaxHeldGroups>{}); break;
  }
}

inline constexpr int kNormHeldGroups = 4;  // weight groups a thread of the shared-row kernel keeps in registers

// Rows too long to hold in registers: one block per row, in three phases:
// every thread adds its groups and keeps the rounded sums in shared memory
// (and writes residual_out); the partials and warp 0's tree then give the
// inverse RMS; finally every thread writes its groups' outputs. Needs hidden
// % 8 == 0, 16-byte aligned buffers and hidden * sizeof(element) bytes of
// dynamic shared memory. out may alias x and residual_out residual: a block
// reads its whole row before it writes. kFp8 adds the FP8 epilogue (out then
// optional): with static scaling each group is quantised as it is written;
// per token, the outputs replace the sums in the shared row (each thread
// rewrites only its own groups), and after the row's maximum they are
// quantised from there.
template <typename E, bool kFp8 = false>
__global__ void __launch_bounds__(kNormMaxThreads) add_rmsnorm_shared_kernel(const RmsNormRows a) {
  using G = Group<E>;
  extern __shared__ unsigned char shared[];
  G* s = reinterpret_cast<G*>(shared);
  __shared__ float partials[kPartials];
  __shared__ float inv;
  wait_for_previous_kernel();
  const std::size_t groups = a.hidden / numerics::kNormGroup, offset = blockIdx.x * groups;
  const G* x = static_cast<const G*>(a.x) + offset;
  const G* weight = static_cast<const G*>(a.weight);
  // The weight of this thread's first groups, loaded with its inputs so
  // that the last phase waits for no memory.
  G w[kNormHeldGroups];
#pragma unroll
  for (int k = 0; k < kNormHeldGroups; ++k)
    if (threadIdx.x + k * blockDim.x < groups) w[k] = weight[threadIdx.x + k * blockDim.x];
  for (std::size_t g = threadIdx.x; g < groups; g += blockDim.x) {
    G v = x[g];
    if (a.residual != nullptr) {
      v = added<E>(v, static_cast<const G*>(a.residual)[offset + g]);
      static_cast<G*>(a.residual_out)[offset + g] = v;
    }
    s[g] = v;
  }
  const float total = block_sum_of_squares<E>(s, groups, partials);  // a barrier before, ours after
  if (threadIdx.x == 0) inv = inverse_rms(total, a.hidden, a.eps);
  __syncthreads();
  G* out = static_cast<G*>(a.out) + offset;
  const bool per_token = kFp8 && a.fp8.scaling == TPCOLL_FP8_PER_TOKEN;
  uint2* codes = kFp8 ? static_cast<uint2*>(a.fp8.out_fp8) + offset : nullptr;
  float max_abs = 0.0f;
  const auto write = [&](std::size_t g, const G& wg) {
    const G o = normalized_group<E>(s[g], inv, wg);
    if (!kFp8 || a.out != nullptr) out[g] = o;
    if constexpr (kFp8) {
      if (per_token) {
        s[g] = o;
        max_abs = group_max_abs<E>(o.v, max_abs);
      } else {
        codes[g] = quantised_group<E>(o.v, a.fp8.static_divisor);
      }
    }
  };
#pragma unroll
  for (int k = 0; k < kNormHeldGroups; ++k)
    if (threadIdx.x + k * blockDim.x < groups) write(threadIdx.x + k * blockDim.x, w[k]);
  for (std::size_t g = threadIdx.x + kNormHeldGroups * blockDim.x; g < groups; g += blockDim.x) write(g, weight[g]);
  if constexpr (kFp8) {
    if (per_token) {
      __shared__ float warp_maxima[kNormMaxThreads / 32];
      const fp8::RowDivisor divisor = row_divisor(a.fp8, blockIdx.x, max_abs, warp_maxima);
      for (std::size_t g = threadIdx.x; g < groups; g += blockDim.x) codes[g] = quantised_group<E>(s[g].v, divisor);
    }
  }
  allow_next_kernel();
}

// Any hidden size and alignment, element by element. One warp per row: add, then the sum of squares of the rounded sum (read
// back from residual_out, or from x without a residual), then the output.
// Each lane only reads back what it wrote, so aliasing out == x and
// residual_out == residual is safe. kFp8 adds the FP8 epilogue (out then
// optional); per token, a first pass forms the outputs for the row's maximum
// only, and the second forms them again to write them (this kernel serves
// the rare rows of odd sizes or alignment; its reads hit the cache).
template <typename E, bool kFp8>
__device__ __forceinline__ void add_rmsnorm_row(const RmsNormRows& a, std::size_t row) {
  using S = typename E::Storage;
  const unsigned lane = threadIdx.x % 32;
  const std::size_t offset = row * a.hidden;
  const S* x = static_cast<const S*>(a.x) + offset;
  const S* s = x;
  if (a.residual != nullptr) {
    const S* residual = static_cast<const S*>(a.residual) + offset;
    S* residual_out = static_cast<S*>(a.residual_out) + offset;
    for (std::size_t e = lane; e < a.hidden; e += 32)
      residual_out[e] = E::store(__fadd_rn(E::load(x[e]), E::load(residual[e])));
    __syncwarp();  // the sum of squares reads other lanes' elements
    s = residual_out;
  }
  const float inv = inverse_rms(warp_sum_of_squares<E>(s, a.hidden), a.hidden, a.eps);
  const S* weight = static_cast<const S*>(a.weight);
  S* out = static_cast<S*>(a.out) + offset;
  if constexpr (!kFp8) {
    for (std::size_t e = lane; e < a.hidden; e += 32) out[e] = E::store(normalized<E>(s[e], inv, weight[e]));
  } else {
    fp8::RowDivisor divisor = a.fp8.static_divisor;
    if (a.fp8.scaling == TPCOLL_FP8_PER_TOKEN) {
      float max_abs = 0.0f;
      for (std::size_t e = lane; e < a.hidden; e += 32)
        max_abs = fmaxf(max_abs, fabsf(E::load(E::store(normalized<E>(s[e], inv, weight[e])))));
      for (int half = 16; half >= 1; half /= 2) max_abs = fmaxf(max_abs, __shfl_xor_sync(0xffffffffu, max_abs, half));
      const float scale = fp8::per_token_scale(max_abs);
      if (lane == 0) a.fp8.row_scales[row] = scale;
      divisor = fp8::row_divisor_of(fp8::divisor_of(scale));
    }
    auto* codes = static_cast<std::uint8_t*>(a.fp8.out_fp8) + offset;
    for (std::size_t e = lane; e < a.hidden; e += 32) {
      const S o = E::store(normalized<E>(s[e], inv, weight[e]));
      if (a.out != nullptr) out[e] = o;
      codes[e] = fp8::quantise(E::load(o), divisor);
    }
  }
}

template <typename E, bool kFp8 = false>
__global__ void __launch_bounds__(32 * kNormWarps) add_rmsnorm_kernel(const RmsNormRows a) {
  wait_for_previous_kernel();
  const std::size_t row = static_cast<std::size_t>(blockIdx.x) * kNormWarps + threadIdx.x / 32;
  if (row < a.rows) add_rmsnorm_row<E, kFp8>(a, row);
  allow_next_kernel();
}

}  // namespace tpcoll::cuda
