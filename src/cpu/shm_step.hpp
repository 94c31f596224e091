// The shared-memory protocol (private to the CPU backend).
//
// Per step k (one chunk of one op; k grows forever and is the same on every
// rank, so nothing is ever reset and a late reader cannot confuse two steps),
// each rank owns two slots used by alternate steps:
//   1. copy my chunk into slot k % 2, write my call's signature and its hash,
//      release `posted` = k;
//   2. acquire every peer's `posted` >= k and compare its call hash with mine
//      (a different call is an error here, before any output is written);
//   3. one-shot: reduce every rank's chunk in rank order into my output.
//      two-shot: reduce my share into my slot's result area, release
//      `reduced` = k, acquire every peer's `reduced` >= k, copy the shares.
// Reusing slot k % 2 at step k needs every peer to be done with step k-2,
// which a peer is once it started k-1: that was seen during step k-1, so no
// separate "consumed" handshake (and no extra cache miss) is needed.
//
// (A low-latency variant with the step flag inside every 8-byte data word
// was measured 5x slower at 1-4 KiB on x86: a reader polling lines that the
// writer is still filling bounces each line between the cores.)
#pragma once

#include "core/signature.hpp"
#include "cpu/shm_backend.hpp"

#include <cstdint>

namespace tpcoll::cpu {

inline constexpr int kSlots = 2;

// Per rank. Words written by one rank and polled by the others each get a
// cache line; the call hash shares `posted`'s line so that arrival and the
// mismatch check cost one cache miss.
struct ShmBackend::Control {
  alignas(64) std::uint64_t posted;   // I started step `posted` (my slot holds its input)
  std::uint64_t call_hash[kSlots];    // hash of the call of the step in each slot
  alignas(64) std::uint64_t reduced;  // my result area holds step `reduced`'s share
  alignas(64) CallSignature signature[kSlots];  // read only to report a mismatch
};

// One per segment, after the ranks' Controls. Written once, by an abort, so
// its line stays shared in every core's cache and a waiter's look costs no
// transfer.
struct ShmBackend::JobState {
  alignas(64) std::uint64_t aborted_by;  // 1 + the rank that aborted; 0: none
};

class ShmBackend::Step {
 public:
  // Starts the next step; waits (normally not at all) until every peer is
  // done with the step that last used this step's slot.
  Step(ShmBackend& backend, const CallSignature& call, std::uint64_t call_hash);

  std::uint64_t k() const { return k_; }
  int slot() const { return static_cast<int>(k_ % kSlots); }

  void post();          // my slot is staged
  void await_posted();  // every peer's slot is staged, for the same call
  void share_reduced();
  void await_reduced();

 private:
  void announce();  // signature and call hash, before anything peers can see
  void check_call(int peer) const;
  [[noreturn]] void timed_out(int peer, const char* what, std::uint64_t target) const;
  void throw_if_aborted() const;
  void await(std::uint64_t Control::*word, std::vector<std::uint64_t>& seen, std::uint64_t target, const char* what);

  ShmBackend& b_;
  CallSignature sig_;
  std::uint64_t hash_;
  std::uint64_t k_ = 0;
};

}  // namespace tpcoll::cpu
