// A user of the installed library: a world-1 communicator, one all-reduce
// through the C++ API and one through the C API.
#include <tpcoll/tpcoll.h>
#include <tpcoll/tpcoll.hpp>

#include <array>
#include <cstdio>
#include <string>
#include <unistd.h>

int main() {
  try {
    tpcoll::Config config;  // rank 0 of 1
    config.job_id = "consumer-" + std::to_string(::getpid());
    tpcoll::Communicator comm(config);
    if (comm.rank() != 0 || comm.world_size() != 1) {
      std::fprintf(stderr, "consumer: rank %d of %d\n", comm.rank(), comm.world_size());
      return 1;
    }
    const std::array<float, 5> in{1.5f, -2.0f, 0.0f, 1e-3f, 65504.0f};
    std::array<float, 5> out{};
    comm.all_reduce(in.data(), out.data(), in.size(), tpcoll::DType::kFloat32);
    if (out != in) {
      std::fprintf(stderr, "consumer: all_reduce of one rank changed its input\n");
      return 1;
    }
    std::array<float, 5> c_out{};
    if (tpcoll_all_reduce(comm.native(), in.data(), c_out.data(), in.size(), TPCOLL_FLOAT32, nullptr) !=
            TPCOLL_SUCCESS ||
        c_out != in) {
      std::fprintf(stderr, "consumer: C all_reduce failed: %s\n", tpcoll_last_error());
      return 1;
    }
    const tpcoll::PlanInfo plan = comm.plan(tpcoll::Op::kAllReduce, tpcoll::DType::kFloat32,
                                            std::array<std::int64_t, 1>{5});
    std::printf("consumer: tpcoll %d.%d.%d all_reduce ok (%s/%s: %s)\n", TPCOLL_VERSION_MAJOR, TPCOLL_VERSION_MINOR,
                TPCOLL_VERSION_PATCH, plan.backend.c_str(), plan.algorithm.c_str(), plan.reason.c_str());
  } catch (const tpcoll::Error& e) {
    std::fprintf(stderr, "consumer: %s (%s)\n", e.what(), tpcoll_result_string(e.code()));
    return 1;
  }
  return 0;
}
