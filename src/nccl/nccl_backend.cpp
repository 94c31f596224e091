#include "nccl/nccl_backend.hpp"

#include "bootstrap/bootstrap.hpp"
#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "cuda/cuda_check.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <vector>

namespace tpcoll::nccl {
namespace {

// What each rank says before NCCL is initialised: whether it could load the
// library, and its GPU, so that every rank takes the same decision.
struct RankRecord {
  std::int32_t loaded;
  char uuid[16];
  char load_error[200];
};

ncclDataType_t reduce_type(tpcoll_dtype_t dtype) {
  switch (dtype) {
    case TPCOLL_FLOAT32: return ncclFloat32;
    case TPCOLL_FLOAT16: return ncclFloat16;
    case TPCOLL_BFLOAT16: return ncclBfloat16;
    default: fail(TPCOLL_UNSUPPORTED, "NCCL all-reduce of {} is not offered", dtype_name(dtype));
  }
}

const Library& agreed_library(Bootstrap& bootstrap, int device) {
  RankRecord mine{};
  const Library* lib = nullptr;
  try {
    lib = &load_library();
    mine.loaded = 1;
  } catch (const Error& e) {
    std::snprintf(mine.load_error, sizeof mine.load_error, "%s", e.what());
  }
  cudaDeviceProp prop{};
  cuda::check_cuda(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  std::memcpy(mine.uuid, prop.uuid.bytes, sizeof mine.uuid);
  std::vector<RankRecord> all(bootstrap.world());
  bootstrap.all_gather(&mine, all.data(), sizeof mine);

  for (int r = 0; r < bootstrap.world(); ++r) {
    if (!all[r].loaded) fail(TPCOLL_UNSUPPORTED, "rank {}: {}", r, all[r].load_error);
    for (int q = 0; q < r; ++q)
      if (std::memcmp(all[q].uuid, all[r].uuid, sizeof mine.uuid) == 0)
        fail(TPCOLL_UNSUPPORTED,
             "ranks {} and {} share a GPU, which NCCL refuses, so the NCCL engine (TPCOLL_DISABLE=1, "
             "TPCOLL_ALGO=fallback or more than 8 ranks) cannot serve this communicator",
             q, r);
  }
  return *lib;
}

// Rank 0's unique id, on every rank; `device` made current for the NCCL
// initialisation that follows.
ncclUniqueId agreed_id(Bootstrap& bootstrap, const Library& lib, int device) {
  ncclUniqueId id{};
  if (bootstrap.rank() == 0) lib.check(lib.get_unique_id(&id), "ncclGetUniqueId");
  std::vector<ncclUniqueId> ids(bootstrap.world());
  bootstrap.all_gather(&id, ids.data(), sizeof id);
  cuda::check_cuda(cudaSetDevice(device), "cudaSetDevice");
  return ids[0];
}

}  // namespace

NcclBackend::NcclBackend(Bootstrap& bootstrap, int device, std::size_t staging_bytes, std::int64_t timeout_ms)
    : lib_(agreed_library(bootstrap, device)),
      world_(bootstrap.world()),
      device_(device),
      scratch_(device, staging_bytes, "allocating the NCCL gather scratch"),
      comm_(lib_, world_, agreed_id(bootstrap, lib_, device), bootstrap.rank(), timeout_ms) {
  log(LogLevel::kInfo, "init", "rank {}: NCCL {} from {} on device {}", bootstrap.rank(), lib_.version, lib_.path,
      device_);
}

// The members' destructors (NCCL's destroy, then cudaFree) run on this device.
NcclBackend::~NcclBackend() { cudaSetDevice(device_); }

void NcclBackend::raise_async_error() const { comm_.raise_async_error(); }

void NcclBackend::abort() { comm_.abort(); }

void NcclBackend::run(const Call& call, const Plan&, const Buffers& buffers) {
  raise_async_error();
  cuda::check_cuda(cudaSetDevice(device_), "cudaSetDevice");
  const auto stream = static_cast<cudaStream_t>(buffers.stream);
  switch (call.op) {
    case TPCOLL_OP_ALL_REDUCE:
      comm_.call("ncclAllReduce", [&](ncclComm_t comm) {
        return lib_.all_reduce(buffers.in, buffers.out, call.count, reduce_type(call.dtype), ncclSum, comm, stream);
      });
      return;
    case TPCOLL_OP_ALL_GATHER:
      all_gather(call, buffers);
      return;
    case TPCOLL_OP_REDUCE_SCATTER:
      // NCCL's own order of summation: the fallback engine promises no bits.
      comm_.call("ncclReduceScatter", [&](ncclComm_t comm) {
        return lib_.reduce_scatter(buffers.in, buffers.out, call.count / world_, reduce_type(call.dtype), ncclSum, comm,
                                   stream);
      });
      return;
    default:
      fail(TPCOLL_UNSUPPORTED, "{} is not yet implemented on the CUDA backend", op_name(call.op));
  }
}

// The output is [outer, world, inner]: NCCL writes [world, outer, inner], so
// gathers along an inner dim go through the scratch in pieces (whole rows
// when world rows fit, else column ranges of one row, which are contiguous in
// the input) and are scattered into place by 2-D copies.
void NcclBackend::all_gather(const Call& call, const Buffers& buffers) {
  const auto stream = static_cast<cudaStream_t>(buffers.stream);
  const auto* in = static_cast<const std::byte*>(buffers.in);
  auto* out = static_cast<std::byte*>(buffers.out);
  const std::size_t inner = call.inner_bytes;
  if (call.outer == 1 || call.bytes == 0) {
    comm_.call("ncclAllGather",
               [&](ncclComm_t comm) { return lib_.all_gather(in, out, call.bytes, ncclUint8, comm, stream); });
    return;
  }
  const std::size_t per_rank = scratch_.bytes() / world_;
  const std::size_t width = std::min(inner, per_rank);
  const std::size_t rows = width == inner ? std::max<std::size_t>(1, per_rank / inner) : 1;
  for (std::size_t row = 0; row < call.outer; row += rows) {
    const std::size_t height = std::min(rows, call.outer - row);
    for (std::size_t column = 0; column < inner; column += width) {
      const std::size_t w = std::min(width, inner - column);
      const std::size_t piece = height * w;
      comm_.call("ncclAllGather", [&](ncclComm_t comm) {
        return lib_.all_gather(in + row * inner + column, scratch_.data(), piece, ncclUint8, comm, stream);
      });
      for (int r = 0; r < world_; ++r)
        cuda::check_cuda(cudaMemcpy2DAsync(out + (row * world_ + r) * inner + column, world_ * inner,
                                           static_cast<const std::byte*>(scratch_.data()) + r * piece, w, w, height,
                                           cudaMemcpyDeviceToDevice, stream),
                         "scattering the gathered rows");
    }
  }
}

}  // namespace tpcoll::nccl
