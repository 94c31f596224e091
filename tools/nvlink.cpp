#include "tools/nvlink.hpp"

#include <cuda_runtime.h>
#include <dlfcn.h>

namespace tpcoll::tools {
namespace {

// The few NVML entry points used, declared from NVML's documented C ABI
// (nvml.h is not part of the toolkit here): results are ints, 0 is success,
// a device is an opaque pointer, a link state is 0 (off) or 1 (on).
using NvmlDevice = struct NvmlDeviceOpaque*;
using InitFn = int (*)();
using HandleByBusIdFn = int (*)(const char*, NvmlDevice*);
using LinkStateFn = int (*)(NvmlDevice, unsigned, int*);
constexpr unsigned kMaxLinks = 18;  // NVML_NVLINK_MAX_LINKS

struct Nvml {
  InitFn init = nullptr;
  HandleByBusIdFn handle_by_bus_id = nullptr;
  LinkStateFn link_state = nullptr;
  bool ready = false;
};

const Nvml& nvml() {
  static const Nvml loaded = [] {
    Nvml n;
    void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) return n;
    n.init = reinterpret_cast<InitFn>(dlsym(lib, "nvmlInit_v2"));
    n.handle_by_bus_id = reinterpret_cast<HandleByBusIdFn>(dlsym(lib, "nvmlDeviceGetHandleByPciBusId_v2"));
    n.link_state = reinterpret_cast<LinkStateFn>(dlsym(lib, "nvmlDeviceGetNvLinkState"));
    n.ready = n.init && n.handle_by_bus_id && n.link_state && n.init() == 0;
    return n;
  }();
  return loaded;
}

}  // namespace

std::optional<int> active_nvlinks(int device) {
  const Nvml& n = nvml();
  if (!n.ready) return std::nullopt;
  char bus_id[32] = {};
  if (cudaDeviceGetPCIBusId(bus_id, sizeof bus_id, device) != cudaSuccess) {
    cudaGetLastError();
    return std::nullopt;
  }
  NvmlDevice handle = nullptr;
  if (n.handle_by_bus_id(bus_id, &handle) != 0) return std::nullopt;
  int active = 0;
  for (unsigned link = 0; link < kMaxLinks; ++link) {
    int state = 0;
    if (n.link_state(handle, link, &state) != 0) break;  // past the GPU's links, or none at all
    active += state == 1;
  }
  return active;
}

}  // namespace tpcoll::tools
