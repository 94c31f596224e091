#include "cuda/stream_order.hpp"

#include "core/error.hpp"
#include "cuda/cuda_check.hpp"

namespace tpcoll::cuda {
namespace {

CaptureState capture_state(cudaStream_t stream, const char* which) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  unsigned long long id = 0;
  const cudaError_t e = cudaStreamGetCaptureInfo(stream, &status, &id);
  // The legacy default stream while a blocking stream is captured: part of
  // that capture, whose id CUDA does not give.
  if (e == cudaErrorStreamCaptureImplicit) {
    cudaGetLastError();
    return CaptureState{true, 0};
  }
  check_cuda(e, which);
  if (status == cudaStreamCaptureStatusNone) return CaptureState{};
  return CaptureState{true, id};
}

}  // namespace

OrderAction order_action(const CaptureState& before, const CaptureState& now) {
  if (!now.capturing) return before.capturing ? OrderAction::kRefuse : OrderAction::kJoin;
  return before.capturing && before.id != 0 && before.id == now.id ? OrderAction::kJoin : OrderAction::kNothing;
}

StreamOrder::StreamOrder(int rank, int device) : rank_(rank), device_(device) {
  check_cuda(cudaSetDevice(device_), "cudaSetDevice");
  cudaEvent_t event = nullptr;
  check_cuda(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "creating the stream-order event");
  event_ = event;
}

StreamOrder::~StreamOrder() {
  if (event_ != nullptr) cudaEventDestroy(event_);
}

void StreamOrder::before_op(void* stream) {
  if (issued_ && stream == previous_) return;
  if (!issued_) {
    issued_ = true;
    previous_ = stream;
    return;
  }
  const auto previous = static_cast<cudaStream_t>(previous_);
  const auto next = static_cast<cudaStream_t>(stream);
  const CaptureState before = capture_state(previous, "cudaStreamGetCaptureInfo (the previous op's stream)");
  const CaptureState now = capture_state(next, "cudaStreamGetCaptureInfo (this op's stream)");
  const OrderAction action = order_action(before, now);
  if (action == OrderAction::kRefuse)
    fail(TPCOLL_INVALID_ARGUMENT,
         "rank {}: an eager op on stream {} while stream {}, which issued this communicator's previous op, is "
         "being captured into a CUDA graph: tpcoll cannot order them (CUDA does not join a capture to eager "
         "work); end that capture first, or issue both on one stream",
         rank_, stream, previous_);
  if (action == OrderAction::kJoin) {
    check_cuda(cudaEventRecord(event_, previous), "recording the previous op's end (stream order)");
    check_cuda(cudaStreamWaitEvent(next, event_, 0), "ordering this op after the previous one (stream order)");
  }
  previous_ = stream;
}

}  // namespace tpcoll::cuda
