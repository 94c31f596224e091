// Every tpcoll kernel is launched here, so that all of them may start while
// the previous kernel of their stream ends (programmatic dependent launch,
// see wait_for_previous_kernel in sync.cuh).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace tpcoll::cuda {

template <typename Args>
void launch_kernel(void (*kernel)(Args), int blocks, int threads, bool early_launch, std::size_t shared_bytes,
                   const Args& args, cudaStream_t stream) {
  cudaLaunchAttribute early{};
  early.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  early.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(static_cast<unsigned>(blocks));
  config.blockDim = dim3(static_cast<unsigned>(threads));
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  config.attrs = &early;
  config.numAttrs = early_launch ? 1 : 0;
  // A failed launch is reported by the caller's cudaGetLastError.
  static_cast<void>(cudaLaunchKernelEx(&config, kernel, args));
}

}  // namespace tpcoll::cuda
