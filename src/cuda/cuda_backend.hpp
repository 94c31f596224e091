// The CUDA backend: each rank owns one device buffer (signals + staging),
// mapped into every peer: through CUDA IPC across processes, as a plain
// device pointer within one. Several ranks may share one GPU.
#pragma once

#include "common/fp8_quantise.hpp"
#include "core/backend.hpp"
#include "cuda/device_block.hpp"
#include "cuda/kernels/layout.cuh"
#include "cuda/kernels/row_limits.hpp"
#include "cuda/norm_launch.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace tpcoll {
class Bootstrap;
}

namespace tpcoll::cuda {

struct KernelChoice;  // launch.hpp

// TPCOLL_DEVICE: unset or "cpu" -> TPCOLL_DEVICE_CPU; "auto" -> the local
// rank modulo the number of visible GPUs; else an ordinal.
int device_from_env();

// Loads every tpcoll kernel on `device` (see load_kernels in launch.hpp):
// before any of them can spin.
void load_kernels_on(int device);

// Throws TPCOLL_INVALID_ARGUMENT unless p is device (or managed) memory on `device`.
void check_device_pointer(const void* p, const char* name, int device);

// Throws TPCOLL_INVALID_ARGUMENT unless the FP8 output's buffers (if any) are on `device`.
void check_fp8_pointers(const fp8::Fp8Output& fp8, int device);

// Whether kernels on `device` may start while the previous one of their
// stream ends: TPCOLL_CUDA_EARLY_LAUNCH, on sm_90 and newer.
bool early_launch_enabled(int device);

// How the add + RMSNorm kernels launch on `device`.
NormLaunch norm_launch_on(int device);

// The local add + RMSNorm on `device` (no communication), enqueued on
// `stream`. x_is_scratch: x is cuda::ScratchRows memory, not checked (see
// Buffers::out_is_scratch).
void add_rmsnorm(int device, const NormLaunch& launch, tpcoll_dtype_t dtype, const RmsNormRows& args, void* stream,
                 bool x_is_scratch = false);

// The FP8 output of the fused op's out rows on `device` (common/fp8_quantise.hpp), enqueued on `stream`.
void quantise_fp8(int device, const NormLaunch& launch, tpcoll_dtype_t dtype, const void* out, std::size_t rows,
                  std::size_t hidden, const fp8::Fp8Output& fp8, void* stream);

// Device memory of `bytes` (none for 0) for one call: the communicator's
// block for the reduced rows of FP8 calls that pass no out, when they fit in
// it (one block serves every call: a communicator's ops run one after
// another, StreamOrder ordering each after the previous one whatever its
// stream); else allocated and freed in `stream`'s order
// (eagerly, and under graph capture as the graph's own allocation nodes,
// which cost a replay about a microsecond each: only calls larger than the
// block pay that).
class ScratchRows {
 public:
  ScratchRows(const DeviceBlock& block, std::size_t bytes, void* stream);
  ~ScratchRows();
  ScratchRows(const ScratchRows&) = delete;
  ScratchRows& operator=(const ScratchRows&) = delete;
  void* data() const { return data_; }

 private:
  void* data_ = nullptr;
  bool allocated_ = false;  // by cudaMallocAsync, freed by the destructor
  void* stream_;
};

// Whether the MPS control daemon runs (its pipe exists): processes sharing a
// GPU need it, or every wait for a peer takes a time slice (milliseconds).
bool mps_running();

class CudaBackend final : public Backend {
 public:
  // Collective over the bootstrap's ranks. chunk_bytes bounds one kernel's
  // per-rank message; larger messages run in chunks.
  CudaBackend(Bootstrap& bootstrap, int device, std::size_t chunk_bytes, std::int64_t timeout_ms);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  // Why CUDA IPC failed between two of the ranks (the same text on every
  // rank), or "" when every buffer is mapped. When set, the backend must not
  // run: the communicator takes the NCCL path or fails.
  const std::string& ipc_unavailable() const { return ipc_unavailable_; }
  // Whether two or more ranks share a GPU (then NCCL cannot serve them).
  bool ranks_share_gpu() const { return shares_gpu_; }

  void run(const Call& call, const Plan& plan, const Buffers& buffers) override;
  // Throws what a kernel of this rank reported (a peer timed out or ran
  // another call), if anything: errors of enqueued work arrive late.
  void raise_async_error() const override;
  // Writes this rank into every rank's Signals::aborted_by: each kernel that
  // waits for a peer, on any rank, stops and reports TPCOLL_ABORTED.
  void abort() override;

  // Blocks per rank for a chunk: a pure function of its size and the world
  // size, so every rank launches the same shape; small enough that every
  // rank's blocks fit on one GPU at once (a spinning block must never wait
  // for a block that cannot be scheduled).
  static int blocks_for(std::size_t chunk_bytes, int world);
  // The same for the low-latency kernel, whose units carry 8 bytes in 16;
  // each block has one thread per unit.
  static int low_latency_blocks(std::size_t bytes, int world);

  // The one-shot fused kernel holds a row in registers (row_limits.hpp).
  static constexpr std::size_t kFusedMaxHidden =
      std::size_t{kHeldThreads} * kFusedGroupsPerThread * numerics::kNormGroup;
  // Bytes of the one-shot fused kernel's low-latency message for a call:
  // every row takes kHeldThreads threads' groups, padding included.
  static std::size_t fused_low_latency_bytes(const Call& call);
  // Blocks of the one-shot fused kernel: one per row, as many as fit.
  static int fused_low_latency_blocks(std::size_t rows, int world);

  // Whether a fused kernel serves this call by `algo` (one-shot: the
  // low-latency kernel; two-shot: the staged one); else the communicator runs
  // our all-reduce, then our add + RMSNorm, and run() never sees the call.
  bool fused_fits(const Call& call, tpcoll_algo_t algo, const Buffers& buffers) const;


 private:
  void all_reduce(const Call& call, const Plan& plan, const Buffers& buffers) const;
  void all_gather(const Call& call, const Plan& plan, const Buffers& buffers) const;
  void reduce_scatter(const Call& call, const Plan& plan, const Buffers& buffers) const;
  void fused(const Call& call, const Plan& plan, const Buffers& buffers) const;
  // Peers, limits and the call tag, which also covers this rank's kernel
  // variant (`variant`: bits of its choice that depend on alignment).
  void fill_peer_args(PeerArgs& args, const Call& call, const Plan& plan, std::uint64_t variant) const;
  void size_low_latency(std::size_t bytes, int& blocks, int& threads) const;
  // The kernel of an all-reduce or reduce-scatter: low-latency units when
  // the buffers are vectorized and `low_latency_bytes` (kNoLowLatency: never)
  // fit in the low-latency area, else staged blocks.
  static constexpr std::size_t kNoLowLatency = static_cast<std::size_t>(-1);
  KernelChoice reduction_choice(const Call& call, const Plan& plan, bool vectorized,
                                std::size_t low_latency_bytes) const;
  // Its part of the call tag: ranks must run the same kernel and launch shape.
  static std::uint64_t reduction_variant(const KernelChoice& choice);

  int rank_;
  int world_;
  int device_;
  BufferLayout layout_;
  std::uint64_t timeout_ns_;
  std::size_t low_latency_bytes_;  // TPCOLL_CUDA_LOW_LATENCY_BYTES, at most kLowLatencyBytes
  bool early_launch_ = false;      // early_launch_enabled(device_)
  std::byte* buffer_ = nullptr;               // this rank's buffer
  std::vector<std::byte*> peers_;             // every rank's buffer, as mapped here
  std::vector<void*> opened_;                 // IPC mappings to close
  FailureReport* failure_host_ = nullptr;     // host-mapped: what the kernels report
  FailureReport* failure_device_ = nullptr;
  bool one_gpu_ = false;  // every rank on this GPU: GPU-scope signals suffice
  bool shares_gpu_ = false;
  std::string ipc_unavailable_;
};

}  // namespace tpcoll::cuda
