// Instantiates the FP8 quantisation kernel (3 dtypes) and launches it.
#include "cuda/launch.hpp"

#include "cuda/kernels/launch_kernel.cuh"
#include "cuda/kernels/quantise.cuh"

namespace tpcoll::cuda {

void list_quantise_kernels(std::vector<const void*>& kernels) {
  for_each_element([&](auto e) { kernels.push_back(reinterpret_cast<const void*>(quantise_fp8_kernel<decltype(e)>)); });
}

cudaError_t launch_quantise_fp8(tpcoll_dtype_t dtype, const QuantiseRows& args, bool early_launch,
                                cudaStream_t stream) {
  return with_element(dtype, [&](auto e) {
    launch_kernel(quantise_fp8_kernel<decltype(e)>, static_cast<int>(args.rows), kQuantiseThreads, early_launch, 0,
                  args, stream);
  });
}

}  // namespace tpcoll::cuda
