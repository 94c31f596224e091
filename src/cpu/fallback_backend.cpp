#include "cpu/fallback_backend.hpp"

#include "bootstrap/bootstrap.hpp"
#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/signature.hpp"
#include "cpu/gather_layout.hpp"
#include "cpu/kernels.hpp"

#include <vector>

namespace tpcoll::cpu {

void FallbackBackend::abort() {
  bootstrap_.abort(fmt::format("rank {} aborted the communicator", bootstrap_.rank()));
}

void FallbackBackend::run(const Call& call, const Plan& plan, const Buffers& buffers) {
  const int world = bootstrap_.world();
  const int rank = bootstrap_.rank();
  // Signatures first, so a disagreement is reported as such (and every rank
  // sees it) instead of as an all-gather of unequal sizes.
  const CallSignature mine = make_signature(call, plan.algo, ++calls_);
  std::vector<CallSignature> sigs(world);
  bootstrap_.all_gather(&mine, sigs.data(), sizeof mine);
  for (int p = 0; p < world; ++p)
    if (!sigs[p].same_call(mine)) fail_mismatch(rank, mine, p, sigs[p]);

  std::vector<std::byte> gathered(call.bytes * world);
  bootstrap_.all_gather(buffers.in, gathered.data(), call.bytes);
  std::vector<const void*> srcs(world);
  for (int p = 0; p < world; ++p) srcs[p] = gathered.data() + call.bytes * p;

  switch (call.op) {
    case TPCOLL_OP_ALL_REDUCE:
      reduce(call.dtype, srcs.data(), world, buffers.out, call.count);
      break;
    case TPCOLL_OP_ALL_GATHER:
      for (int p = 0; p < world; ++p)
        place_gathered(gathered.data() + call.bytes * p, 0, call.bytes, p, world, call.inner_bytes,
                       static_cast<std::byte*>(buffers.out));
      break;
    case TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM:
      reduce(call.dtype, srcs.data(), world, buffers.out, call.count);
      add_rmsnorm(call.dtype, RmsNormRows{buffers.out, buffers.residual, buffers.weight, buffers.out,
                                          buffers.residual_out, call.rows(), call.hidden(), call.eps});
      break;
    case TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM_FP8:  // run by the communicator as the fused op, then quantised
      fail(TPCOLL_INTERNAL_ERROR, "{} reached the fallback backend", op_name(call.op));
    case TPCOLL_OP_REDUCE_SCATTER:
    case TPCOLL_OP_FUSED_REDUCE_SCATTER_RMSNORM: {
      const std::size_t share = call.bytes / world;
      for (int p = 0; p < world; ++p) srcs[p] = gathered.data() + call.bytes * p + share * rank;
      reduce(call.dtype, srcs.data(), world, buffers.out, call.count / world);
      if (call.op == TPCOLL_OP_FUSED_REDUCE_SCATTER_RMSNORM)
        add_rmsnorm(call.dtype, RmsNormRows{buffers.out, buffers.residual, buffers.weight, buffers.out,
                                            buffers.residual_out, call.rows() / world, call.hidden(), call.eps});
      break;
    }
  }
}

}  // namespace tpcoll::cpu
