// The CPU shared-memory backend: ranks are processes on one host sharing one
// POSIX shared-memory segment of staging buffers and sequence words.
#pragma once

#include "core/backend.hpp"
#include "cpu/shm_segment.hpp"

#include <tpcoll/tpcoll.h>

#include <array>
#include <cstdint>
#include <vector>

namespace tpcoll {
class Bootstrap;
}

namespace tpcoll::cpu {

class ShmBackend final : public Backend {
 public:
  // Collective: rank 0 creates the segment, the others attach through the
  // bootstrap. staging_bytes is each rank's chunk size.
  ShmBackend(Bootstrap& bootstrap, std::size_t staging_bytes, std::int64_t timeout_ms);

  void run(const Call& call, const Plan& plan, const Buffers& buffers) override;
  void abort() override;

  struct ByteRange {  // [lo, hi)
    std::size_t lo, hi;
  };
  struct Control;  // per-rank sequence words, in shared memory
  struct JobState; // words every rank may write, in shared memory
  class Step;      // one step of the protocol (shm_step.hpp)

 private:
  using ChunkPointers = std::array<const std::byte*, TPCOLL_MAX_RANKS>;

  static std::size_t control_bytes(int world);
  static std::size_t segment_bytes(int world, std::size_t staging_bytes);
  Control& control(int rank) const;
  JobState& job() const;
  std::byte* input(int rank, std::uint64_t step) const;
  std::byte* result(int rank, std::uint64_t step) const;

  // One-shot exchange: publishes my chunk and points chunks[p] at every
  // rank's (mine: the caller's buffer).
  void exchange(Step& step, const std::byte* mine, std::size_t length, ChunkPointers& chunks);
  // Two-shot publish: stages my chunk except `local_only`, a range that only
  // this rank reads (from the caller's buffer), then waits for every peer's.
  void publish_except(Step& step, const std::byte* mine, std::size_t length, ByteRange local_only);

  void all_reduce_chunk(Step& step, const Call& call, tpcoll_algo_t algo, std::size_t offset, std::size_t length,
                        const Buffers& buffers);
  void all_gather_chunk(Step& step, const Call& call, std::size_t offset, std::size_t length, const Buffers& buffers);
  void fused_chunk(Step& step, const Call& call, tpcoll_algo_t algo, std::size_t first_row, std::size_t rows,
                   const Buffers& buffers);
  void unfused(const Call& call, const Plan& plan, const Buffers& buffers);
  // Both scatter ops: a step takes bytes [offset, offset + length) of every
  // rank's share of the input.
  void reduce_scatter(const Call& call, const Plan& plan, const Buffers& buffers);
  void reduce_scatter_chunk(Step& step, const Call& call, std::size_t offset, std::size_t length,
                            const Buffers& buffers);

  int rank_;
  int world_;
  std::size_t staging_bytes_;
  std::int64_t timeout_ms_;
  std::uint64_t step_ = 0;  // only grows; identical on every rank
  // Highest step each peer is known to have started (`posted`) or reduced:
  // a wait already satisfied costs no read of the peer's cache line.
  std::vector<std::uint64_t> seen_posted_;
  std::vector<std::uint64_t> seen_reduced_;
  ShmSegment segment_;
  std::byte* data_ = nullptr;
};

}  // namespace tpcoll::cpu
