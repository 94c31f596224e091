// NCCL, loaded at run time: the toolkit's nccl.h gives the types, dlopen the
// code, so tpcoll links and runs without NCCL and finds the library a
// framework ships (TPCOLL_NCCL_LIB names it; else the loader's search path).
#pragma once

#include <nccl.h>

#include <string>

namespace tpcoll::nccl {

struct Library {
  std::string path;  // as given to dlopen
  int version = 0;   // NCCL_VERSION_CODE of the loaded library

  decltype(&ncclGetVersion) get_version = nullptr;
  decltype(&ncclGetUniqueId) get_unique_id = nullptr;
  decltype(&ncclCommInitRankConfig) comm_init_rank_config = nullptr;
  decltype(&ncclCommDestroy) comm_destroy = nullptr;
  decltype(&ncclCommAbort) comm_abort = nullptr;
  decltype(&ncclCommGetAsyncError) comm_get_async_error = nullptr;
  decltype(&ncclGetErrorString) get_error_string = nullptr;
  decltype(&ncclAllReduce) all_reduce = nullptr;
  decltype(&ncclAllGather) all_gather = nullptr;
  decltype(&ncclReduceScatter) reduce_scatter = nullptr;

  // Throws tpcoll::Error (TPCOLL_SYSTEM_ERROR) naming `what` and NCCL's text.
  void check(ncclResult_t result, const char* what) const;
};

// The oldest NCCL with non-blocking communicators (ncclCommInitRankConfig),
// which tpcoll_comm_abort needs (nccl_comm.hpp says why).
constexpr int kMinVersion = NCCL_VERSION(2, 14, 0);

// Loaded once per process (never unloaded: NCCL keeps threads); throws
// TPCOLL_UNSUPPORTED naming the path and the loader's message if the library
// or one of its functions is missing, or naming its version if older than
// kMinVersion.
const Library& load_library();

}  // namespace tpcoll::nccl
