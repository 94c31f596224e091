// Whether the process that left a file behind still runs: how a new job
// tells a crashed job's leftovers from a live job's files.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <cerrno>

namespace tpcoll {

// kill(pid, 0) checks without signalling; EPERM means it exists (another
// user's), so only ESRCH counts as gone. A reused pid reads as alive: the
// leftover then stays until that process ends, it is never taken for ours.
inline bool process_alive(pid_t pid) { return pid > 0 && (::kill(pid, 0) == 0 || errno != ESRCH); }

}  // namespace tpcoll
