#include "cuda/capture_guard.hpp"

#include "core/error.hpp"
#include "cuda/cuda_check.hpp"

namespace tpcoll::cuda {

void refuse_creation_during_capture(int device) {
  if (cudaSetDevice(device) != cudaSuccess) {
    cudaGetLastError();
    return;  // no such device: the backend says so, naming it
  }
  // An allocation is what creation does first, and what a capture forbids.
  void* probe = nullptr;
  const cudaError_t e = cudaMalloc(&probe, 1);
  if (e == cudaSuccess) {
    cudaFree(probe);
    return;
  }
  cudaGetLastError();
  if (e == cudaErrorStreamCaptureUnsupported || e == cudaErrorStreamCaptureImplicit ||
      e == cudaErrorStreamCaptureInvalidated || e == cudaErrorStreamCaptureWrongThread)
    fail(TPCOLL_INVALID_ARGUMENT,
         "creating a communicator during CUDA graph capture is not allowed: its allocations and rendezvous "
         "cannot be captured ({}). Create it before capture; its first op may then be captured",
         cudaGetErrorName(e));
  check_cuda(e, "allocating device memory");
}

}  // namespace tpcoll::cuda
