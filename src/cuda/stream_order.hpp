// Keeps a CUDA communicator's ops in the order its rank issued them, whatever
// streams the caller uses. Each rank's kernels spin for their peers and share
// the rank's staging buffer and sequence numbers, so two of them running at
// once on two streams would race or deadlock (sglang#31117, pytorch#189228).
#pragma once

struct CUevent_st;

namespace tpcoll::cuda {

// Where a stream stands with CUDA graph capture.
struct CaptureState {
  bool capturing = false;     // an active (or invalidated) capture sequence
  unsigned long long id = 0;  // that sequence's id; 0 when unknown or not capturing
};

// What an op on a stream in state `now` needs after the previous op, whose
// stream is in state `before` (see StreamOrder::before_op).
enum class OrderAction {
  kJoin,     // both eager, or both in one known capture: wait for an event
  kNothing,  // this op is captured, the previous eager or in another capture
  kRefuse,   // this op eager, the previous op's stream captured
};
OrderAction order_action(const CaptureState& before, const CaptureState& now);

class StreamOrder {
 public:
  StreamOrder(int rank, int device);
  ~StreamOrder();
  StreamOrder(const StreamOrder&) = delete;
  StreamOrder& operator=(const StreamOrder&) = delete;

  // Called before each op enqueued on `stream`. On the stream of the previous
  // op it does nothing (the stream orders them, no API call). On another one
  // it makes `stream` wait for what the previous op's stream has enqueued:
  //   both eager, or both in the same capture: an event recorded on the
  //     previous stream and waited for on this one (a graph edge in capture);
  //   this op captured, the previous eager or in another capture: nothing
  //     runs now, a graph's ops run at its replay, which the caller orders
  //     like any captured work;
  //   this op eager while the previous op's stream is being captured: the
  //     order cannot be expressed (CUDA refuses to join a capture to eager
  //     work), so the call fails naming both streams instead of racing.
  // The previous op's stream must still exist.
  void before_op(void* stream);

 private:
  int rank_;
  int device_;
  CUevent_st* event_ = nullptr;
  bool issued_ = false;  // an op was enqueued: previous_ is meaningful
  void* previous_ = nullptr;
};

}  // namespace tpcoll::cuda
