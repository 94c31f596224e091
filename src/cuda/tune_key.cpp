#include "cuda/tune_key.hpp"

#include "core/plan.hpp"
#include "cuda/cuda_check.hpp"

#include <tpcoll/tpcoll.h>

#include <fmt/format.h>

#include <cstring>

namespace tpcoll::cuda {
namespace {

// CUDA's integer versions (12040) as "12.4".
std::string cuda_version(int v) { return fmt::format("{}.{}", v / 1000, v % 1000 / 10); }

}  // namespace

TuneKey tune_key(int device, int world, bool ranks_share_gpu) {
  cudaDeviceProp prop{};
  check_cuda(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  int driver = 0, runtime = 0;
  check_cuda(cudaDriverGetVersion(&driver), "cudaDriverGetVersion");
  check_cuda(cudaRuntimeGetVersion(&runtime), "cudaRuntimeGetVersion");
  return TuneKey{kCudaBackend, prop.name, world, ranks_share_gpu ? "ranks sharing one GPU" : "one GPU per rank",
                 fmt::format("CUDA driver {}, runtime {}, tpcoll {}.{}.{}", cuda_version(driver),
                             cuda_version(runtime), TPCOLL_VERSION_MAJOR, TPCOLL_VERSION_MINOR, TPCOLL_VERSION_PATCH)};
}

std::array<unsigned char, 16> device_uuid(int device) {
  cudaDeviceProp prop{};
  check_cuda(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  std::array<unsigned char, 16> uuid{};
  static_assert(sizeof prop.uuid.bytes == 16);
  std::memcpy(uuid.data(), prop.uuid.bytes, uuid.size());
  return uuid;
}

}  // namespace tpcoll::cuda
