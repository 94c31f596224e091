// fused all-reduce + residual add + RMSNorm with FP8 output: every algorithm
// equals, bit for bit, the fused op followed by the CPU quantisation; timed
// without out (as it replaces the fused op in a model) beside the same-run
// fused op without quantisation (the baseline column, so speedup = fused /
// fused_fp8: the FP8 output's cost is 1 / speedup - 1).
#include "cpu/kernels.hpp"
#include "tools/bench/fused_reference.hpp"
#include "tools/bench/harness.hpp"

#include <cstring>
#include <vector>

namespace tpcoll::bench {

Row Harness::fused_fp8(DType dtype, std::size_t tokens, std::size_t hidden, Fp8Scaling scaling) {
  Row row = start_row(fp8_op_label(scaling), dtype, tokens * hidden);
  row.tokens = tokens;
  row.hidden = hidden;
  const std::size_t count = row.count;
  auto [seed, x, residual, weight] = fused_operands(dtype, tokens, hidden, comm_.rank());

  // Reference: the fused op, then the quantisation of its out.
  std::vector<std::byte> ref_out(row.bytes), ref_res(row.bytes), out(row.bytes), res(row.bytes);
  std::vector<std::uint8_t> ref_codes(count), codes(count);
  std::vector<float> ref_scales(tokens), scales(tokens);
  comm_.fused_allreduce_residual_rmsnorm(x.data(), residual.data(), weight.data(), ref_out.data(), ref_res.data(),
                                         tokens, hidden, dtype, kFusedEps);
  cpu::quantise_fp8(static_cast<tpcoll_dtype_t>(dtype), ref_out.data(), tokens, hidden,
                    fp8::Fp8Output{ref_codes.data(), ref_scales.data(), static_cast<tpcoll_fp8_scaling_t>(scaling),
                                   kBenchFp8Scale});
  const auto run = [&](void* out_or_null) {
    comm_.fused_allreduce_residual_rmsnorm_fp8(x.data(), residual.data(), weight.data(), out_or_null, res.data(),
                                               codes.data(), scaling, kBenchFp8Scale, scales.data(), tokens, hidden,
                                               dtype, kFusedEps);
  };
  std::string failure;
  for (Algo algo : {Algo::kOneShot, Algo::kTwoShot, Algo::kUnfused, Algo::kFallback}) {
    comm_.force_algo(algo);
    for (void* o : {static_cast<void*>(out.data()), static_cast<void*>(nullptr)}) {
      run(o);
      const bool same = codes == ref_codes && std::memcmp(res.data(), ref_res.data(), row.bytes) == 0 &&
                        (o == nullptr || std::memcmp(out.data(), ref_out.data(), row.bytes) == 0) &&
                        (scaling == Fp8Scaling::kStatic || scales == ref_scales);
      if (!same && failure.empty())
        failure = std::string("fp8 ") + algo_label(algo) + (o ? "" : " (out NULL)") + " differs from fused + quantise";
    }
  }
  comm_.force_algo(std::nullopt);
  row.check = agree(failure.empty(), codes.data(), count) ? "ok" : (failure.empty() ? "ranks differ" : failure);

  const std::int64_t shape[2] = {static_cast<std::int64_t>(tokens), static_cast<std::int64_t>(hidden)};
  row.algo = comm_.plan(Op::kFusedAllReduceRmsNormFp8, dtype, shape).algorithm;
  measure(row, runnable({Algo::kOneShot, Algo::kTwoShot, Algo::kUnfused}, Op::kFusedAllReduceRmsNormFp8, dtype, shape),
          [&] { run(nullptr); }, [] {});
  row.baseline = "fused (no fp8), same run";
  row.baseline_time_us = time_us([&] {
    comm_.fused_allreduce_residual_rmsnorm(x.data(), residual.data(), weight.data(), out.data(), res.data(), tokens,
                                           hidden, dtype, kFusedEps);
  });
  row.algbw = static_cast<double>(row.bytes) / row.time_us / 1e3;
  row.busbw = row.algbw * 2.0 * (comm_.world_size() - 1) / comm_.world_size();
  return row;
}

}  // namespace tpcoll::bench
