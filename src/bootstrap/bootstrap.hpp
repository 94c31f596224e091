// How the ranks of a communicator find each other and exchange bytes before
// (and outside) the fast paths: shared-memory names now, CUDA IPC handles and
// NCCL ids later. A byte all-gather is the one primitive.
#pragma once

#include <tpcoll/tpcoll.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace tpcoll {

class Bootstrap {
 public:
  Bootstrap(int rank, int world) : rank_(rank), world_(world) {}
  virtual ~Bootstrap() = default;
  Bootstrap(const Bootstrap&) = delete;
  Bootstrap& operator=(const Bootstrap&) = delete;

  int rank() const { return rank_; }
  int world() const { return world_; }

  // Collective: gathers `bytes` bytes from every rank into recv (world * bytes)
  // in rank order. Every rank passes the same `bytes`.
  virtual void all_gather(const void* send, void* recv, std::size_t bytes) = 0;
  // Bound on each later all_gather's wait for peers.
  virtual void set_timeout_ms(std::int64_t timeout_ms) = 0;
  // From any thread: makes a waiting and every later all_gather of this rank
  // fail at once, and the peers' exchanges with it fail too.
  virtual void abort(const std::string& why) = 0;

  void barrier();

 private:
  int rank_;
  int world_;
};

// Rendezvous over an abstract Unix-domain socket named after `key`: rank 0
// listens, the others connect. Fails with TPCOLL_BOOTSTRAP_ERROR or
// TPCOLL_TIMEOUT naming the missing ranks when not all arrive in time.
std::unique_ptr<Bootstrap> connect_socket_bootstrap(int rank, int world, const std::string& key,
                                                    std::int64_t timeout_ms);

// Ranks that are threads of one process: one bootstrap per rank, each to be
// used by its own thread; abort() makes every waiting and later exchange fail
// at once (a rank whose set-up failed must not leave the others waiting).
struct LocalBootstraps {
  std::vector<std::unique_ptr<Bootstrap>> ranks;
  std::function<void(const std::string& why)> abort;
};
LocalBootstraps make_local_bootstraps(int world, std::int64_t timeout_ms);

// A framework's own all-gather (for example torch.distributed's).
std::unique_ptr<Bootstrap> make_callback_bootstrap(int rank, int world, tpcoll_allgather_fn fn, void* user_data);

}  // namespace tpcoll
