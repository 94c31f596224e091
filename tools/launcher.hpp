// `tpcoll run`: starts N ranks of a command on this host, like torchrun.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace tpcoll::tools {

struct LaunchOptions {
  int ranks = 2;
  std::vector<std::string> command;                             // argv of every rank
  std::vector<std::pair<std::string, std::string>> environment; // extra variables for every rank
  bool prefix_output = true;  // "[rank] " before each line; false: ranks share our stdout/stderr
  double kill_grace_seconds = 3.0;
};

// Runs every rank with TPCOLL_RANK, TPCOLL_LOCAL_RANK, TPCOLL_WORLD_SIZE and a
// fresh TPCOLL_JOB set. When one rank fails, the others get SIGTERM, then
// SIGKILL after the grace period. Returns 0 when every rank exits 0, else the
// first failure's exit code (128 + signal for a signal).
int launch(const LaunchOptions& options);

// Replaces this process with `command` (for launchers such as mpirun).
// Returns only on failure, with exit code 127.
int launch_in_place(const std::vector<std::string>& command);

// This program's argv, with argv[0] replaced by the path of the running
// executable (so ranks start the same binary however it was found).
std::vector<std::string> own_command_line(int argc, char** argv);

// A job id no other live job on this host uses.
std::string fresh_job_id();

}  // namespace tpcoll::tools
