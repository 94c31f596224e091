// Every environment variable tpcoll reads, declared once with its default
// (like NCCL_PARAM). Values are read when a communicator is created, so one
// process can create communicators with different settings.
#pragma once

#include <tpcoll/tpcoll.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace tpcoll {

struct EnvParam {
  const char* name;
  const char* default_value;
  const char* help;

  // The variable's value, or the default when unset or empty.
  std::string value() const;
  std::int64_t as_int() const;  // throws INVALID_ARGUMENT naming the variable if not an integer
  bool as_bool() const;         // 1/true/yes/on vs 0/false/no/off
};

namespace env {
inline constexpr EnvParam kDisable{"TPCOLL_DISABLE", "0", "1: every op takes the fallback path"};
inline constexpr EnvParam kAlgo{"TPCOLL_ALGO", "", "force oneshot|twoshot|unfused|fallback (same on every rank)"};
inline constexpr EnvParam kDebug{"TPCOLL_DEBUG", "WARN", "log level: NONE|WARN|INFO|TRACE"};
inline constexpr EnvParam kTimeoutMs{"TPCOLL_TIMEOUT_MS", "60000", "bound on every wait for a peer during an op"};
inline constexpr EnvParam kBootstrapTimeoutMs{"TPCOLL_BOOTSTRAP_TIMEOUT_MS", "120000",
                                              "bound on the rendezvous at communicator creation"};
inline constexpr EnvParam kCpuBufferBytes{"TPCOLL_CPU_BUFFER_BYTES", "1048576",
                                          "per-rank staging buffer of the CPU backend (chunk size)"};
inline constexpr EnvParam kCudaBufferBytes{"TPCOLL_CUDA_BUFFER_BYTES", "8388608",
                                           "largest per-rank chunk one CUDA kernel moves (staging size)"};
inline constexpr EnvParam kCudaLowLatencyBytes{"TPCOLL_CUDA_LOW_LATENCY_BYTES", "262144",
                                               "largest one-shot all-reduce or all-gather (bytes per rank) sent in low-latency units (0: never)"};
inline constexpr EnvParam kCudaEarlyLaunch{"TPCOLL_CUDA_EARLY_LAUNCH", "1",
                                           "1: a kernel may start launching while the previous one of its stream "
                                           "ends (programmatic dependent launch)"};
inline constexpr EnvParam kFaultIpcOpen{"TPCOLL_FAULT_IPC_OPEN", "",
                                        "fault injection for tests: a:b[,c:d...] makes rank a fail to open rank b's "
                                        "buffer through CUDA IPC at communicator creation"};
inline constexpr EnvParam kTuneFile{"TPCOLL_TUNE_FILE", "", "measured tuning table to use (default "
                                                           "$XDG_CACHE_HOME/tpcoll/<key>.json; `tpcoll tune` writes it)"};
inline constexpr EnvParam kNcclLib{"TPCOLL_NCCL_LIB", "", "NCCL library to load (default libnccl.so.2 from the loader's path)"};
inline constexpr EnvParam kDevice{"TPCOLL_DEVICE", "", "CUDA device of this rank for tpcoll_comm_config_from_env: "
                                                       "an ordinal, or auto (local rank modulo the device count)"};
inline constexpr EnvParam kLocalRank{"TPCOLL_LOCAL_RANK", "0", "rank on this host (set by tpcoll run)"};
inline constexpr EnvParam kRank{"TPCOLL_RANK", "0", "rank of this process (set by tpcoll run)"};
inline constexpr EnvParam kWorldSize{"TPCOLL_WORLD_SIZE", "1", "number of ranks (set by tpcoll run)"};
inline constexpr EnvParam kJob{"TPCOLL_JOB", "", "rendezvous key shared by the ranks (set by tpcoll run)"};
inline constexpr EnvParam kRunDir{"TPCOLL_RUN_DIR", "", "private directory (0700) of the rendezvous sockets "
                                                        "(default /tmp/tpcoll-<uid>)"};

// All of the above, for `tpcoll env` and the INFO log.
std::span<const EnvParam> all();

// TPCOLL_FAULT_IPC_OPEN parsed: the (rank, peer) pairs whose IPC open fails.
// Throws INVALID_ARGUMENT naming the variable on a malformed value.
std::vector<std::pair<int, int>> ipc_open_faults();

// TPCOLL_ALGO parsed; nullopt when unset. Throws INVALID_ARGUMENT on a bad name.
std::optional<tpcoll_algo_t> forced_algo();
}  // namespace env

}  // namespace tpcoll
