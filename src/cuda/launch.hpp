// Host-side entry points into the kernels (compiled by nvcc in *.cu files).
#pragma once

#include "cuda/kernels/layout.cuh"

#include <cuda_runtime.h>

namespace tpcoll::cuda {

// vectorized: in, out and the chunk are 16-byte aligned.
cudaError_t launch_all_reduce(tpcoll_algo_t algo, tpcoll_dtype_t dtype, bool vectorized, int blocks,
                              const AllReduceArgs& args, cudaStream_t stream);

}  // namespace tpcoll::cuda
