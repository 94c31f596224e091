// Host-side entry points into the kernels (compiled by nvcc in *.cu files).
#pragma once

#include "cuda/kernels/layout.cuh"

#include <cuda_runtime.h>

namespace tpcoll::cuda {

// vectorized: in, out and the chunk are 16-byte aligned. one_gpu: every rank
// is on this GPU, so signals need only GPU scope.
cudaError_t launch_all_reduce(tpcoll_algo_t algo, tpcoll_dtype_t dtype, bool vectorized, bool one_gpu, int blocks,
                              const AllReduceArgs& args, cudaStream_t stream);

}  // namespace tpcoll::cuda
