// What a rank's device buffer holds and what every kernel gets, passed by
// value: peer pointers (from CUDA IPC or plain pointers within a process), so
// kernels do not know where the ranks are.
#pragma once

#include "common/host_device.hpp"
#include "core/call_signature.hpp"
#include "cuda/kernels/row_limits.hpp"

#include <tpcoll/tpcoll.h>

#include <cstddef>
#include <cstdint>

namespace tpcoll::cuda {

inline constexpr int kMaxRanks = 8;        // ranks our kernels serve (more: another engine)
inline constexpr int kMaxBlocks = 64;      // blocks per rank per kernel
inline constexpr int kThreads = 512;       // threads per block
inline constexpr int kSlots = 2;           // staging slots, alternating by sequence number
// One-shot messages up to this size travel in low-latency units (see
// low_latency.cuh): 16 bytes carrying 8 data bytes and the step's flag twice.
// On an H100 (2 ranks sharing it, bf16) they beat the staged kernels up to
// 256 KiB: 2.4 vs 4.1 us at 128 KiB, 3.4 vs 4.1 us at 256 KiB.
inline constexpr std::size_t kLowLatencyBytes = 256 * 1024;

// Written by peers into the receiving rank's buffer, per block and sender: a
// flag word (step << kCallBits | call tag) saying that the sender's data for
// that step has landed and which call the sender runs, in one load. Only grows.
inline constexpr int kCallBits = 20;
struct Signals {
  std::uint64_t arrived[kMaxBlocks][kMaxRanks];  // a sender's input slice is in my recv area
  std::uint64_t reduced[kMaxBlocks][kMaxRanks];  // an owner's reduced share is in my result area
  // The call this rank's running kernel serves (step: its first step), for a
  // peer that meets another call to name it.
  CallSignature current_call;
  // 0, or 1 + the rank that aborted the communicator (tpcoll_comm_abort):
  // written by that rank's host into every rank's buffer; every wait that
  // lasts checks it and stops.
  std::uint64_t aborted_by;
};

// Local to a rank: advanced by its own kernels, so graph replays advance it.
// Block b of a kernel reads seq[b]: the last step this rank completed. Each
// block of a kernel with G blocks writes the entries b, b + G, b + 2G, ...:
// its own, which only it read, and entries no block of this kernel reads, so
// no block needs to know when the others finished (no atomic counter).
struct RankState {
  std::uint64_t seq[kMaxBlocks];
};

// What a kernel reports to the host, in host-mapped memory. `code` is 0 if
// fine, else kFailTimeout or kFailMismatch | peer, or kFailAborted | the rank
// that aborted; it is written last. For a
// mismatch, `mine` is this rank's call (step: where they met) and `theirs`
// the peer's record (step: the first of its kernel, 0 if it had none).
inline constexpr std::uint32_t kFailTimeout = 1u << 16;   // | peer
inline constexpr std::uint32_t kFailMismatch = 2u << 16;  // | peer
inline constexpr std::uint32_t kFailAborted = 3u << 16;   // | the rank that aborted
struct FailureReport {
  CallSignature mine;
  CallSignature theirs;
  std::uint32_t code;
};

// Byte offsets inside one rank's buffer:
// [Signals][RankState][recv: slot x sender x chunk][result: slot x chunk]
// [low latency: slot x sender x 2 * kLowLatencyBytes]
struct BufferLayout {
  std::size_t chunk_bytes;  // the largest per-rank chunk one kernel moves
  int world;

  static constexpr std::size_t kSignals = 0;
  static constexpr std::size_t kState = (sizeof(Signals) + 255) / 256 * 256;
  static constexpr std::size_t kData = kState + (sizeof(RankState) + 255) / 256 * 256;

  TPCOLL_HOST_DEVICE std::size_t recv(int slot, int sender) const {
    return kData + (static_cast<std::size_t>(slot) * world + sender) * chunk_bytes;
  }
  TPCOLL_HOST_DEVICE std::size_t result(int slot) const {
    return kData + static_cast<std::size_t>(kSlots) * world * chunk_bytes + slot * chunk_bytes;
  }
  TPCOLL_HOST_DEVICE std::size_t low_latency(int slot, int sender) const {
    return result(kSlots) + (static_cast<std::size_t>(slot) * world + sender) * 2 * kLowLatencyBytes;
  }
  TPCOLL_HOST_DEVICE std::size_t total() const { return low_latency(kSlots, 0); }
};

// What every kernel needs to reach its peers and report: passed by value
// inside each op's arguments.
struct PeerArgs {
  std::byte* buffers[kMaxRanks];  // every rank's buffer, as mapped in this process
  BufferLayout layout;
  int rank;
  int world;
  std::uint32_t call_tag;         // low kCallBits of the call's hash: peers at another call are reported
  std::uint64_t timeout_ns;       // bound on every wait for a peer
  FailureReport* failure;         // host-mapped
  CallSignature call;             // this op, published in Signals::current_call
};

struct AllReduceArgs : PeerArgs {
  const void* in;
  void* out;
  std::size_t count;        // elements of the whole op
  std::size_t chunk_count;  // elements per step (fits the staging; whole vectors)
};

struct ReduceScatterArgs : PeerArgs {
  const void* in;
  void* out;
  std::size_t share;        // elements of each rank's share of the input (and of out)
  std::size_t piece_count;  // elements of each share per step (fits the staging; whole vectors)
};

// A gather moves bytes: the input is [outer, inner] bytes, the output
// [outer, world, inner], and steps are flat byte ranges of the input.
struct AllGatherArgs : PeerArgs {
  const void* in;
  void* out;
  std::size_t bytes;        // of each rank's input
  std::size_t inner;        // bytes from the gathered dim on
  std::size_t chunk_bytes;  // per step (fits the staging; a multiple of 64)
};

struct FusedArgs : PeerArgs {
  RmsNormRows norm;       // x is this rank's input, not yet reduced
  std::size_t step_rows;  // two-shot: rows of one step (their out and residual_out fill the result area)
};

}  // namespace tpcoll::cuda
