// fused all-reduce + residual add + RMSNorm: every algorithm equals, bit for
// bit, our all_reduce followed by our add_rmsnorm; the deviation from an fp64
// reference of the whole op is reported.
#include "tools/bench/data.hpp"
#include "tools/bench/harness.hpp"

#include <cmath>
#include <cstring>
#include <vector>

namespace tpcoll::bench {
namespace {
constexpr float kEps = 1e-6f;
constexpr int kResidualSeedRank = 1000;  // residual and weight are the same on every rank
constexpr int kWeightSeedRank = 1001;
}  // namespace

Row Harness::fused(DType dtype, std::size_t tokens, std::size_t hidden) {
  Row row = start_row("fused_allreduce_rmsnorm", dtype, tokens * hidden);
  row.tokens = tokens;
  row.hidden = hidden;
  const int world = comm_.world_size();
  const std::size_t count = row.count;
  const std::size_t elem = dtype_size(dtype);
  const std::uint64_t seed = mix(tokens * 7919 + hidden * 31 + static_cast<std::uint64_t>(dtype));
  std::vector<std::byte> x(row.bytes), residual(row.bytes), weight(hidden * elem);
  fill_floats(dtype, x.data(), count, seed, comm_.rank());
  fill_floats(dtype, residual.data(), count, seed, kResidualSeedRank);
  fill_floats(dtype, weight.data(), hidden, seed, kWeightSeedRank);

  // Reference: our all-reduce, then our unfused add + RMSNorm.
  std::vector<std::byte> ref_out(row.bytes), ref_res(row.bytes), out(row.bytes), res(row.bytes);
  comm_.all_reduce(x.data(), ref_out.data(), count, dtype);
  comm_.add_rmsnorm(ref_out.data(), residual.data(), weight.data(), ref_out.data(), ref_res.data(), tokens, hidden,
                    dtype, kEps);

  std::string failure;
  for (Algo algo : {Algo::kOneShot, Algo::kTwoShot, Algo::kUnfused, Algo::kFallback}) {
    comm_.force_algo(algo);
    comm_.fused_allreduce_residual_rmsnorm(x.data(), residual.data(), weight.data(), out.data(), res.data(), tokens,
                                           hidden, dtype, kEps);
    if ((std::memcmp(out.data(), ref_out.data(), row.bytes) != 0 ||
         std::memcmp(res.data(), ref_res.data(), row.bytes) != 0) &&
        failure.empty())
      failure = std::string("fused ") + algo_label(algo) + " differs from all_reduce + add_rmsnorm";
  }
  comm_.force_algo(std::nullopt);
  row.check = agree(failure.empty(), ref_out.data(), row.bytes) ? "ok" : (failure.empty() ? "ranks differ" : failure);

  // Deviation from fp64 on up to 64 evenly spaced rows.
  double max_error = 0;
  const std::size_t row_stride = std::max<std::size_t>(1, tokens / 64);
  std::vector<double> s(hidden);
  for (std::size_t t = 0; t < tokens; t += row_stride) {
    double sumsq = 0;
    for (std::size_t h = 0; h < hidden; ++h) {
      const std::size_t i = t * hidden + h;
      double v = load_float(dtype, residual.data(), i);
      for (int r = 0; r < world; ++r) v += rounded_sample(dtype, seed, r, i);
      s[h] = v;
      sumsq += v * v;
    }
    const double inv_rms = 1.0 / std::sqrt(sumsq / static_cast<double>(hidden) + kEps);
    for (std::size_t h = 0; h < hidden; ++h) {
      const double ref = s[h] * inv_rms * load_float(dtype, weight.data(), h);
      max_error = std::max(max_error, std::fabs(load_float(dtype, ref_out.data(), t * hidden + h) - ref));
    }
  }
  row.max_error = max_error;

  const std::int64_t shape[2] = {static_cast<std::int64_t>(tokens), static_cast<std::int64_t>(hidden)};
  row.algo = comm_.plan(Op::kFusedAllReduceRmsNorm, dtype, shape).algorithm;
  measure(
      row,
      [&] {
        comm_.fused_allreduce_residual_rmsnorm(x.data(), residual.data(), weight.data(), out.data(), res.data(), tokens,
                                               hidden, dtype, kEps);
      },
      [&] {
        baseline_->all_reduce(x.data(), out.data(), count, dtype);
        comm_.add_rmsnorm(out.data(), residual.data(), weight.data(), out.data(), res.data(), tokens, hidden, dtype,
                          kEps);
      });
  row.algbw = static_cast<double>(row.bytes) / row.time_us / 1e3;
  row.busbw = row.algbw * 2.0 * (world - 1) / world;
  return row;
}

}  // namespace tpcoll::bench
