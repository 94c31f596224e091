// Where the ranks of a job meet: rank 0's socket and the job's random token
// in a directory only this user can enter.
//
//   <run dir>/                TPCOLL_RUN_DIR or /tmp/tpcoll-<uid>: 0700, ours, not a link
//     <16 hex of the key>/    one job's rendezvous (0700), present only while rank 0 waits
//       sock                  rank 0 listens here
//       token                 "<pid of rank 0> <32 hex>" (0600): checked in every frame
//
// Rank 0 fills a fresh directory under a temporary name and renames it into
// place, so a peer that finds the directory finds the token and a listening
// socket with it. A directory whose rank 0 died is removed by the next rank 0
// of any job (crashed jobs leave nothing for long).
#pragma once

#include "bootstrap/wire.hpp"

#include <sys/types.h>
#include <sys/un.h>

#include <optional>
#include <string>

namespace tpcoll {

// The run directory, created 0700 if missing; TPCOLL_BOOTSTRAP_ERROR if it
// is a link, not ours, or open to others (another user could then read the
// token or replace the socket).
std::string private_run_dir();

// The rendezvous directory of `key` under `run_dir`.
std::string job_dir_path(const std::string& run_dir, const std::string& key);

// Removes rendezvous directories (finished or half-made) whose rank 0 is no
// longer running. Returns how many.
int remove_stale_job_dirs(const std::string& run_dir);

// Rank 0's directory: made with a fresh random token and a socket bound in
// it; removed (with both files) by the destructor or by remove().
class JobDir {
 public:
  JobDir(const std::string& key, int listen_backlog);
  ~JobDir();
  JobDir(const JobDir&) = delete;
  JobDir& operator=(const JobDir&) = delete;

  int listener() const { return listener_; }
  const wire::Token& token() const { return token_; }
  const std::string& path() const { return path_; }
  // Every peer has connected: nothing is left to find.
  void remove();

 private:
  std::string path_;
  wire::Token token_{};
  int listener_ = -1;
  bool present_ = false;
};

// What a peer reads from a rendezvous directory: rank 0's token once the
// directory is in place (nullopt before). Checks the run directory is private.
std::optional<wire::Token> read_job_token(const std::string& job_dir);

// The address of the socket in a rendezvous directory; TPCOLL_INVALID_ARGUMENT
// when the path is too long for one.
sockaddr_un socket_address_in(const std::string& dir);

std::string hex(const wire::Token& token);

}  // namespace tpcoll
