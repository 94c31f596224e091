// MPI_Allreduce / MPI_Allgather over Open MPI's shared-memory transport.
// MPI has no 16-bit float types, so float16 and bfloat16 sums use a
// user-defined MPI_Op that widens to fp32, as an MPI user would write it.
#include "tools/bench/baseline.hpp"

#include "common/numerics.hpp"

#include <mpi.h>

#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

namespace tpcoll::bench {
namespace {

template <float (*Load)(std::uint16_t), std::uint16_t (*Store)(float)>
void sum_16bit(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const std::uint16_t*>(in);
  auto* b = static_cast<std::uint16_t*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = Store(Load(a[i]) + Load(b[i]));
}

class MpiBaseline final : public Baseline {
 public:
  MpiBaseline(int* argc, char*** argv) {
    MPI_Init(argc, argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &world_);
    MPI_Op_create(&sum_16bit<numerics::bf16_to_float, numerics::float_to_bf16>, 1, &bf16_sum_);
    MPI_Op_create(&sum_16bit<numerics::fp16_to_float, numerics::float_to_fp16>, 1, &fp16_sum_);
  }
  ~MpiBaseline() override {
    MPI_Op_free(&bf16_sum_);
    MPI_Op_free(&fp16_sum_);
    MPI_Finalize();
  }

  const char* name() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int world_size() const override { return world_; }

  void all_reduce(const void* in, void* out, std::size_t count, DType dtype) override {
    const int n = static_cast<int>(count);
    const void* send = in == out ? MPI_IN_PLACE : in;
    switch (dtype) {
      case DType::kFloat32: MPI_Allreduce(send, out, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); break;
      case DType::kBFloat16: MPI_Allreduce(send, out, n, MPI_UINT16_T, bf16_sum_, MPI_COMM_WORLD); break;
      case DType::kFloat16: MPI_Allreduce(send, out, n, MPI_UINT16_T, fp16_sum_, MPI_COMM_WORLD); break;
      default: throw std::runtime_error("mpi baseline: all_reduce of an unsupported dtype");
    }
  }

  void all_gather_bytes(const void* in, void* out, std::size_t bytes) override {
    MPI_Allgather(in, static_cast<int>(bytes), MPI_BYTE, out, static_cast<int>(bytes), MPI_BYTE, MPI_COMM_WORLD);
  }

 private:
  int rank_ = 0;
  int world_ = 1;
  MPI_Op bf16_sum_{};
  MPI_Op fp16_sum_{};
};

}  // namespace

bool started_by_mpirun() { return std::getenv("OMPI_COMM_WORLD_RANK") != nullptr || std::getenv("PMI_RANK") != nullptr; }

std::unique_ptr<Baseline> make_mpi_baseline(int* argc, char*** argv) { return std::make_unique<MpiBaseline>(argc, argv); }

std::vector<std::string> mpirun_prefix(int ranks) {
  // Open MPI refuses root unless told; on one host it needs no launcher agent.
  setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
  setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  return {"mpirun", "-np", std::to_string(ranks), "--oversubscribe", "--bind-to", "none"};
}

}  // namespace tpcoll::bench
