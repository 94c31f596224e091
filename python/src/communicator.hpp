// The communicator as Python sees it: tpcoll::Communicator plus the checks
// that raw pointers hide from the library (sizes, dtypes, devices of the
// arrays), a Python all-gather callback for frameworks' process groups, and
// close() so that Python code can release it deterministically.
#pragma once

#include "tensor.hpp"

#include <nanobind/nanobind.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace tpcoll::python {

class PyCommunicator {
 public:
  // allgather: None, or a callable taking the rank's bytes and returning
  // every rank's bytes concatenated in rank order.
  PyCommunicator(int rank, int world_size, int device, std::string job_id, nanobind::object allgather);

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  int device() const { return device_; }
  bool closed() const { return !comm_; }
  void close();

  void all_reduce(const InArray& in, const OutArray& out, std::uintptr_t stream);
  void all_gather(const InArray& in, const OutArray& out, int dim, std::uintptr_t stream);
  void fused_allreduce_residual_rmsnorm(const InArray& x, const std::optional<InArray>& residual,
                                        const InArray& weight, const OutArray& out,
                                        const std::optional<OutArray>& residual_out, float eps,
                                        std::uintptr_t stream);
  // out may be None (not written); row_scales is written for per-token
  // scaling only; out_fp8 is uint8 or float8_e4m3 of x's shape.
  void fused_allreduce_residual_rmsnorm_fp8(const InArray& x, const std::optional<InArray>& residual,
                                            const InArray& weight, const std::optional<OutArray>& out,
                                            const std::optional<OutArray>& residual_out, const OutArray& out_fp8,
                                            Fp8Scaling scaling, float static_scale,
                                            const std::optional<OutArray>& row_scales, float eps,
                                            std::uintptr_t stream);
  // Along dim 0: out is the input's shape with dim 0 divided by the world size.
  void reduce_scatter(const InArray& in, const OutArray& out, std::uintptr_t stream);
  // x: [tokens, ..., hidden]; residual, out and residual_out: this rank's
  // share of the tokens (dim 0 divided by the world size).
  void fused_reduce_scatter_residual_rmsnorm(const InArray& x, const std::optional<InArray>& residual,
                                             const InArray& weight, const OutArray& out,
                                             const std::optional<OutArray>& residual_out, float eps,
                                             std::uintptr_t stream);
  void add_rmsnorm(const InArray& x, const InArray& residual, const InArray& weight, const OutArray& out,
                   const OutArray& residual_out, float eps, std::uintptr_t stream);
  PlanInfo plan(Op op, DType dtype, const std::vector<std::int64_t>& shape, int dim) const;
  // Raises the error that enqueued GPU work reported after its call returned, if any.
  void check_async_error() const;
  void force_algo(std::optional<Algo> algo);
  // Stops the communicator on every rank (tpcoll_comm_abort).
  void abort();

 private:
  // Arguments of the norm ops, checked against x and the communicator.
  struct NormCall {
    Tensor x;
    std::size_t tokens;
    std::size_t hidden;
  };
  // out may be NULL (the FP8 op's optional out). share: the norm ops'
  // outputs (and residual) are this rank's share of x's dim 0, for the
  // fused reduce-scatter.
  NormCall check_norm(const InArray& x, const InArray* residual, const InArray& weight, const OutArray* out,
                      const OutArray* residual_out, bool share = false) const;
  // x's shape with dim 0 divided by the world size; throws naming `name`
  // when dim 0 does not split into equal shares.
  Tensor share_of(const Tensor& x, const char* name) const;
  Communicator& comm() const;

  int rank_;
  int world_size_;
  int device_;
  std::unique_ptr<Communicator> comm_;
};

}  // namespace tpcoll::python
