#include "tools/check.hpp"

#include "core/call.hpp"
#include "core/config.hpp"
#include "core/error.hpp"
#include "core/dtype.hpp"
#include "core/tune_table.hpp"
#include "cuda/cuda_backend.hpp"
#include "cuda/kernels/layout.cuh"
#include "nccl/nccl_library.hpp"
#include "tools/nvlink.hpp"

#include <cuda_runtime.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstdlib>
#include <limits>
#include <map>
#include <optional>
#include <thread>
#include <vector>

namespace tpcoll::tools {
namespace {

int p2p_attribute(cudaDeviceP2PAttr attr, int from, int to) {
  int value = 0;
  if (cudaDeviceGetP2PAttribute(&value, attr, from, to) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return value;
}

}  // namespace

int check(int ranks) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    cudaGetLastError();
    fmt::print("GPUs: none usable: tpcoll runs the CPU shared-memory backend ({} cores).\n",
               std::thread::hardware_concurrency());
    fmt::print("CPU staging: {} B per rank ({})\n", env::kCpuBufferBytes.as_int(), env::kCpuBufferBytes.name);
    return 0;
  }
  fmt::print("GPUs: {}\n", devices);
  for (int d = 0; d < devices; ++d) {
    cudaDeviceProp p{};
    cudaGetDeviceProperties(&p, d);
    const std::optional<int> links = active_nvlinks(d);
    fmt::print("  {}: {}, {} SMs, {:.0f} GiB, PCI {:02x}:{:02x}, {}\n", d, p.name, p.multiProcessorCount,
               static_cast<double>(p.totalGlobalMem) / (1u << 30), p.pciBusID, p.pciDeviceID,
               links ? fmt::format("{} active NVLink link(s)", *links) : std::string("NVLink unknown (no NVML)"));
  }
  if (devices > 1) {
    fmt::print("peer access (access / native atomics / performance rank; NVLink ranks above PCIe):\n");
    for (int a = 0; a < devices; ++a)
      for (int b = 0; b < devices; ++b)
        if (a != b)
          fmt::print("  {} -> {}: {} / {} / {}\n", a, b, p2p_attribute(cudaDevP2PAttrAccessSupported, a, b),
                     p2p_attribute(cudaDevP2PAttrNativeAtomicSupported, a, b),
                     p2p_attribute(cudaDevP2PAttrPerformanceRank, a, b));
  }

  // Placement of `ranks` processes with TPCOLL_DEVICE=auto: local rank modulo the GPUs.
  std::map<int, std::vector<int>> by_gpu;
  for (int r = 0; r < ranks; ++r) by_gpu[r % devices].push_back(r);
  const bool shared = ranks > devices;
  fmt::print("{} ranks (TPCOLL_DEVICE=auto):", ranks);
  for (const auto& [gpu, rs] : by_gpu) fmt::print(" GPU {} <- ranks {};", gpu, fmt::join(rs, ","));
  fmt::print("\n");
  const bool mps = cuda::mps_running();
  fmt::print("MPS daemon: {}\n", mps ? "running" : "not running");
  if (shared && !mps)
    fmt::print("WARNING: ranks share a GPU; as separate processes they need MPS or every wait takes "
               "milliseconds. Start it: nvidia-cuda-mps-control -d (or use ranks as streams of one process, "
               "tpcoll_comm_create_local)\n");
  const auto staging = static_cast<std::size_t>(env::kCudaBufferBytes.as_int());
  const cuda::BufferLayout layout{staging, ranks};
  fmt::print("staging: {} B chunk per rank ({}), {} B of device memory per rank\n", staging,
             env::kCudaBufferBytes.name, layout.total());
  fmt::print("signals: {} scope ({})\n", by_gpu.size() == 1 ? "GPU" : "system",
             by_gpu.size() == 1 ? "every rank on one GPU" : "ranks on several GPUs");
  cudaDeviceProp rank0_gpu{};  // rank 0's GPU's model picks the built-in rows
  cudaGetDeviceProperties(&rank0_gpu, by_gpu.begin()->first);
  const TuneTable& table = builtin_cuda_table(gpu_model(rank0_gpu.name));
  fmt::print("algorithms: table {} ({}):\n", table.name, table.source);
  for (const TableRow& row : table.rows)
    fmt::print("  {} {}{}: {} up to {}\n", op_name(row.op),
               row.dtype == kAnyDtype ? "any dtype" : dtype_name(static_cast<tpcoll_dtype_t>(row.dtype)),
               row.hidden == kAnyHidden ? std::string() : fmt::format(" hidden {}", row.hidden), algo_name(row.algo),
               row.max_bytes == std::numeric_limits<std::size_t>::max() ? std::string("any size")
                                                                         : fmt::format("{} B", row.max_bytes));
  fmt::print("one-shot messages up to {} B travel in low-latency units ({})\n",
             std::min<std::int64_t>(env::kCudaLowLatencyBytes.as_int(), cuda::kLowLatencyBytes),
             env::kCudaLowLatencyBytes.name);
  try {
    const nccl::Library& lib = nccl::load_library();
    fmt::print("NCCL: {} ({}): the engine for TPCOLL_DISABLE=1, TPCOLL_ALGO=fallback and more than {} ranks{}\n",
               lib.version, lib.path, cuda::kMaxRanks, shared ? "; not for these ranks, which share a GPU" : "");
  } catch (const tpcoll::Error& e) {
    fmt::print("NCCL: not available: {}\n", e.what());
  }
  if (ranks > cuda::kMaxRanks)
    fmt::print("{} ranks exceed the {} the CUDA kernels serve: every op takes NCCL\n", ranks, cuda::kMaxRanks);
  return 0;
}

}  // namespace tpcoll::tools
