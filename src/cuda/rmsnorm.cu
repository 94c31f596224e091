// Instantiates the add + RMSNorm kernels (3 dtypes x {8-element groups, a
// block per row, held in registers (2, 4 or 8 groups a thread) or, for long
// rows, in shared memory; element-wise, a warp per row}), each also with the
// FP8 epilogue, and picks one at run time.
#include "cuda/launch.hpp"

#include "cuda/kernels/launch_kernel.cuh"
#include "cuda/kernels/rmsnorm.cuh"

#include <algorithm>
#include <cstdint>

namespace tpcoll::cuda {
namespace {

bool aligned_to(std::size_t width, const void* p) { return reinterpret_cast<std::uintptr_t>(p) % width == 0; }
bool aligned16(const void* p) { return aligned_to(16, p); }

template <typename E, bool kFp8>
void launch_typed(const RmsNormRows& args, const NormLaunch& launch, cudaStream_t stream) {
  const bool early = launch.early_launch;
  const std::size_t row_bytes = args.hidden * sizeof(typename E::Storage);
  // (A NULL out, which only the FP8 epilogue allows, counts as aligned.)
  const bool groups = args.hidden % numerics::kNormGroup == 0 && row_bytes <= kMaxNormRowBytes && aligned16(args.x) &&
                      aligned16(args.weight) && aligned16(args.out) &&
                      (args.residual == nullptr || (aligned16(args.residual) && aligned16(args.residual_out))) &&
                      (!kFp8 || aligned_to(8, args.fp8.out_fp8));
  if (!groups) {
    const auto blocks = static_cast<int>((args.rows + kNormWarps - 1) / kNormWarps);
    launch_kernel(add_rmsnorm_kernel<E, kFp8>, blocks, 32 * kNormWarps, early, 0, args, stream);
    return;
  }
  const auto blocks = static_cast<int>(args.rows);
  if (args.hidden <= kMaxHeldHidden) {
    const bool weight_first = args.rows <= launch.one_wave_rows;
    with_groups_per_thread(args.hidden, [&](auto per_thread) {
      constexpr int kPerThread = decltype(per_thread)::value;
      const auto kernel = weight_first ? add_rmsnorm_held_kernel<E, kPerThread, true, kFp8>
                                       : add_rmsnorm_held_kernel<E, kPerThread, false, kFp8>;
      launch_kernel(kernel, blocks, kHeldThreads, early, 0, args, stream);
    });
    return;
  }
  const std::size_t group_count = args.hidden / numerics::kNormGroup;
  const int threads = static_cast<int>(std::min<std::size_t>(kNormMaxThreads, (group_count + 31) / 32 * 32));
  if (row_bytes > 48 * 1024)  // past the default limit of dynamic shared memory
    cudaFuncSetAttribute(add_rmsnorm_shared_kernel<E, kFp8>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         static_cast<int>(kMaxNormRowBytes));
  launch_kernel(add_rmsnorm_shared_kernel<E, kFp8>, blocks, threads, early, row_bytes, args, stream);
}

template <typename E, int kPerThread, bool kFp8>
void list_held(std::vector<const void*>& kernels) {
  kernels.push_back(reinterpret_cast<const void*>(add_rmsnorm_held_kernel<E, kPerThread, true, kFp8>));
  kernels.push_back(reinterpret_cast<const void*>(add_rmsnorm_held_kernel<E, kPerThread, false, kFp8>));
}

template <typename E, bool kFp8>
void list_typed(std::vector<const void*>& kernels) {
  list_held<E, 2, kFp8>(kernels);
  list_held<E, 4, kFp8>(kernels);
  list_held<E, kMaxHeldGroups, kFp8>(kernels);
  kernels.push_back(reinterpret_cast<const void*>(add_rmsnorm_shared_kernel<E, kFp8>));
  kernels.push_back(reinterpret_cast<const void*>(add_rmsnorm_kernel<E, kFp8>));
}

}  // namespace

void list_add_rmsnorm_kernels(std::vector<const void*>& kernels) {
  for_each_element([&](auto e) {
    list_typed<decltype(e), false>(kernels);
    list_typed<decltype(e), true>(kernels);
  });
}

cudaError_t launch_add_rmsnorm(tpcoll_dtype_t dtype, const RmsNormRows& args, const NormLaunch& launch,
                               cudaStream_t stream) {
  return with_element(dtype, [&](auto e) {
    if (args.fp8.out_fp8 != nullptr)
      launch_typed<decltype(e), true>(args, launch, stream);
    else
      launch_typed<decltype(e), false>(args, launch, stream);
  });
}

}  // namespace tpcoll::cuda
