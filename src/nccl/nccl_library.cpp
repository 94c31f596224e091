#include "nccl/nccl_library.hpp"

#include "core/config.hpp"
#include "core/error.hpp"

#include <dlfcn.h>

#include <memory>
#include <mutex>

namespace tpcoll::nccl {
namespace {

template <typename Fn>
void resolve(void* handle, const Library& lib, const char* name, Fn& fn) {
  fn = reinterpret_cast<Fn>(dlsym(handle, name));
  if (fn == nullptr) fail(TPCOLL_UNSUPPORTED, "{} has no {}: not a usable NCCL 2 library", lib.path, name);
}

Library open_library() {
  Library lib;
  lib.path = env::kNcclLib.value();
  if (lib.path.empty()) lib.path = "libnccl.so.2";
  void* handle = dlopen(lib.path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr)
    fail(TPCOLL_UNSUPPORTED, "cannot load NCCL ({}); set TPCOLL_NCCL_LIB to its path", dlerror());
  resolve(handle, lib, "ncclGetVersion", lib.get_version);
  resolve(handle, lib, "ncclGetErrorString", lib.get_error_string);
  lib.check(lib.get_version(&lib.version), "ncclGetVersion");
  if (lib.version < kMinVersion)
    fail(TPCOLL_UNSUPPORTED, "{} is NCCL version code {}; tpcoll needs NCCL 2.14 or newer ({})", lib.path,
         lib.version, kMinVersion);
  resolve(handle, lib, "ncclGetUniqueId", lib.get_unique_id);
  resolve(handle, lib, "ncclCommInitRankConfig", lib.comm_init_rank_config);
  resolve(handle, lib, "ncclCommDestroy", lib.comm_destroy);
  resolve(handle, lib, "ncclCommAbort", lib.comm_abort);
  resolve(handle, lib, "ncclCommGetAsyncError", lib.comm_get_async_error);
  resolve(handle, lib, "ncclAllReduce", lib.all_reduce);
  resolve(handle, lib, "ncclAllGather", lib.all_gather);
  resolve(handle, lib, "ncclReduceScatter", lib.reduce_scatter);
  return lib;
}

}  // namespace

void Library::check(ncclResult_t result, const char* what) const {
  if (result != ncclSuccess) fail(TPCOLL_SYSTEM_ERROR, "{}: {} (NCCL result {})", what, get_error_string(result), static_cast<int>(result));
}

const Library& load_library() {
  // A failed load is not cached: a later communicator may come with
  // TPCOLL_NCCL_LIB set.
  static std::mutex mutex;
  static std::unique_ptr<Library> loaded;
  std::lock_guard lock(mutex);
  if (!loaded) loaded = std::make_unique<Library>(open_library());
  return *loaded;
}

}  // namespace tpcoll::nccl
