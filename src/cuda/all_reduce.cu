// Instantiates the all-reduce kernels (3 dtypes x 2 access widths x 2
// algorithms) and picks one at run time: the only place with a dtype switch.
#include "cuda/launch.hpp"

#include "cuda/kernels/all_reduce.cuh"

namespace tpcoll::cuda {
namespace {

template <typename E, int kBytes>
void launch_typed(tpcoll_algo_t algo, int blocks, const AllReduceArgs& args, cudaStream_t stream) {
  if (algo == TPCOLL_ALGO_TWOSHOT)
    all_reduce_kernel<E, kBytes, true><<<blocks, kThreads, 0, stream>>>(args);
  else
    all_reduce_kernel<E, kBytes, false><<<blocks, kThreads, 0, stream>>>(args);
}

template <typename E>
void launch_width(tpcoll_algo_t algo, bool vectorized, int blocks, const AllReduceArgs& args, cudaStream_t stream) {
  if (vectorized)
    launch_typed<E, 16>(algo, blocks, args, stream);
  else
    launch_typed<E, sizeof(typename E::Storage)>(algo, blocks, args, stream);
}

}  // namespace

cudaError_t launch_all_reduce(tpcoll_algo_t algo, tpcoll_dtype_t dtype, bool vectorized, int blocks,
                              const AllReduceArgs& args, cudaStream_t stream) {
  switch (dtype) {
    case TPCOLL_FLOAT32: launch_width<Float32>(algo, vectorized, blocks, args, stream); break;
    case TPCOLL_FLOAT16: launch_width<Float16>(algo, vectorized, blocks, args, stream); break;
    case TPCOLL_BFLOAT16: launch_width<BFloat16>(algo, vectorized, blocks, args, stream); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace tpcoll::cuda
