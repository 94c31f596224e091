// Instantiates the fused kernels (low-latency one-shot, with and without the
// FP8 epilogue, and staged two-shot, 3 dtypes x 2 signalling scopes) and picks
// one at run time. The two-shot has no FP8 epilogue: the communicator
// quantises its output with the quantisation kernel.
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
  const auto kernel = [&](auto fp8) {
    constexpr bool kFp8 = decltype(fp8)::value;
    return c.one_gpu ? fused_low_latency<E, Scope::kGpu, kFusedGroupsPerThread, kFp8>
                     : fused_low_latency<E, Scope::kSystem, kFusedGroupsPerThread, kFp8>;
  };
  const bool fp8 = args.norm.fp8.out_fp8 != nullptr;
  launch_kernel(fp8 ? kernel(std::true_type{}) : kernel(std::false_type{}), c.blocks, kHeldThreads, c.early_launch, 0,
                args, stream);
}

template <typename E>
void list_typed(std::vector<const void*>& kernels) {
  kernels.push_back(reinterpret_cast<const void*>(fused_low_latency<E, Scope::kGpu, kFusedGroupsPerThread>));
  kernels.push_back(reinterpret_cast<const void*>(fused_low_latency<E, Scope::kSystem, kFusedGroupsPerThread>));
  kernels.push_back(reinterpret_cast<const void*>(fused_low_latency<E, Scope::kGpu, kFusedGroupsPerThread, true>));
  kernels.push_back(reinterpret_cast<const void*>(fused_low_latency<E, Scope::kSystem, kFusedGroupsPerThread, true>));
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
