// Protocol, per step k (one chunk of one op; k grows forever and is the same
// on every rank, so nothing is ever reset and a late reader cannot confuse two
// steps). Each rank owns two slots, used by alternate steps:
//   1. copy my chunk into slot k % 2, write my call's signature and its hash,
//      release `posted` = k;
//   2. acquire every peer's `posted` >= k and compare its call hash with mine
//      (a different call is an error here, before any output is written);
//   3. one-shot: reduce every rank's chunk in rank order into my output.
//      two-shot: reduce my share into my slot's result area, release
//      `reduced` = k, acquire every peer's `reduced` >= k, copy the shares.
// Reusing slot k % 2 at step k needs every peer to be done with step k-2,
// which a peer is once it posted k-1: that was seen in step 2 of step k-1,
// so no separate "consumed" handshake (and no extra cache miss) is needed.
#include "cpu/shm_backend.hpp"

#include "bootstrap/bootstrap.hpp"
#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/signature.hpp"
#include "cpu/gather_layout.hpp"
#include "cpu/kernels.hpp"
#include "cpu/wait.hpp"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <optional>
#include <cstring>
#include <random>
#include <vector>

namespace tpcoll::cpu {

namespace {
constexpr int kSlots = 2;
constexpr std::size_t kPage = 4096;

std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }

// A two-shot share: [lo, hi) of `total` units for `rank`, `align` units at a time.
using Share = ShmBackend::ByteRange;
Share share_of(std::size_t total, int world, int rank, std::size_t align) {
  const std::size_t per = round_up((total + world - 1) / world, align);
  const std::size_t lo = std::min(total, per * rank);
  return {lo, std::min(total, lo + per)};
}

std::string unique_segment_name() {
  static std::atomic<unsigned> counter{0};
  std::random_device rd;
  return fmt::format("/tpcoll-{}-{}-{:08x}", ::getpid(), counter++, rd());
}
}  // namespace

// Per rank. Words written by one rank and polled by the others each get a
// cache line; the call hash shares `posted`'s line so that arrival and the
// mismatch check cost one cache miss.
struct ShmBackend::Control {
  alignas(64) std::uint64_t posted;  // my slot holds step `posted`'s input
  std::uint64_t call_hash[kSlots];   // hash of the call of the step in each slot
  alignas(64) std::uint64_t reduced; // my result area holds step `reduced`'s share
  alignas(64) CallSignature signature[kSlots];  // read only to report a mismatch
};

// One step of the protocol above, from this rank's side.
class ShmBackend::Step {
 public:
  Step(ShmBackend& backend, const CallSignature& call, std::uint64_t call_hash)
      : b_(backend), sig_(call), hash_(call_hash) {
    k_ = ++b_.step_;
    sig_.step = k_;
    if (k_ > 1) await(&Control::posted, k_ - 1, "finish");  // normally already seen
  }

  std::uint64_t k() const { return k_; }

  void post() {
    Control& mine = b_.control(b_.rank_);
    mine.signature[k_ % kSlots] = sig_;
    mine.call_hash[k_ % kSlots] = hash_;
    store_release(mine.posted, k_);
  }

  void await_posted() {
    await(&Control::posted, k_, "arrive at");
    for (int p = 0; p < b_.world_; ++p) {
      const Control& theirs = b_.control(p);
      // Every rank sees the same disagreement at this same step and stops
      // there, so the communicator stays usable.
      if (theirs.call_hash[k_ % kSlots] != hash_) fail_mismatch(b_.rank_, sig_, p, theirs.signature[k_ % kSlots]);
    }
  }

  void share_reduced() { store_release(b_.control(b_.rank_).reduced, k_); }
  void await_reduced() { await(&Control::reduced, k_, "reduce its share of"); }

 private:
  void await(std::uint64_t Control::*word, std::uint64_t target, const char* what) {
    for (int p = 0; p < b_.world_; ++p) {
      if (p == b_.rank_) continue;
      std::uint64_t& seen = word == &Control::posted ? b_.seen_posted_[p] : b_.seen_reduced_[p];
      if (seen >= target) continue;
      wait_at_least(b_.control(p).*word, target, b_.timeout_ms_, [&] {
        fail(TPCOLL_TIMEOUT, "rank {}: peer {} timed out: it did not {} {} (step {}) within {} ms", b_.rank_, p, what,
             describe(sig_), target, b_.timeout_ms_);
      });
      seen = target;
    }
  }

  ShmBackend& b_;
  CallSignature sig_;
  std::uint64_t hash_;
  std::uint64_t k_ = 0;
};

ShmBackend::ShmBackend(Bootstrap& bootstrap, std::size_t staging_bytes, std::int64_t timeout_ms)
    : rank_(bootstrap.rank()),
      world_(bootstrap.world()),
      staging_bytes_(staging_bytes),
      timeout_ms_(timeout_ms),
      segment_([&] {
        const std::size_t control_bytes = round_up(sizeof(Control) * world_, kPage);
        const std::size_t bytes = control_bytes + static_cast<std::size_t>(world_) * kSlots * 2 * staging_bytes;
        // Rank 0 creates and names the segment; an empty name tells the
        // others that it failed, so every rank fails together.
        std::array<char, 64> name{};
        std::string error;
        std::optional<ShmSegment> created;
        if (bootstrap.rank() == 0) {
          const std::string n = unique_segment_name();
          try {
            created.emplace(ShmSegment::create(n, bytes));
            std::memcpy(name.data(), n.data(), n.size());
          } catch (const Error& e) {
            error = e.what();
          }
        }
        std::vector<char> names(name.size() * world_);
        bootstrap.all_gather(name.data(), names.data(), name.size());
        if (names[0] == '\0') fail(TPCOLL_SYSTEM_ERROR, "rank 0 could not create shared memory: {}", error);
        std::optional<ShmSegment> attached = std::move(created);
        char ok = 1;
        if (!attached) {
          try {
            attached.emplace(ShmSegment::open(std::string(names.data()), bytes));
          } catch (const Error& e) {
            error = e.what();
            ok = 0;
          }
        }
        std::vector<char> oks(world_);
        bootstrap.all_gather(&ok, oks.data(), 1);  // everyone attached (or knows who did not)
        if (bootstrap.rank() == 0 && attached) attached->unlink();
        for (int r = 0; r < world_; ++r)
          if (!oks[r]) fail(TPCOLL_SYSTEM_ERROR, "rank {} could not attach shared memory {}{}", r, names.data(),
                            error.empty() ? "" : ": " + error);
        return std::move(*attached);
      }()) {
  data_ = segment_.data() + round_up(sizeof(Control) * world_, kPage);
  seen_posted_.assign(world_, 0);
  seen_reduced_.assign(world_, 0);
}

ShmBackend::Control& ShmBackend::control(int rank) const {
  return reinterpret_cast<Control*>(segment_.data())[rank];
}

std::byte* ShmBackend::input(int rank, std::uint64_t step) const {
  const std::size_t slot = static_cast<std::size_t>(rank) * kSlots + step % kSlots;
  return data_ + slot * 2 * staging_bytes_;
}

std::byte* ShmBackend::result(int rank, std::uint64_t step) const { return input(rank, step) + staging_bytes_; }

void ShmBackend::run(const Call& call, const Plan& plan, const Buffers& buffers) {
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
    }
  }
}

void ShmBackend::stage(const Step& step, const std::byte* src, std::size_t length, ByteRange local_only) {
  std::byte* slot = input(rank_, step.k());
  std::memcpy(slot, src, local_only.lo);
  std::memcpy(slot + local_only.hi, src + local_only.hi, length - local_only.hi);
}

void ShmBackend::all_reduce_chunk(Step& step, const Call& call, tpcoll_algo_t algo, std::size_t offset,
                                  std::size_t length, const Buffers& buffers) {
  const std::size_t elem = dtype_size(call.dtype);
  const std::size_t count = length / elem;
  const auto* in = static_cast<const std::byte*>(buffers.in) + offset;
  auto* out = static_cast<std::byte*>(buffers.out) + offset;
  // Two-shot shares are 64-byte multiples so that vectors stay aligned. Only
  // what peers read is staged: my own share I reduce from the caller's buffer.
  const bool oneshot = algo == TPCOLL_ALGO_ONESHOT;
  const std::size_t align = 64 / elem;
  const Share mine = oneshot ? Share{0, count} : share_of(count, world_, rank_, align);
  stage(step, in, length, oneshot ? Share{0, 0} : Share{mine.lo * elem, mine.hi * elem});
  step.post();
  step.await_posted();

  std::array<const void*, TPCOLL_MAX_RANKS> srcs;
  for (int p = 0; p < world_; ++p) srcs[p] = (p == rank_ ? in : input(p, step.k())) + mine.lo * elem;
  if (oneshot) return reduce(call.dtype, srcs.data(), world_, out, count);

  if (mine.hi > mine.lo) reduce(call.dtype, srcs.data(), world_, result(rank_, step.k()) + mine.lo * elem, mine.hi - mine.lo);
  step.share_reduced();
  step.await_reduced();
  for (int p = 0; p < world_; ++p) {
    const Share s = share_of(count, world_, p, align);
    std::memcpy(out + s.lo * elem, result(p, step.k()) + s.lo * elem, (s.hi - s.lo) * elem);
  }
}

void ShmBackend::all_gather_chunk(Step& step, const Call& call, std::size_t offset, std::size_t length,
                                  const Buffers& buffers) {
  const auto* in = static_cast<const std::byte*>(buffers.in) + offset;
  stage(step, in, length, Share{0, 0});
  step.post();
  step.await_posted();
  for (int p = 0; p < world_; ++p)
    place_gathered(p == rank_ ? in : input(p, step.k()), offset, length, p, world_, call.inner_bytes,
                   static_cast<std::byte*>(buffers.out));
}

void ShmBackend::fused_chunk(Step& step, const Call& call, tpcoll_algo_t algo, std::size_t first_row,
                             std::size_t rows, const Buffers& buffers) {
  const std::size_t row_bytes = call.inner_bytes;
  const std::size_t hidden = call.hidden();
  const auto* x = static_cast<const std::byte*>(buffers.in) + first_row * row_bytes;
  const bool oneshot = algo == TPCOLL_ALGO_ONESHOT;
  const Share mine = oneshot ? Share{0, rows} : share_of(rows, world_, rank_, 1);
  stage(step, x, rows * row_bytes, oneshot ? Share{0, 0} : Share{mine.lo * row_bytes, mine.hi * row_bytes});
  step.post();
  step.await_posted();

  const auto at = [&](const void* base, std::size_t row) -> std::byte* {
    return base == nullptr ? nullptr : const_cast<std::byte*>(static_cast<const std::byte*>(base)) + row * row_bytes;
  };
  std::array<const void*, TPCOLL_MAX_RANKS> srcs;
  // One-shot writes straight into the caller's buffers; two-shot into its
  // slot's result area, laid out as [out rows | residual_out rows] of a share.
  const std::size_t share_rows = share_of(rows, world_, 0, 1).hi;
  std::byte* out_rows = oneshot ? at(buffers.out, first_row) : result(rank_, step.k());
  std::byte* residual_rows = oneshot ? at(buffers.residual_out, first_row) : out_rows + share_rows * row_bytes;
  if (mine.hi > mine.lo) {
    for (int p = 0; p < world_; ++p) srcs[p] = (p == rank_ ? x : input(p, step.k())) + mine.lo * row_bytes;
    reduce(call.dtype, srcs.data(), world_, out_rows, (mine.hi - mine.lo) * hidden);
    add_rmsnorm(call.dtype, RmsNormRows{out_rows, at(buffers.residual, first_row + mine.lo), buffers.weight, out_rows,
                                        call.has_residual ? residual_rows : nullptr, mine.hi - mine.lo, hidden,
                                        call.eps});
  }
  if (oneshot) return;

  step.share_reduced();
  step.await_reduced();
  for (int p = 0; p < world_; ++p) {
    const Share s = share_of(rows, world_, p, 1);
    const std::size_t bytes = (s.hi - s.lo) * row_bytes;
    const std::byte* area = result(p, step.k());
    std::memcpy(at(buffers.out, first_row + s.lo), area, bytes);
    if (call.has_residual) std::memcpy(at(buffers.residual_out, first_row + s.lo), area + share_rows * row_bytes, bytes);
  }
}

// Rows too large for the fused path: our all-reduce, then our add + RMSNorm
// in place, which is by construction the same arithmetic.
void ShmBackend::unfused(const Call& call, const Plan& plan, const Buffers& buffers) {
  Call reduce_call = call;
  reduce_call.op = TPCOLL_OP_ALL_REDUCE;
  const CallSignature sig = make_signature(call, TPCOLL_ALGO_UNFUSED, 0);
  const std::uint64_t hash = sig.call_hash();
  for (std::size_t offset = 0; offset < call.bytes; offset += plan.chunk_bytes) {
    Step step(*this, sig, hash);
    all_reduce_chunk(step, reduce_call, TPCOLL_ALGO_TWOSHOT, offset, std::min(plan.chunk_bytes, call.bytes - offset),
                     buffers);
  }
  add_rmsnorm(call.dtype, RmsNormRows{buffers.out, buffers.residual, buffers.weight, buffers.out,
                                      buffers.residual_out, call.rows(), call.hidden(), call.eps});
}

}  // namespace tpcoll::cpu
