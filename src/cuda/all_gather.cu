// Instantiates the all-gather kernels (3 access widths x 2 signalling scopes,
// plus low-latency) and picks one at run time. A gather copies bytes, so
// there is no dtype here.
#include "cuda/launch.hpp"

#include "cuda/kernels/all_gather.cuh"
#include "cuda/kernels/launch_kernel.cuh"

namespace tpcoll::cuda {
namespace {

void launch(void (*kernel)(AllGatherArgs), const GatherChoice& c, const AllGatherArgs& args, cudaStream_t stream) {
  launch_kernel(kernel, c.blocks, c.threads, c.early_launch, 0, args, stream);
}

template <Scope kScope>
void launch_scoped(const GatherChoice& c, const AllGatherArgs& args, cudaStream_t stream) {
  if (c.low_latency)
    launch(low_latency_all_gather<kScope>, c, args, stream);
  else if (c.width == 16)
    launch(all_gather_kernel<16, kScope>, c, args, stream);
  else if (c.width == 4)
    launch(all_gather_kernel<4, kScope>, c, args, stream);
  else
    launch(all_gather_kernel<1, kScope>, c, args, stream);
}

template <Scope kScope>
void list_scoped(std::vector<const void*>& kernels) {
  for (const void* k : {reinterpret_cast<const void*>(low_latency_all_gather<kScope>),
                        reinterpret_cast<const void*>(all_gather_kernel<16, kScope>),
                        reinterpret_cast<const void*>(all_gather_kernel<4, kScope>),
                        reinterpret_cast<const void*>(all_gather_kernel<1, kScope>)})
    kernels.push_back(k);
}

}  // namespace

void list_all_gather_kernels(std::vector<const void*>& kernels) {
  list_scoped<Scope::kGpu>(kernels);
  list_scoped<Scope::kSystem>(kernels);
}

cudaError_t launch_all_gather(const GatherChoice& choice, const AllGatherArgs& args, cudaStream_t stream) {
  if (choice.one_gpu)
    launch_scoped<Scope::kGpu>(choice, args, stream);
  else
    launch_scoped<Scope::kSystem>(choice, args, stream);
  return cudaGetLastError();
}

}  // namespace tpcoll::cuda
