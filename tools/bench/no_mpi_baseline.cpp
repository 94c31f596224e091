// Built instead of mpi_baseline.cpp when MPI is not found.
#include "tools/bench/baseline.hpp"

#include <stdexcept>

namespace tpcoll::bench {

bool started_by_mpirun() { return false; }

std::unique_ptr<Baseline> make_mpi_baseline(int*, char***) {
  throw std::runtime_error("this tpcoll was built without MPI: install libopenmpi-dev and rebuild for --baseline mpi");
}

std::vector<std::string> mpirun_prefix(int) { return {}; }

}  // namespace tpcoll::bench
