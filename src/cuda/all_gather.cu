// Instantiates the all-gather kernels (3 access widths x 2 signalling scopes,
// plus low-latency) and picks one at run time. A gather copies bytes, so
// there is no dtype here.
#include "cuda/launch.hpp"

#include "cuda/kernels/all_gather.cuh"
#include "cuda/kernels/launch_kernel.cuh"

namespace tpcoll::cuda {
namespace {

void launch(void (*kernel)(AllGatherArgs), const GatherChoice& c, const AllGatherArgs& args, cudaStream_t stream) {
  launch_kernel(kernel, c.blocks, c.threads, c.early_launch, args, stream);
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

}  // namespace

cudaError_t launch_all_gather(const GatherChoice& choice, const AllGatherArgs& args, cudaStream_t stream) {
  if (choice.one_gpu)
    launch_scoped<Scope::kGpu>(choice, args, stream);
  else
    launch_scoped<Scope::kSystem>(choice, args, stream);
  return cudaGetLastError();
}

}  // namespace tpcoll::cuda
