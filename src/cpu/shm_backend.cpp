// Layout of the shared segment, the exchanges built on the protocol of
// shm_step.hpp, and the dispatch of a plan's chunks. The ops are in shm_ops.cpp.
#include "cpu/shm_backend.hpp"

#include "bootstrap/bootstrap.hpp"
#include "core/error.hpp"
#include "core/signature.hpp"
#include "cpu/shm_step.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>

namespace tpcoll::cpu {
namespace {

constexpr std::size_t kPage = 4096;

std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }

}  // namespace

// [control: one Control per rank, then the JobState][staging: per rank, per slot, input + result]
std::size_t ShmBackend::control_bytes(int world) { return round_up(sizeof(Control) * world + sizeof(JobState), kPage); }

std::size_t ShmBackend::segment_bytes(int world, std::size_t staging_bytes) {
  return control_bytes(world) + static_cast<std::size_t>(world) * kSlots * 2 * staging_bytes;
}

ShmBackend::ShmBackend(Bootstrap& bootstrap, std::size_t staging_bytes, std::int64_t timeout_ms)
    : rank_(bootstrap.rank()),
      world_(bootstrap.world()),
      staging_bytes_(staging_bytes),
      timeout_ms_(timeout_ms),
      seen_posted_(static_cast<std::size_t>(world_), 0),
      seen_reduced_(static_cast<std::size_t>(world_), 0),
      segment_(ShmSegment::create_collectively(bootstrap, segment_bytes(world_, staging_bytes))),
      data_(segment_.data() + control_bytes(world_)) {}

ShmBackend::Control& ShmBackend::control(int rank) const { return reinterpret_cast<Control*>(segment_.data())[rank]; }

ShmBackend::JobState& ShmBackend::job() const {
  return *reinterpret_cast<JobState*>(segment_.data() + sizeof(Control) * world_);
}

void ShmBackend::abort() {
  // The first abort names the rank; later ones keep it.
  std::uint64_t none = 0;
  std::atomic_ref<std::uint64_t>(job().aborted_by).compare_exchange_strong(none, static_cast<std::uint64_t>(rank_) + 1);
}

std::byte* ShmBackend::input(int rank, std::uint64_t step) const {
  const std::size_t slot = static_cast<std::size_t>(rank) * kSlots + step % kSlots;
  return data_ + slot * 2 * staging_bytes_;
}

std::byte* ShmBackend::result(int rank, std::uint64_t step) const { return input(rank, step) + staging_bytes_; }

void ShmBackend::exchange(Step& step, const std::byte* mine, std::size_t length, ChunkPointers& chunks) {
  std::memcpy(input(rank_, step.k()), mine, length);
  step.post();
  step.await_posted();
  for (int p = 0; p < world_; ++p) chunks[p] = p == rank_ ? mine : input(p, step.k());
}

void ShmBackend::publish_except(Step& step, const std::byte* mine, std::size_t length, ByteRange local_only) {
  std::byte* slot = input(rank_, step.k());
  std::memcpy(slot, mine, local_only.lo);
  std::memcpy(slot + local_only.hi, mine + local_only.hi, length - local_only.hi);
  step.post();
  step.await_posted();
}

void ShmBackend::run(const Call& call, const Plan& plan, const Buffers& buffers) {
  if (is_scatter(call.op)) return reduce_scatter(call, plan, buffers);
  if (plan.algo == TPCOLL_ALGO_UNFUSED) return unfused(call, plan, buffers);
  const CallSignature sig = make_signature(call, plan.algo, 0);
  const std::uint64_t hash = sig.call_hash();
  for (std::size_t offset = 0; offset < call.bytes; offset += plan.chunk_bytes) {
    const std::size_t length = std::min(plan.chunk_bytes, call.bytes - offset);
    Step step(*this, sig, hash);
    switch (call.op) {
      case TPCOLL_OP_ALL_REDUCE:
        all_reduce_chunk(step, call, plan.algo, offset, length, buffers);
        break;
      case TPCOLL_OP_ALL_GATHER:
        all_gather_chunk(step, call, offset, length, buffers);
        break;
      case TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM:
        fused_chunk(step, call, plan.algo, offset / call.inner_bytes, length / call.inner_bytes, buffers);
        break;
      case TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM_FP8:  // run by the communicator as the fused op, then quantised
        fail(TPCOLL_INTERNAL_ERROR, "{} reached the shared-memory backend", op_name(call.op));
      case TPCOLL_OP_REDUCE_SCATTER:
      case TPCOLL_OP_FUSED_REDUCE_SCATTER_RMSNORM:
        break;  // run by reduce_scatter() above
    }
  }
}

}  // namespace tpcoll::cpu
