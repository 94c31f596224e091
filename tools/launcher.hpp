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
  // Rank r runs on the (r mod n)-th of the n CPUs this launcher may use (as
  // mpirun --bind-to core). Left free, the scheduler at times put both ranks
  // of a 2-vCPU VM on one CPU, where each call became a sched_yield hand-off:
  // 16.5 us instead of 0.3 for a 256 B all-reduce, in 80 of 120 rows of short
  // bench jobs (0 of 120 bound; bench/results/cpu-epyc-2core-binding.txt).
  bool bind_cores = true;
  double kill_grace_seconds = 3.0;
};

// Runs every rank with TPCOLL_RANK, TPCOLL_LOCAL_RANK, TPCOLL_WORLD_SIZE and a
// fresh TPCOLL_JOB set. When one rank fails, the others get SIGTERM, then
// SIGKILL after the grace period (a rank that cannot be bound only warns).
// Returns 0 when every rank exits 0, else the first failure's exit code
// (128 + signal for a signal).
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
