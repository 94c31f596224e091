// reduce_scatter and the fused reduce-scatter + residual + RMSNorm: each
// rank's share equals, bit for bit, its elements of our all_reduce (of our
// full fused op), forced to the fallback and in place too. Their baseline is
// that all-reduce (full fused op) of the same input, timed in the same run:
// the target is a reduce-scatter no slower than the all-reduce.
#include "tools/bench/fused_reference.hpp"
#include "tools/bench/harness.hpp"

#include <cstring>
#include <vector>

namespace tpcoll::bench {

Row Harness::reduce_scatter(DType dtype, std::size_t count) {
  Row row = start_row("reduce_scatter", dtype, count);
  row.baseline = "tpcoll all_reduce";
  const int world = comm_.world_size();
  const std::size_t share = row.bytes / static_cast<std::size_t>(world);
  const std::uint64_t seed = mix(count * 137 + static_cast<std::uint64_t>(dtype));
  std::vector<std::byte> in(row.bytes), reduced(row.bytes), out(share), other(share);
  fill_floats(dtype, in.data(), count, seed, comm_.rank());
  comm_.all_reduce(in.data(), reduced.data(), count, dtype);
  const std::byte* mine = reduced.data() + share * static_cast<std::size_t>(comm_.rank());

  std::string failure;
  comm_.reduce_scatter(in.data(), out.data(), count, dtype);
  if (std::memcmp(out.data(), mine, share) != 0) failure = "share differs from all_reduce";
  comm_.force_algo(Algo::kFallback);
  comm_.reduce_scatter(in.data(), other.data(), count, dtype);
  if (std::memcmp(other.data(), mine, share) != 0 && failure.empty()) failure = "fallback share differs from all_reduce";
  comm_.force_algo(std::nullopt);
  std::vector<std::byte> in_place = in;
  std::byte* own = in_place.data() + share * static_cast<std::size_t>(comm_.rank());
  comm_.reduce_scatter(in_place.data(), own, count, dtype);
  if (std::memcmp(own, mine, share) != 0 && failure.empty()) failure = "in-place share differs from all_reduce";
  // Every rank's all-reduce must agree too; the shares differ by design.
  row.check = agree(failure.empty(), reduced.data(), row.bytes) ? "ok" : (failure.empty() ? "ranks differ" : failure);

  const std::int64_t shape[1] = {static_cast<std::int64_t>(count)};
  row.algo = comm_.plan(Op::kReduceScatter, dtype, shape).algorithm;
  row.time_us = time_us([&] { comm_.reduce_scatter(in.data(), out.data(), count, dtype); });
  row.baseline_time_us = time_us([&] { comm_.all_reduce(in.data(), reduced.data(), count, dtype); });
  row.algbw = static_cast<double>(row.bytes) / row.time_us / 1e3;
  row.busbw = row.algbw * (world - 1) / world;
  return row;
}

Row Harness::fused_reduce_scatter(DType dtype, std::size_t tokens, std::size_t hidden) {
  Row row = start_row("fused_rs_rmsnorm", dtype, tokens * hidden);
  row.baseline = "tpcoll fused_allreduce";
  row.tokens = tokens;
  row.hidden = hidden;
  const int world = comm_.world_size();
  const std::size_t share = row.bytes / static_cast<std::size_t>(world);
  const std::size_t rank_offset = share * static_cast<std::size_t>(comm_.rank());
  auto [seed, x, residual, weight] = fused_operands(dtype, tokens, hidden, comm_.rank());
  const std::byte* my_residual = residual.data() + rank_offset;

  // Reference: the full fused op, whose rows of this rank the share must be.
  std::vector<std::byte> full_out(row.bytes), full_res(row.bytes), out(share), res(share);
  comm_.fused_allreduce_residual_rmsnorm(x.data(), residual.data(), weight.data(), full_out.data(), full_res.data(),
                                         tokens, hidden, dtype, kFusedEps);
  std::string failure;
  for (const std::optional<Algo> algo : {std::optional<Algo>{}, std::optional<Algo>{Algo::kFallback}}) {
    comm_.force_algo(algo);
    comm_.fused_reduce_scatter_residual_rmsnorm(x.data(), my_residual, weight.data(), out.data(), res.data(), tokens,
                                                hidden, dtype, kFusedEps);
    if ((std::memcmp(out.data(), full_out.data() + rank_offset, share) != 0 ||
         std::memcmp(res.data(), full_res.data() + rank_offset, share) != 0) &&
        failure.empty())
      failure = std::string(algo ? algo_label(*algo) : "dispatched") + " rows differ from the full fused op";
  }
  comm_.force_algo(std::nullopt);
  row.check = agree(failure.empty(), full_out.data(), row.bytes) ? "ok" : (failure.empty() ? "ranks differ" : failure);
  row.max_error = fused_max_error(dtype, seed, world, residual.data(), weight.data(), full_out.data(), tokens, hidden);

  const std::int64_t shape[2] = {static_cast<std::int64_t>(tokens), static_cast<std::int64_t>(hidden)};
  row.algo = comm_.plan(Op::kFusedReduceScatterRmsNorm, dtype, shape).algorithm;
  row.time_us = time_us([&] {
    comm_.fused_reduce_scatter_residual_rmsnorm(x.data(), my_residual, weight.data(), out.data(), res.data(), tokens,
                                                hidden, dtype, kFusedEps);
  });
  row.baseline_time_us = time_us([&] {
    comm_.fused_allreduce_residual_rmsnorm(x.data(), residual.data(), weight.data(), full_out.data(), full_res.data(),
                                           tokens, hidden, dtype, kFusedEps);
  });
  row.algbw = static_cast<double>(row.bytes) / row.time_us / 1e3;
  row.busbw = row.algbw * (world - 1) / world;
  return row;
}

}  // namespace tpcoll::bench
