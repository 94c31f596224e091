// Instantiates the reduce-scatter kernels (3 dtypes x 2 signalling scopes x
// 2 access widths, plus the two low-latency layouts) and picks one at run
// time.
#include "cuda/launch.hpp"

#include "cuda/kernels/launch_kernel.cuh"
#include "cuda/kernels/reduce_scatter.cuh"

namespace tpcoll::cuda {
namespace {

template <typename E, Scope kScope>
void launch_scoped(const KernelChoice& c, const ReduceScatterArgs& args, cudaStream_t stream) {
  void (*kernel)(ReduceScatterArgs) =
      c.low_latency ? (c.by_input_unit ? low_latency_reduce_scatter_by_input_unit<E, kScope>
                                       : low_latency_reduce_scatter_by_share_unit<E, kScope>)
      : c.vectorized ? reduce_scatter_kernel<E, 16, kScope>
                     : reduce_scatter_kernel<E, sizeof(typename E::Storage), kScope>;
  launch_kernel(kernel, c.blocks, c.threads, c.early_launch, 0, args, stream);
}

template <typename E, Scope kScope>
void list_scoped(std::vector<const void*>& kernels) {
  for (const void* k : {reinterpret_cast<const void*>(low_latency_reduce_scatter_by_input_unit<E, kScope>),
                        reinterpret_cast<const void*>(low_latency_reduce_scatter_by_share_unit<E, kScope>),
                        reinterpret_cast<const void*>(reduce_scatter_kernel<E, 16, kScope>),
                        reinterpret_cast<const void*>(reduce_scatter_kernel<E, sizeof(typename E::Storage), kScope>)})
    kernels.push_back(k);
}

}  // namespace

void list_reduce_scatter_kernels(std::vector<const void*>& kernels) {
  for_each_element([&](auto e) {
    list_scoped<decltype(e), Scope::kGpu>(kernels);
    list_scoped<decltype(e), Scope::kSystem>(kernels);
  });
}

cudaError_t launch_reduce_scatter(const KernelChoice& choice, const ReduceScatterArgs& args, cudaStream_t stream) {
  return with_element(choice.dtype, [&](auto e) {
    using E = decltype(e);
    if (choice.one_gpu)
      launch_scoped<E, Scope::kGpu>(choice, args, stream);
    else
      launch_scoped<E, Scope::kSystem>(choice, args, stream);
  });
}

}  // namespace tpcoll::cuda
