// The communicator: validates every call, plans it, and hands it to a backend.
#pragma once

#include "bootstrap/bootstrap.hpp"
#include "common/fp8_quantise.hpp"
#include "core/backend.hpp"
#include "core/plan.hpp"
#include "core/plan_cache.hpp"
#include "core/tune_file.hpp"
#include "cuda/norm_launch.hpp"

#include <tpcoll/tpcoll.h>

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tpcoll::cuda {
class CudaBackend;
class DeviceBlock;
class StreamOrder;
}

namespace tpcoll::core {

class Communicator {
 public:
  // bootstrap: given by tpcoll_comm_create_local; otherwise made from config.
  explicit Communicator(const tpcoll_comm_config_t& config, std::unique_ptr<Bootstrap> bootstrap = nullptr);
  ~Communicator();

  int rank() const { return rank_; }
  int world_size() const { return world_; }

  void all_reduce(const void* in, void* out, std::size_t count, tpcoll_dtype_t dtype, void* stream);
  void all_gather(const void* in, void* out, tpcoll_dtype_t dtype, int ndim, const std::int64_t* shape, int dim,
                  void* stream);
  void fused_allreduce_residual_rmsnorm(const Buffers& buffers, std::size_t tokens, std::size_t hidden,
                                        tpcoll_dtype_t dtype, float eps, void* stream);
  // out (buffers.out) may be NULL; see tpcoll_fused_allreduce_residual_rmsnorm_fp8.
  void fused_allreduce_residual_rmsnorm_fp8(const Buffers& buffers, const fp8::Fp8Output& fp8, std::size_t tokens,
                                            std::size_t hidden, tpcoll_dtype_t dtype, float eps, void* stream);
  void reduce_scatter(const void* in, void* out, std::size_t count, tpcoll_dtype_t dtype, void* stream);
  void fused_reduce_scatter_residual_rmsnorm(const Buffers& buffers, std::size_t tokens, std::size_t hidden,
                                             tpcoll_dtype_t dtype, float eps, void* stream);
  void add_rmsnorm(const Buffers& buffers, std::size_t tokens, std::size_t hidden, tpcoll_dtype_t dtype, float eps,
                   void* stream);
  Plan plan(tpcoll_op_t op, tpcoll_dtype_t dtype, int ndim, const std::int64_t* shape, int dim) const;
  void force_algo(std::optional<tpcoll_algo_t> algo);
  void raise_async_error() const;
  // The one call allowed from another thread while an op runs.
  void abort();

 private:
  // Held for the whole of an op: a second thread entering one on the same
  // communicator fails at the call instead of interleaving with the first.
  class OpGuard {
   public:
    explicit OpGuard(Communicator& comm);
    ~OpGuard();
    OpGuard(const OpGuard&) = delete;
    OpGuard& operator=(const OpGuard&) = delete;

   private:
    std::atomic<bool>& in_op_;
  };

  // The call's plan (plans_, or at TRACE make_plan, logged with its reason);
  // `as`: planned as if forced to that algorithm.
  Plan plan_call(const Call& call, std::optional<tpcoll_algo_t> as = std::nullopt);
  // The all-reduce that starts a fused op no fused kernel serves (`fused`: its plan).
  Plan plan_leading_all_reduce(const Call& reduce, const Plan& fused);
  void run(const Call& call, const Plan& plan, const Buffers& buffers);
  // The fused op of a validated call, buffers.stream set.
  void run_fused(const Call& call, const Buffers& buffers);
  // The same with buffers.fp8 set (out then optional), on a CUDA communicator.
  void run_fused_fp8_on_gpu(const Call& call, const Buffers& buffers);
  void require_usable(void* stream) const;
  void agree_on_settings();
  void choose_table();
  // Whether every rank's device is the same GPU (collective).
  bool ranks_share_one_gpu();
  std::string broadcast_from_rank0(const std::string& text);
  void create_cpu_backends();
  void create_cuda_backend();
  bool on_gpu() const { return device_ != TPCOLL_DEVICE_CPU; }

  int rank_;
  int world_;
  int device_;
  std::int64_t timeout_ms_;
  std::unique_ptr<Bootstrap> bootstrap_;
  std::unique_ptr<Backend> fast_;
  std::unique_ptr<Backend> fallback_;
  cuda::CudaBackend* cuda_ = nullptr;  // fast_, when it is our CUDA backend
  cuda::NormLaunch cuda_norm_launch_;  // cuda::norm_launch_on(device_)
  std::unique_ptr<cuda::StreamOrder> stream_order_;  // CUDA communicators: ops in issue order across streams
  std::unique_ptr<cuda::DeviceBlock> fp8_scratch_;  // CUDA communicators: rows of FP8 calls without out
  PlanContext context_;
  PlanCache plans_;  // of calls made here (ops run one thread at a time: OpGuard)
  std::unique_ptr<LoadedTable> tuned_;  // the measured table in use, if any
  TuneTable tuned_view_{};              // tuned_->view(), which context_.table points to
  std::optional<tpcoll_algo_t> env_forced_;  // TPCOLL_ALGO, restored by force_algo(nullopt)
  std::vector<std::byte> fp8_out_scratch_;  // CPU: out of an FP8 call that passed none
  std::string broken_;  // set once a peer timed out or the transport failed
  std::atomic<bool> aborted_{false};
  std::atomic<bool> in_op_{false};  // an OpGuard is held
};

}  // namespace tpcoll::core
