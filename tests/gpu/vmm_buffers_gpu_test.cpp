// Issue 18, item 5 (vllm#42609: IPC failed with PyTorch's
// expandable_segments): caller buffers from virtual-memory mappings
// (cuMemCreate + cuMemAddressReserve + cuMemMap + cuMemSetAccess, what
// PyTorch uses with expandable_segments:True) serve every op, eagerly and
// captured. tpcoll has no zero-copy mode: caller buffers are only read and
// written by the rank's own kernels, never exported, so no IPC of them is
// needed. The driver API is reached through the runtime's entry-point query,
// so the binary does not link libcuda (CI machines have none). Two ranks as
// streams of this process on GPU 0.
#include "local_job.hpp"
#include "op_mix.hpp"

#include <cuda.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <vector>

namespace {

template <typename Fn>
Fn* driver_entry(const char* name) {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found{};
  if (cudaGetDriverEntryPointByVersion(name, &fn, 12000, cudaEnableDefault, &found) != cudaSuccess ||
      found != cudaDriverEntryPointSuccess)
    return nullptr;
  return reinterpret_cast<Fn*>(fn);
}

// Device memory made the way expandable segments make it: a physical
// allocation mapped into a reserved virtual range, one per buffer.
class VirtualMemory {
 public:
  VirtualMemory()
      : create_(driver_entry<decltype(cuMemCreate)>("cuMemCreate")),
        release_(driver_entry<decltype(cuMemRelease)>("cuMemRelease")),
        reserve_(driver_entry<decltype(cuMemAddressReserve)>("cuMemAddressReserve")),
        free_(driver_entry<decltype(cuMemAddressFree)>("cuMemAddressFree")),
        map_(driver_entry<decltype(cuMemMap)>("cuMemMap")),
        unmap_(driver_entry<decltype(cuMemUnmap)>("cuMemUnmap")),
        set_access_(driver_entry<decltype(cuMemSetAccess)>("cuMemSetAccess")),
        granularity_(driver_entry<decltype(cuMemGetAllocationGranularity)>("cuMemGetAllocationGranularity")) {
    prop_.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop_.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop_.location.id = 0;
    if (usable() && granularity_(&step_, &prop_, CU_MEM_ALLOC_GRANULARITY_MINIMUM) != CUDA_SUCCESS) step_ = 0;
  }
  ~VirtualMemory() {
    cudaDeviceSynchronize();
    for (const Mapping& m : mappings_) {
      unmap_(m.address, m.bytes);
      release_(m.handle);
      free_(m.address, m.bytes);
    }
  }
  VirtualMemory(const VirtualMemory&) = delete;
  VirtualMemory& operator=(const VirtualMemory&) = delete;

  bool usable() const {
    return create_ && release_ && reserve_ && free_ && map_ && unmap_ && set_access_ && granularity_;
  }

  // nullptr on failure.
  void* allocate(std::size_t bytes) {
    if (step_ == 0) return nullptr;
    bytes = (bytes + step_ - 1) / step_ * step_;
    Mapping m{0, 0, bytes};
    if (create_(&m.handle, bytes, &prop_, 0) != CUDA_SUCCESS) return nullptr;
    if (reserve_(&m.address, bytes, 0, 0, 0) != CUDA_SUCCESS || map_(m.address, bytes, 0, m.handle, 0) != CUDA_SUCCESS) {
      release_(m.handle);
      return nullptr;
    }
    CUmemAccessDesc access{};
    access.location = prop_.location;
    access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    if (set_access_(m.address, bytes, &access, 1) != CUDA_SUCCESS) return nullptr;
    mappings_.push_back(m);
    return reinterpret_cast<void*>(m.address);
  }

 private:
  struct Mapping {
    CUdeviceptr address;
    CUmemGenericAllocationHandle handle;
    std::size_t bytes;
  };
  decltype(cuMemCreate)* create_;
  decltype(cuMemRelease)* release_;
  decltype(cuMemAddressReserve)* reserve_;
  decltype(cuMemAddressFree)* free_;
  decltype(cuMemMap)* map_;
  decltype(cuMemUnmap)* unmap_;
  decltype(cuMemSetAccess)* set_access_;
  decltype(cuMemGetAllocationGranularity)* granularity_;
  CUmemAllocationProp prop_{};
  std::size_t step_ = 0;
  std::vector<Mapping> mappings_;
};

TEST(VirtualMemoryBuffers, EveryOpEagerAndCaptured) {
  VirtualMemory vmm;
  ASSERT_TRUE(vmm.usable()) << "the driver lacks the virtual-memory API";
  constexpr int kOps = 60;  // every kind and size, five times over
  LocalJob job(2, 64);
  const OpMix eager(2, kOps, [&](std::size_t bytes) { return vmm.allocate(bytes); });
  const OpMix captured(2, kOps, [&](std::size_t bytes) { return vmm.allocate(bytes); });
  ASSERT_TRUE(eager.allocated() && captured.allocated());
  for (int i = 0; i < kOps; ++i)
    for (int r = 0; r < 2; ++r)
      ASSERT_EQ(eager.issue(job.comm(r), r, i, job.stream(r)), TPCOLL_SUCCESS) << tpcoll_last_error();
  cudaGraphExec_t exec = job.capture([&] {
    for (int i = 0; i < kOps; ++i)
      for (int r = 0; r < 2; ++r)
        EXPECT_EQ(captured.issue(job.comm(r), r, i, job.stream(r)), TPCOLL_SUCCESS) << tpcoll_last_error();
  });
  ASSERT_NE(exec, nullptr);
  job.replay(exec);
  cudaGraphExecDestroy(exec);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(job.async_error(r), TPCOLL_SUCCESS) << tpcoll_last_error();
    EXPECT_EQ(eager.check(r), "");
    EXPECT_EQ(captured.check(r), "");
  }
}

}  // namespace

int main(int argc, char** argv) { return run_gpu_tests(argc, argv); }
