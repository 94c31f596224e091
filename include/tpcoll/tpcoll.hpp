// tpcoll C++ API: a header-only RAII layer over the C API (tpcoll.h), so both
// share one ABI. Failures throw tpcoll::Error, the library's one error type.
#pragma once

#include <tpcoll/error.hpp>
#include <tpcoll/tpcoll.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>

namespace tpcoll {

enum class DType : int {
  kFloat32 = TPCOLL_FLOAT32,
  kFloat16 = TPCOLL_FLOAT16,
  kBFloat16 = TPCOLL_BFLOAT16,
  kFloat64 = TPCOLL_FLOAT64,
  kFloat8E4M3 = TPCOLL_FLOAT8_E4M3,
  kFloat8E5M2 = TPCOLL_FLOAT8_E5M2,
  kInt8 = TPCOLL_INT8,
  kUInt8 = TPCOLL_UINT8,
  kInt32 = TPCOLL_INT32,
  kInt64 = TPCOLL_INT64,
};

enum class Op : int {
  kAllReduce = TPCOLL_OP_ALL_REDUCE,
  kAllGather = TPCOLL_OP_ALL_GATHER,
  kFusedAllReduceRmsNorm = TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM,
  kReduceScatter = TPCOLL_OP_REDUCE_SCATTER,
  kFusedReduceScatterRmsNorm = TPCOLL_OP_FUSED_REDUCE_SCATTER_RMSNORM,
  kFusedAllReduceRmsNormFp8 = TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM_FP8,
};

enum class Fp8Scaling : int {
  kStatic = TPCOLL_FP8_STATIC,
  kPerToken = TPCOLL_FP8_PER_TOKEN,
};

enum class Algo : int {
  kOneShot = TPCOLL_ALGO_ONESHOT,
  kTwoShot = TPCOLL_ALGO_TWOSHOT,
  kUnfused = TPCOLL_ALGO_UNFUSED,
  kFallback = TPCOLL_ALGO_FALLBACK,
};

inline constexpr int kCpuDevice = TPCOLL_DEVICE_CPU;

inline std::size_t dtype_size(DType d) { return tpcoll_dtype_size(static_cast<tpcoll_dtype_t>(d)); }
inline const char* dtype_name(DType d) { return tpcoll_dtype_name(static_cast<tpcoll_dtype_t>(d)); }

// Gathers bytes_per_rank bytes from every rank into recv, in rank order.
using AllGatherFn = std::function<void(const void* send, void* recv, std::size_t bytes_per_rank)>;

struct Config {
  int rank = 0;
  int world_size = 1;
  int device = kCpuDevice;
  std::string job_id;
  AllGatherFn allgather;  // empty: socket bootstrap keyed by job_id

  // Rank, world size and job from the variables `tpcoll run` sets.
  static Config from_env() {
    tpcoll_comm_config_t c{};
    check(tpcoll_comm_config_from_env(&c));
    Config config;
    config.rank = c.rank;
    config.world_size = c.world_size;
    config.device = c.device;
    config.job_id = c.job_id ? c.job_id : "";
    return config;
  }
};

struct PlanInfo {
  Algo algo;
  std::string backend;
  std::string algorithm;
  std::size_t chunk_bytes;
  std::size_t steps;
  std::string reason;
};

class Communicator {
 public:
  explicit Communicator(Config config) : allgather_(std::make_unique<AllGatherFn>(std::move(config.allgather))) {
    tpcoll_comm_config_t c{};
    c.rank = config.rank;
    c.world_size = config.world_size;
    c.device = config.device;
    c.job_id = config.job_id.c_str();
    if (*allgather_) {
      c.allgather = &Communicator::allgather_trampoline;
      c.allgather_user_data = allgather_.get();
    }
    check(tpcoll_comm_create(&c, &comm_));
  }
  ~Communicator() {
    if (comm_) tpcoll_comm_destroy(comm_);
  }
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const {
    int r = 0;
    check(tpcoll_comm_rank(comm_, &r));
    return r;
  }
  int world_size() const {
    int n = 0;
    check(tpcoll_comm_world_size(comm_, &n));
    return n;
  }

  void all_reduce(const void* in, void* out, std::size_t count, DType dtype, void* stream = nullptr) {
    check(tpcoll_all_reduce(comm_, in, out, count, c_dtype(dtype), stream));
  }

  void all_gather(const void* in, void* out, DType dtype, std::span<const std::int64_t> shape, int dim,
                  void* stream = nullptr) {
    check(tpcoll_all_gather(comm_, in, out, c_dtype(dtype), static_cast<int>(shape.size()), shape.data(),
                            dim, stream));
  }

  void fused_allreduce_residual_rmsnorm(const void* x, const void* residual, const void* weight, void* out,
                                        void* residual_out, std::size_t tokens, std::size_t hidden,
                                        DType dtype, float eps, void* stream = nullptr) {
    check(tpcoll_fused_allreduce_residual_rmsnorm(comm_, x, residual, weight, out, residual_out, tokens,
                                                  hidden, c_dtype(dtype), eps, stream));
  }

  // See tpcoll_fused_allreduce_residual_rmsnorm_fp8: out may be nullptr,
  // row_scales is written for Fp8Scaling::kPerToken only.
  void fused_allreduce_residual_rmsnorm_fp8(const void* x, const void* residual, const void* weight, void* out,
                                            void* residual_out, void* out_fp8, Fp8Scaling scaling,
                                            float static_scale, float* row_scales, std::size_t tokens,
                                            std::size_t hidden, DType dtype, float eps, void* stream = nullptr) {
    check(tpcoll_fused_allreduce_residual_rmsnorm_fp8(comm_, x, residual, weight, out, residual_out, out_fp8,
                                                      static_cast<tpcoll_fp8_scaling_t>(scaling), static_scale,
                                                      row_scales, tokens, hidden, c_dtype(dtype), eps, stream));
  }

  // count: elements of the whole input; out gets this rank's count / world_size.
  void reduce_scatter(const void* in, void* out, std::size_t count, DType dtype, void* stream = nullptr) {
    check(tpcoll_reduce_scatter(comm_, in, out, count, c_dtype(dtype), stream));
  }

  // x: [tokens, hidden]; residual, out, residual_out: this rank's [tokens / world_size, hidden].
  void fused_reduce_scatter_residual_rmsnorm(const void* x, const void* residual, const void* weight, void* out,
                                             void* residual_out, std::size_t tokens, std::size_t hidden,
                                             DType dtype, float eps, void* stream = nullptr) {
    check(tpcoll_fused_reduce_scatter_residual_rmsnorm(comm_, x, residual, weight, out, residual_out, tokens,
                                                       hidden, c_dtype(dtype), eps, stream));
  }

  void add_rmsnorm(const void* x, const void* residual, const void* weight, void* out, void* residual_out,
                   std::size_t tokens, std::size_t hidden, DType dtype, float eps, void* stream = nullptr) {
    check(tpcoll_add_rmsnorm(comm_, x, residual, weight, out, residual_out, tokens, hidden, c_dtype(dtype),
                             eps, stream));
  }

  PlanInfo plan(Op op, DType dtype, std::span<const std::int64_t> shape, int dim = 0) const {
    tpcoll_plan_info_t p{};
    check(tpcoll_plan(comm_, static_cast<tpcoll_op_t>(op), c_dtype(dtype), static_cast<int>(shape.size()),
                      shape.data(), dim, &p));
    return PlanInfo{static_cast<Algo>(p.algo), p.backend, p.algorithm, p.chunk_bytes, p.steps, p.reason};
  }

  // Every rank must force the same algorithm; std::nullopt restores the measured choice.
  // Stops the communicator on every rank; may be called from another thread
  // while an op runs (see tpcoll_comm_abort).
  void abort() { check(tpcoll_comm_abort(comm_)); }

  void force_algo(std::optional<Algo> algo) {
    check(tpcoll_comm_force_algo(comm_, algo ? static_cast<int>(*algo) : TPCOLL_ALGO_AUTO));
  }

  tpcoll_comm_t native() const { return comm_; }

 private:
  static tpcoll_dtype_t c_dtype(DType d) { return static_cast<tpcoll_dtype_t>(d); }

  static int allgather_trampoline(const void* send, void* recv, std::size_t bytes, void* user) {
    try {
      (*static_cast<AllGatherFn*>(user))(send, recv, bytes);
      return 0;
    } catch (...) {
      return 1;  // exceptions must not cross the C boundary
    }
  }

  std::unique_ptr<AllGatherFn> allgather_;
  tpcoll_comm_t comm_ = nullptr;
};

}  // namespace tpcoll
