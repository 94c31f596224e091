// CUDA runtime errors become tpcoll::Error (TPCOLL_CUDA_ERROR) at the boundary.
#pragma once

#include "core/error.hpp"

#include <cuda_runtime.h>

namespace tpcoll::cuda {

inline void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    fail(TPCOLL_CUDA_ERROR, "{}: {} ({})", what, cudaGetErrorString(status), cudaGetErrorName(status));
}

}  // namespace tpcoll::cuda
