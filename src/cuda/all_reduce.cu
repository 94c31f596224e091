// Instantiates the all-reduce kernels (3 dtypes x 2 signalling scopes x
// {one-shot, two-shot} x 2 access widths, plus low-latency) and picks one at
// run time.
#include "cuda/launch.hpp"

#include "cuda/kernels/all_reduce.cuh"
#include "cuda/kernels/launch_kernel.cuh"
#include "cuda/kernels/low_latency.cuh"

namespace tpcoll::cuda {
namespace {

void launch(void (*kernel)(AllReduceArgs), const KernelChoice& c, const AllReduceArgs& args, cudaStream_t stream) {
  launch_kernel(kernel, c.blocks, c.threads, c.early_launch, 0, args, stream);
}

template <typename E, int kBytes, Scope kScope>
void launch_typed(const KernelChoice& c, const AllReduceArgs& args, cudaStream_t stream) {
  if (c.algo == TPCOLL_ALGO_TWOSHOT)
    launch(all_reduce_kernel<E, kBytes, true, kScope>, c, args, stream);
  else
    launch(all_reduce_kernel<E, kBytes, false, kScope>, c, args, stream);
}

template <typename E, Scope kScope>
void launch_scoped(const KernelChoice& c, const AllReduceArgs& args, cudaStream_t stream) {
  if (c.low_latency)
    launch(low_latency_all_reduce<E, kScope>, c, args, stream);
  else if (c.vectorized)
    launch_typed<E, 16, kScope>(c, args, stream);
  else
    launch_typed<E, sizeof(typename E::Storage), kScope>(c, args, stream);
}

template <typename E>
void launch_element(const KernelChoice& c, const AllReduceArgs& args, cudaStream_t stream) {
  if (c.one_gpu)
    launch_scoped<E, Scope::kGpu>(c, args, stream);
  else
    launch_scoped<E, Scope::kSystem>(c, args, stream);
}

template <typename E, Scope kScope>
void list_scoped(std::vector<const void*>& kernels) {
  for (const void* k : {reinterpret_cast<const void*>(all_reduce_kernel<E, 16, true, kScope>),
                        reinterpret_cast<const void*>(all_reduce_kernel<E, 16, false, kScope>),
                        reinterpret_cast<const void*>(all_reduce_kernel<E, sizeof(typename E::Storage), true, kScope>),
                        reinterpret_cast<const void*>(all_reduce_kernel<E, sizeof(typename E::Storage), false, kScope>),
                        reinterpret_cast<const void*>(low_latency_all_reduce<E, kScope>)})
    kernels.push_back(k);
}

template <typename E>
void list_element(std::vector<const void*>& kernels) {
  list_scoped<E, Scope::kGpu>(kernels);
  list_scoped<E, Scope::kSystem>(kernels);
}

}  // namespace

void list_all_reduce_kernels(std::vector<const void*>& kernels) {
  for_each_element([&](auto e) { list_element<decltype(e)>(kernels); });
}

cudaError_t launch_all_reduce(const KernelChoice& choice, const AllReduceArgs& args, cudaStream_t stream) {
  return with_element(choice.dtype, [&](auto e) { launch_element<decltype(e)>(choice, args, stream); });
}

}  // namespace tpcoll::cuda
