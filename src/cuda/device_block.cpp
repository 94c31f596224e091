#include "cuda/device_block.hpp"

#include "cuda/cuda_check.hpp"

#include <cuda_runtime.h>

namespace tpcoll::cuda {

DeviceBlock::DeviceBlock(int device, std::size_t bytes, const char* what) : device_(device), bytes_(bytes) {
  if (bytes == 0) return;
  check_cuda(cudaSetDevice(device), "cudaSetDevice");
  check_cuda(cudaMalloc(&data_, bytes), what);
}

DeviceBlock::~DeviceBlock() {
  if (data_ == nullptr) return;
  cudaSetDevice(device_);
  cudaFree(data_);
}

}  // namespace tpcoll::cuda
