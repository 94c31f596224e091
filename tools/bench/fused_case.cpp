// fused all-reduce + residual add + RMSNorm: every algorithm equals, bit for
// bit, our all_reduce followed by our add_rmsnorm; the deviation from an fp64
// reference of the whole op is reported.
#include "tools/bench/fused_reference.hpp"
#include "tools/bench/harness.hpp"

#include <cstring>
#include <vector>

namespace tpcoll::bench {

Row Harness::fused(DType dtype, std::size_t tokens, std::size_t hidden) {
  Row row = start_row("fused_allreduce_rmsnorm", dtype, tokens * hidden);
  row.tokens = tokens;
  row.hidden = hidden;
  const int world = comm_.world_size();
  const std::size_t count = row.count;
  auto [seed, x, residual, weight] = fused_operands(dtype, tokens, hidden, comm_.rank());

  // Reference: our all-reduce, then our unfused add + RMSNorm.
  std::vector<std::byte> ref_out(row.bytes), ref_res(row.bytes), out(row.bytes), res(row.bytes);
  comm_.all_reduce(x.data(), ref_out.data(), count, dtype);
  comm_.add_rmsnorm(ref_out.data(), residual.data(), weight.data(), ref_out.data(), ref_res.data(), tokens, hidden,
                    dtype, kFusedEps);

  std::string failure;
  for (Algo algo : {Algo::kOneShot, Algo::kTwoShot, Algo::kUnfused, Algo::kFallback}) {
    comm_.force_algo(algo);
    comm_.fused_allreduce_residual_rmsnorm(x.data(), residual.data(), weight.data(), out.data(), res.data(), tokens,
                                           hidden, dtype, kFusedEps);
    if ((std::memcmp(out.data(), ref_out.data(), row.bytes) != 0 ||
         std::memcmp(res.data(), ref_res.data(), row.bytes) != 0) &&
        failure.empty())
      failure = std::string("fused ") + algo_label(algo) + " differs from all_reduce + add_rmsnorm";
  }
  comm_.force_algo(std::nullopt);
  row.check = agree(failure.empty(), ref_out.data(), row.bytes) ? "ok" : (failure.empty() ? "ranks differ" : failure);

  row.max_error = fused_max_error(dtype, seed, world, residual.data(), weight.data(), ref_out.data(), tokens, hidden);

  const std::int64_t shape[2] = {static_cast<std::int64_t>(tokens), static_cast<std::int64_t>(hidden)};
  row.algo = comm_.plan(Op::kFusedAllReduceRmsNorm, dtype, shape).algorithm;
  measure(
      row, runnable({Algo::kOneShot, Algo::kTwoShot, Algo::kUnfused}, Op::kFusedAllReduceRmsNorm, dtype, shape),
      [&] {
        comm_.fused_allreduce_residual_rmsnorm(x.data(), residual.data(), weight.data(), out.data(), res.data(), tokens,
                                               hidden, dtype, kFusedEps);
      },
      [&] {
        baseline_->all_reduce(x.data(), out.data(), count, dtype);
        comm_.add_rmsnorm(out.data(), residual.data(), weight.data(), out.data(), res.data(), tokens, hidden, dtype,
                          kFusedEps);
      });
  row.algbw = static_cast<double>(row.bytes) / row.time_us / 1e3;
  row.busbw = row.algbw * 2.0 * (world - 1) / world;
  return row;
}

}  // namespace tpcoll::bench
