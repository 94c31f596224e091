// The CUDA communicator's fallback engine: NCCL, for what our kernels do not
// serve (TPCOLL_DISABLE=1, TPCOLL_ALGO=fallback, more ranks than kMaxRanks).
// NCCL refuses two ranks on one GPU, so creation fails, naming the ranks,
// when ranks share a GPU. NCCL reduces in its own order: for three or more
// ranks its sums may differ in the last bit from our kernels' rank order.
#pragma once

#include "core/backend.hpp"
#include "cuda/device_block.hpp"
#include "nccl/nccl_comm.hpp"
#include "nccl/nccl_library.hpp"

#include <cstddef>

namespace tpcoll {
class Bootstrap;
}

namespace tpcoll::nccl {

class NcclBackend final : public Backend {
 public:
  // Collective over the bootstrap's ranks. staging_bytes bounds the scratch
  // that an all-gather along an inner dimension goes through.
  NcclBackend(Bootstrap& bootstrap, int device, std::size_t staging_bytes, std::int64_t timeout_ms);
  ~NcclBackend() override;
  NcclBackend(const NcclBackend&) = delete;
  NcclBackend& operator=(const NcclBackend&) = delete;

  void run(const Call& call, const Plan& plan, const Buffers& buffers) override;
  void raise_async_error() const override;
  // ncclCommAbort (once): this rank's NCCL work stops, and every later call
  // on it fails with TPCOLL_ABORTED (nccl_comm.hpp).
  void abort() override;

 private:
  void all_gather(const Call& call, const Buffers& buffers);

  const Library& lib_;
  int world_;
  int device_;
  // world x part of a row chunk, for gathers along an inner dim. Before
  // comm_: freed after it, once no NCCL work can still write it.
  cuda::DeviceBlock scratch_;
  Comm comm_;
};

}  // namespace tpcoll::nccl
