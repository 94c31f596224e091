// Creating a communicator allocates device memory, opens IPC handles and
// meets every peer: none of that can be recorded into a CUDA graph
// (vllm#54626, pytorch#198140). Creation checks first, so that a call made
// during capture fails at once with a message saying so, instead of failing
// later on an unrelated CUDA error or leaving peers waiting.
#pragma once

namespace tpcoll::cuda {

// Throws TPCOLL_INVALID_ARGUMENT if a CUDA graph capture forbids this thread
// the calls creation needs on `device` (a capture of its own, or one begun in
// global mode by any thread). Such a capture is then invalid, as after any
// forbidden call; with cudaStreamCaptureModeRelaxed nothing is refused.
void refuse_creation_during_capture(int device);

}  // namespace tpcoll::cuda
