// Instantiates the fused kernels (low-latency one-shot and staged two-shot, 3
// dtypes x 2 signalling scopes) and picks one at run time.
#include "cuda/launch.hpp"

#include "cuda/kernels/fused.cuh"
#include "cuda/kernels/launch_kernel.cuh"

namespace tpcoll::cuda {
namespace {

template <typename E>
void launch_typed(const FusedChoice& c, const FusedArgs& args, cudaStream_t stream) {
  if (c.two_shot) {
    const auto kernel = c.one_gpu ? fused_two_shot<E, Scope::kGpu> : fused_two_shot<E, Scope::kSystem>;
    if (c.shared_bytes > 48 * 1024)  // past the default limit of dynamic shared memory
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kMaxNormRowBytes));
    launch_kernel(kernel, c.blocks, c.threads, c.early_launch, c.shared_bytes, args, stream);
    return;
  }
  const auto kernel = c.one_gpu ? fused_low_latency<E, Scope::kGpu, kFusedGroupsPerThread>
                                : fused_low_latency<E, Scope::kSystem, kFusedGroupsPerThread>;
  launch_kernel(kernel, c.blocks, kHeldThreads, c.early_launch, 0, args, stream);
}

template <typename E>
void list_typed(std::vector<const void*>& kernels) {
  kernels.push_back(reinterpret_cast<const void*>(fused_low_latency<E, Scope::kGpu, kFusedGroupsPerThread>));
  kernels.push_back(reinterpret_cast<const void*>(fused_low_latency<E, Scope::kSystem, kFusedGroupsPerThread>));
  kernels.push_back(reinterpret_cast<const void*>(fused_two_shot<E, Scope::kGpu>));
  kernels.push_back(reinterpret_cast<const void*>(fused_two_shot<E, Scope::kSystem>));
}

}  // namespace

void list_fused_kernels(std::vector<const void*>& kernels) {
  for_each_element([&](auto e) { list_typed<decltype(e)>(kernels); });
}

cudaError_t launch_fused(tpcoll_dtype_t dtype, const FusedChoice& choice, const FusedArgs& args, cudaStream_t stream) {
  return with_element(dtype, [&](auto e) { launch_typed<decltype(e)>(choice, args, stream); });
}

}  // namespace tpcoll::cuda
