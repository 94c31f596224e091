// Instantiates the add + RMSNorm kernels (3 dtypes x {8-element groups, a
// block per row; element-wise, a warp per row}) and picks one at run time.
#include "cuda/launch.hpp"

#include "cuda/kernels/launch_kernel.cuh"
#include "cuda/kernels/rmsnorm.cuh"

#include <algorithm>
#include <cstdint>

namespace tpcoll::cuda {
namespace {

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

template <typename E>
void launch_typed(const RmsNormRows& args, bool early_launch, cudaStream_t stream) {
  const std::size_t row_bytes = args.hidden * sizeof(typename E::Storage);
  const bool groups = args.hidden % numerics::kNormGroup == 0 && row_bytes <= kMaxNormRowBytes && aligned16(args.x) &&
                      aligned16(args.weight) && aligned16(args.out) &&
                      (args.residual == nullptr || (aligned16(args.residual) && aligned16(args.residual_out)));
  if (!groups) {
    const auto blocks = static_cast<int>((args.rows + kNormWarps - 1) / kNormWarps);
    launch_kernel(add_rmsnorm_kernel<E>, blocks, 32 * kNormWarps, early_launch, 0, args, stream);
    return;
  }
  const std::size_t group_count = args.hidden / numerics::kNormGroup;
  const int threads = static_cast<int>(std::min<std::size_t>(kNormMaxThreads, (group_count + 31) / 32 * 32));
  if (row_bytes > 48 * 1024)  // past the default limit of dynamic shared memory
    cudaFuncSetAttribute(add_rmsnorm_groups_kernel<E>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         static_cast<int>(kMaxNormRowBytes));
  launch_kernel(add_rmsnorm_groups_kernel<E>, static_cast<int>(args.rows), threads, early_launch, row_bytes, args,
                stream);
}

template <typename E>
void list_typed(std::vector<const void*>& kernels) {
  kernels.push_back(reinterpret_cast<const void*>(add_rmsnorm_groups_kernel<E>));
  kernels.push_back(reinterpret_cast<const void*>(add_rmsnorm_kernel<E>));
}

}  // namespace

void list_add_rmsnorm_kernels(std::vector<const void*>& kernels) {
  for_each_element([&](auto e) { list_typed<decltype(e)>(kernels); });
}

cudaError_t launch_add_rmsnorm(tpcoll_dtype_t dtype, const RmsNormRows& args, bool early_launch, cudaStream_t stream) {
  return with_element(dtype, [&](auto e) { launch_typed<decltype(e)>(args, early_launch, stream); });
}

}  // namespace tpcoll::cuda
