// A peer library measured in the same run as tpcoll (MPI on the CPU).
#pragma once

#include <tpcoll/tpcoll.hpp>

#include <cstddef>
#include <memory>

namespace tpcoll::bench {

class Baseline {
 public:
  virtual ~Baseline() = default;
  virtual const char* name() const = 0;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual void all_reduce(const void* in, void* out, std::size_t count, DType dtype) = 0;
  // Contiguous gather of `bytes` bytes per rank, in rank order.
  virtual void all_gather_bytes(const void* in, void* out, std::size_t bytes) = 0;
};

// True in a process started by mpirun.
bool started_by_mpirun();
// Initialises MPI; throws std::runtime_error if this build has no MPI.
std::unique_ptr<Baseline> make_mpi_baseline(int* argc, char*** argv);
// argv prefix that runs `ranks` copies of a command under mpirun.
std::vector<std::string> mpirun_prefix(int ranks);

}  // namespace tpcoll::bench
