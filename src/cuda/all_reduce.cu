// Instantiates the all-reduce kernels (3 dtypes x 2 access widths x 2
// algorithms x 2 signalling scopes) and picks one at run time: the only
// place with a dtype switch.
#include "cuda/launch.hpp"

#include "cuda/kernels/all_reduce.cuh"

namespace tpcoll::cuda {
namespace {

template <typename E, int kBytes, Scope kScope>
void launch_typed(tpcoll_algo_t algo, int blocks, const AllReduceArgs& args, cudaStream_t stream) {
  if (algo == TPCOLL_ALGO_TWOSHOT)
    all_reduce_kernel<E, kBytes, true, kScope><<<blocks, kThreads, 0, stream>>>(args);
  else
    all_reduce_kernel<E, kBytes, false, kScope><<<blocks, kThreads, 0, stream>>>(args);
}

template <typename E, Scope kScope>
void launch_width(tpcoll_algo_t algo, bool vectorized, int blocks, const AllReduceArgs& args, cudaStream_t stream) {
  if (vectorized)
    launch_typed<E, 16, kScope>(algo, blocks, args, stream);
  else
    launch_typed<E, sizeof(typename E::Storage), kScope>(algo, blocks, args, stream);
}

template <typename E>
void launch_scope(tpcoll_algo_t algo, bool vectorized, bool one_gpu, int blocks, const AllReduceArgs& args,
                  cudaStream_t stream) {
  if (one_gpu)
    launch_width<E, Scope::kGpu>(algo, vectorized, blocks, args, stream);
  else
    launch_width<E, Scope::kSystem>(algo, vectorized, blocks, args, stream);
}

}  // namespace

cudaError_t launch_all_reduce(tpcoll_algo_t algo, tpcoll_dtype_t dtype, bool vectorized, bool one_gpu, int blocks,
                              const AllReduceArgs& args, cudaStream_t stream) {
  switch (dtype) {
    case TPCOLL_FLOAT32: launch_scope<Float32>(algo, vectorized, one_gpu, blocks, args, stream); break;
    case TPCOLL_FLOAT16: launch_scope<Float16>(algo, vectorized, one_gpu, blocks, args, stream); break;
    case TPCOLL_BFLOAT16: launch_scope<BFloat16>(algo, vectorized, one_gpu, blocks, args, stream); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace tpcoll::cuda
