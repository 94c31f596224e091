// The ops of the shared-memory backend, one chunk (one protocol step) at a time.
#include "core/dtype.hpp"
#include "core/signature.hpp"
#include "cpu/gather_layout.hpp"
#include "cpu/kernels.hpp"
#include "cpu/shm_backend.hpp"
#include "cpu/shm_step.hpp"

#include <algorithm>
#include <cstring>

namespace tpcoll::cpu {
namespace {

using Share = ShmBackend::ByteRange;

// A two-shot share: [lo, hi) of `total` units for `rank`, `align` units at a time.
Share share_of(std::size_t total, int world, int rank, std::size_t align) {
  const std::size_t per = (total + world - 1) / world;
  const std::size_t aligned = (per + align - 1) / align * align;
  const std::size_t lo = std::min(total, aligned * rank);
  return {lo, std::min(total, lo + aligned)};
}

std::byte* row_at(const void* base, std::size_t row, std::size_t row_bytes) {
  return base == nullptr ? nullptr : const_cast<std::byte*>(static_cast<const std::byte*>(base)) + row * row_bytes;
}

}  // namespace

void ShmBackend::all_reduce_chunk(Step& step, const Call& call, tpcoll_algo_t algo, std::size_t offset,
                                  std::size_t length, const Buffers& buffers) {
  const std::size_t elem = dtype_size(call.dtype);
  const std::size_t count = length / elem;
  const auto* in = static_cast<const std::byte*>(buffers.in) + offset;
  auto* out = static_cast<std::byte*>(buffers.out) + offset;
  std::array<const void*, TPCOLL_MAX_RANKS> srcs;
  if (algo == TPCOLL_ALGO_ONESHOT) {
    ChunkPointers chunks;
    exchange(step, in, length, chunks);
    std::copy_n(chunks.begin(), world_, srcs.begin());
    return reduce(call.dtype, srcs.data(), world_, out, count);
  }
  // Two-shot shares are 64-byte multiples so that vectors stay aligned. My
  // own share is read from the caller's buffer, so it is not staged.
  const std::size_t align = 64 / elem;
  const Share mine = share_of(count, world_, rank_, align);
  publish_except(step, in, length, Share{mine.lo * elem, mine.hi * elem});
  for (int p = 0; p < world_; ++p) srcs[p] = (p == rank_ ? in : input(p, step.k())) + mine.lo * elem;
  if (mine.hi > mine.lo)
    reduce(call.dtype, srcs.data(), world_, result(rank_, step.k()) + mine.lo * elem, mine.hi - mine.lo);
  step.share_reduced();
  step.await_reduced();
  for (int p = 0; p < world_; ++p) {
    const Share s = share_of(count, world_, p, align);
    std::memcpy(out + s.lo * elem, result(p, step.k()) + s.lo * elem, (s.hi - s.lo) * elem);
  }
}

void ShmBackend::all_gather_chunk(Step& step, const Call& call, std::size_t offset, std::size_t length,
                                  const Buffers& buffers) {
  ChunkPointers chunks;
  exchange(step, static_cast<const std::byte*>(buffers.in) + offset, length, chunks);
  for (int p = 0; p < world_; ++p)
    place_gathered(chunks[p], offset, length, p, world_, call.inner_bytes, static_cast<std::byte*>(buffers.out));
}

void ShmBackend::fused_chunk(Step& step, const Call& call, tpcoll_algo_t algo, std::size_t first_row,
                             std::size_t rows, const Buffers& buffers) {
  const std::size_t row_bytes = call.inner_bytes;
  const std::size_t hidden = call.hidden();
  const auto* x = static_cast<const std::byte*>(buffers.in) + first_row * row_bytes;
  const bool oneshot = algo == TPCOLL_ALGO_ONESHOT;
  const Share mine = oneshot ? Share{0, rows} : share_of(rows, world_, rank_, 1);
  std::array<const void*, TPCOLL_MAX_RANKS> srcs;
  if (oneshot) {
    ChunkPointers chunks;
    exchange(step, x, rows * row_bytes, chunks);
    std::copy_n(chunks.begin(), world_, srcs.begin());
  } else {
    publish_except(step, x, rows * row_bytes, Share{mine.lo * row_bytes, mine.hi * row_bytes});
    for (int p = 0; p < world_; ++p) srcs[p] = (p == rank_ ? x : input(p, step.k())) + mine.lo * row_bytes;
  }

  // One-shot writes straight into the caller's buffers; two-shot into its
  // slot's result area, laid out as [out rows | residual_out rows] of a share.
  const std::size_t share_rows = share_of(rows, world_, 0, 1).hi;
  std::byte* out_rows = oneshot ? row_at(buffers.out, first_row, row_bytes) : result(rank_, step.k());
  std::byte* residual_rows =
      oneshot ? row_at(buffers.residual_out, first_row, row_bytes) : out_rows + share_rows * row_bytes;
  if (mine.hi > mine.lo) {
    reduce(call.dtype, srcs.data(), world_, out_rows, (mine.hi - mine.lo) * hidden);
    add_rmsnorm(call.dtype, RmsNormRows{out_rows, row_at(buffers.residual, first_row + mine.lo, row_bytes),
                                        buffers.weight, out_rows, call.has_residual ? residual_rows : nullptr,
                                        mine.hi - mine.lo, hidden, call.eps});
  }
  if (oneshot) return;

  step.share_reduced();
  step.await_reduced();
  for (int p = 0; p < world_; ++p) {
    const Share s = share_of(rows, world_, p, 1);
    const std::size_t bytes = (s.hi - s.lo) * row_bytes;
    const std::byte* area = result(p, step.k());
    std::memcpy(row_at(buffers.out, first_row + s.lo, row_bytes), area, bytes);
    if (call.has_residual)
      std::memcpy(row_at(buffers.residual_out, first_row + s.lo, row_bytes), area + share_rows * row_bytes, bytes);
  }
}

void ShmBackend::reduce_scatter_chunk(Step& step, const Call& call, std::size_t offset, std::size_t length,
                                      const Buffers& buffers) {
  const std::size_t share = call.bytes / static_cast<std::size_t>(world_);
  const auto* in = static_cast<const std::byte*>(buffers.in) + offset;
  // Piece p of my slot is rank p's part of this step; my own is read from the
  // caller's buffer, so it is not staged.
  std::byte* slot = input(rank_, step.k());
  for (int p = 0; p < world_; ++p)
    if (p != rank_) std::memcpy(slot + p * length, in + p * share, length);
  step.post();
  step.await_posted();
  std::array<const void*, TPCOLL_MAX_RANKS> srcs;
  for (int p = 0; p < world_; ++p) srcs[p] = p == rank_ ? in + rank_ * share : input(p, step.k()) + rank_ * length;
  // In place, out is srcs[rank_] itself, which reduce() allows.
  reduce(call.dtype, srcs.data(), world_, static_cast<std::byte*>(buffers.out) + offset,
         length / dtype_size(call.dtype));
}

// The fused one then normalises its share of the rows in place: our add +
// RMSNorm, as the full fused op's unfused path runs it.
void ShmBackend::reduce_scatter(const Call& call, const Plan& plan, const Buffers& buffers) {
  const CallSignature sig = make_signature(call, plan.algo, 0);
  const std::uint64_t hash = sig.call_hash();
  const std::size_t share = call.bytes / static_cast<std::size_t>(world_);
  const std::size_t piece = plan.chunk_bytes / static_cast<std::size_t>(world_);
  for (std::size_t offset = 0; offset < share; offset += piece) {
    Step step(*this, sig, hash);
    reduce_scatter_chunk(step, call, offset, std::min(piece, share - offset), buffers);
  }
  if (call.op == TPCOLL_OP_FUSED_REDUCE_SCATTER_RMSNORM)
    add_rmsnorm(call.dtype, RmsNormRows{buffers.out, buffers.residual, buffers.weight, buffers.out,
                                        buffers.residual_out, call.rows() / static_cast<std::size_t>(world_),
                                        call.hidden(), call.eps});
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
