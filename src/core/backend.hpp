// What a backend implements. The communicator validates and plans; a backend
// runs a plan. Kernels do not know the placement: they get peer pointers.
#pragma once

#include "common/fp8_quantise.hpp"
#include "core/call.hpp"
#include "core/plan.hpp"

namespace tpcoll {

struct Buffers {
  const void* in = nullptr;       // all-reduce/all-gather input; fused: x
  void* out = nullptr;
  const void* residual = nullptr; // fused only
  const void* weight = nullptr;   // fused only
  void* residual_out = nullptr;   // fused only
  void* stream = nullptr;         // cudaStream_t for a CUDA communicator
  // Fused op on the CUDA backend only: its FP8 output, quantised by the
  // one-shot kernel's epilogue (out may then be NULL); out_fp8 NULL: none.
  fp8::Fp8Output fp8{};
  // out is the communicator's scratch rows (cuda::ScratchRows), not a
  // caller's pointer: not checked, since under graph capture CUDA cannot
  // describe a stream-ordered allocation before the graph runs.
  bool out_is_scratch = false;
};

class Backend {
 public:
  virtual ~Backend() = default;
  // Runs `call` with `plan` on every rank; throws tpcoll::Error. Must detect
  // ranks that run a different call (TPCOLL_MISMATCH) before writing output.
  virtual void run(const Call& call, const Plan& plan, const Buffers& buffers) = 0;
  // Throws an error that enqueued (asynchronous) work reported; synchronous
  // backends report at the call and have none.
  virtual void raise_async_error() const {}
  // Called from any thread, maybe more than once: makes every rank's
  // waiting and later run() fail with TPCOLL_ABORTED (the CUDA kernels:
  // asynchronously). A backend that cannot reach its peers' waits (NCCL)
  // stops this rank's alone; the peers wait until they abort too.
  virtual void abort() {}
};

}  // namespace tpcoll
