// The fused op's rows: the fused op, its FP8 output and the fused
// reduce-scatter.
#include "tools/bench/gpu_cases.hpp"

#include "cpu/kernels.hpp"

namespace tpcoll::bench::gpu {

namespace {

// A fused row's operands on every rank driven here (x per rank, the shared
// residual and weight, drawn from the row's seed) and the contract's outputs
// for the whole op from the CPU kernels (all-reduce in rank order, then add
// + RMSNorm).
struct FusedCase {
  std::uint64_t seed;
  std::vector<std::byte> residual, weight, out, residual_out;
};

FusedCase prepare_fused(GpuJob& job, DType dtype, std::size_t tokens, std::size_t hidden) {
  const int world = job.world();
  const std::size_t count = tokens * hidden, elem = dtype_size(dtype), bytes = count * elem;
  job.allocate_norm_operands();
  FusedCase c{fused_seed(dtype, tokens, hidden), std::vector<std::byte>(bytes), std::vector<std::byte>(hidden * elem),
              std::vector<std::byte>(bytes), std::vector<std::byte>(bytes)};
  std::vector<std::vector<std::byte>> xs(world, std::vector<std::byte>(bytes));
  for (int r = 0; r < world; ++r) fill_floats(dtype, xs[r].data(), count, c.seed, r);
  fill_floats(dtype, c.residual.data(), count, c.seed, kResidualSeedRank);
  fill_floats(dtype, c.weight.data(), hidden, c.seed, kWeightSeedRank);
  for (GpuRank& g : job.ranks()) {
    check(cudaMemcpy(g.in, xs[g.rank].data(), bytes, cudaMemcpyHostToDevice), "upload");
    check(cudaMemcpy(g.residual, c.residual.data(), bytes, cudaMemcpyHostToDevice), "upload");
    check(cudaMemcpy(g.weight, c.weight.data(), c.weight.size(), cudaMemcpyHostToDevice), "upload");
  }
  std::vector<const void*> sources;
  for (const auto& x : xs) sources.push_back(x.data());
  std::vector<std::byte> sum(bytes);
  cpu::reduce(static_cast<tpcoll_dtype_t>(dtype), sources.data(), world, sum.data(), count);
  cpu::add_rmsnorm(static_cast<tpcoll_dtype_t>(dtype), RmsNormRows{sum.data(), c.residual.data(), c.weight.data(),
                                                                   c.out.data(), c.residual_out.data(), tokens,
                                                                   hidden, kFusedEps});
  return c;
}

}  // namespace

Row run_fused(GpuJob& job, DType dtype, std::size_t tokens, std::size_t hidden, double copy_bw,
              bool all_algos) {
  const int world = job.world();
  const std::size_t count = tokens * hidden, elem = dtype_size(dtype), bytes = count * elem;
  Row row = start_row("fused_allreduce_rmsnorm", dtype, count, world);
  row.tokens = tokens;
  row.hidden = hidden;
  const FusedCase c = prepare_fused(job, dtype, tokens, hidden);
  // The dispatched algorithm, and with --all-algos every candidate, forced.
  const bool candidates = all_algos && world > 1;
  std::vector<std::optional<Algo>> checked{std::nullopt};
  if (candidates) checked.insert(checked.end(), {Algo::kOneShot, Algo::kTwoShot, Algo::kUnfused});
  std::string failure;
  for (const std::optional<Algo> algo : checked) {
    job.force(algo);
    for (GpuRank& g : job.ranks()) check(cudaMemset(g.out, 0xff, bytes), "memset");
    check(cudaDeviceSynchronize(), "sync before the fused op");
    job.fused(dtype, tokens, hidden);
    check(cudaDeviceSynchronize(), "sync after the fused op");
    int differs = job.first_differing_rank(&GpuRank::out, c.out);
    if (differs < 0) differs = job.first_differing_rank(&GpuRank::residual_out, c.residual_out);
    if (differs >= 0 && failure.empty())
      failure = fmt::format("{}rank {} differs from the CPU kernels",
                            algo ? fmt::format("{}: ", algo_label(*algo)) : std::string(), differs);
  }
  job.force(std::nullopt);
  job.set_check(row, failure);
  row.max_error = fused_max_error(dtype, c.seed, world, c.residual.data(), c.weight.data(), c.out.data(), tokens, hidden);

  tpcoll_plan_info_t plan{};
  const std::int64_t shape[2] = {static_cast<std::int64_t>(tokens), static_cast<std::int64_t>(hidden)};
  tpcoll::check(tpcoll_plan(job.ranks().front().comm, TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM,
                            static_cast<tpcoll_dtype_t>(dtype), 2, shape, 0, &plan));
  row.algo = world == 1 ? "local" : plan.algorithm;
  const int calls = calls_per_replay(bytes);
  const auto call = [&] { job.fused(dtype, tokens, hidden); };
  row.time_us = job.time_calls(row, call, calls);
  if (candidates)
    time_candidates(job, row,
                    job.runnable({Algo::kOneShot, Algo::kTwoShot, Algo::kUnfused}, TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM,
                                 dtype, {shape[0], shape[1]}),
                    call, calls);
  row.algbw = static_cast<double>(bytes) / row.time_us / 1e3;
  row.busbw = row.algbw * 2.0 * (world - 1) / world;
  if (world == 1) {
    row.baseline = "copy-roofline";
    row.baseline_time_us = 4.0 * static_cast<double>(bytes) / copy_bw * 1e6;
    return row;
  }
  row.baseline = "all_reduce+add_rmsnorm";
  row.baseline_time_us = job.time_calls(row, [&] { job.all_reduce_then_norm(dtype, tokens, hidden); }, calls);
  return row;
}

Row run_fused_fp8(GpuJob& job, DType dtype, std::size_t tokens, std::size_t hidden, Fp8Scaling scaling) {
  const int world = job.world();
  const std::size_t count = tokens * hidden, elem = dtype_size(dtype), bytes = count * elem;
  const auto d = static_cast<tpcoll_dtype_t>(dtype);
  Row row = start_row(fp8_op_label(scaling), dtype, count, world);
  row.tokens = tokens;
  row.hidden = hidden;
  const FusedCase c = prepare_fused(job, dtype, tokens, hidden);
  std::vector<std::byte> expected_codes(count);
  std::vector<float> expected_scales(tokens);
  cpu::quantise_fp8(d, c.out.data(), tokens, hidden,
                    fp8::Fp8Output{expected_codes.data(), expected_scales.data(),
                                   static_cast<tpcoll_fp8_scaling_t>(scaling), kBenchFp8Scale});
  std::vector<std::byte> expected_scale_bytes(tokens * sizeof(float));
  std::memcpy(expected_scale_bytes.data(), expected_scales.data(), expected_scale_bytes.size());
  std::string failure;
  for (const bool write_out : {false, true}) {
    check(cudaDeviceSynchronize(), "sync before the FP8 op");
    for (GpuRank& g : job.ranks()) check(cudaMemset(g.codes, 0xa5, count), "cudaMemset");
    job.fused_fp8(dtype, tokens, hidden, scaling, write_out);
    check(cudaDeviceSynchronize(), "sync after the FP8 op");
    int differs = job.first_differing_rank(&GpuRank::codes, expected_codes);
    if (differs < 0 && scaling == Fp8Scaling::kPerToken)
      differs = job.first_differing_rank(&GpuRank::scales, expected_scale_bytes);
    if (differs < 0) differs = job.first_differing_rank(&GpuRank::residual_out, c.residual_out);
    if (differs < 0 && write_out) differs = job.first_differing_rank(&GpuRank::out, c.out);
    if (differs >= 0 && failure.empty())
      failure = fmt::format("rank {} differs from the CPU kernels{}", differs, write_out ? "" : " (out NULL)");
  }
  job.set_check(row, failure);

  tpcoll_plan_info_t plan{};
  const std::int64_t shape[2] = {static_cast<std::int64_t>(tokens), static_cast<std::int64_t>(hidden)};
  tpcoll::check(tpcoll_plan(job.ranks().front().comm, TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM_FP8, d, 2, shape, 0, &plan));
  row.algo = world == 1 ? "local" : plan.algorithm;
  const int calls = calls_per_replay(bytes);
  row.time_us =
      job.time_calls(row, [&] { job.fused_fp8(dtype, tokens, hidden, scaling, /*write_out=*/false); }, calls);
  row.algbw = static_cast<double>(bytes) / row.time_us / 1e3;
  row.busbw = row.algbw * 2.0 * (world - 1) / world;
  row.baseline = "fused (no fp8), same run";
  row.baseline_time_us = job.time_calls(row, [&] { job.fused(dtype, tokens, hidden); }, calls);
  return row;
}

Row run_fused_reduce_scatter(GpuJob& job, DType dtype, std::size_t tokens, std::size_t hidden) {
  const int world = job.world();
  const std::size_t count = tokens * hidden, elem = dtype_size(dtype), bytes = count * elem;
  Row row = start_row("fused_rs_rmsnorm", dtype, count, world);
  row.baseline = "tpcoll fused_allreduce";
  row.tokens = tokens;
  row.hidden = hidden;
  const FusedCase c = prepare_fused(job, dtype, tokens, hidden);
  check(cudaDeviceSynchronize(), "sync before the fused reduce-scatter");
  job.fused_reduce_scatter(dtype, tokens, hidden);
  check(cudaDeviceSynchronize(), "sync after the fused reduce-scatter");
  int differs = job.first_differing_share(&GpuRank::scratch, false, c.out);
  if (differs < 0) differs = job.first_differing_share(&GpuRank::residual_out, true, c.residual_out);
  job.set_check(row, differs < 0 ? "" : fmt::format("rank {}'s rows differ from the full fused op", differs));
  row.max_error = fused_max_error(dtype, c.seed, world, c.residual.data(), c.weight.data(), c.out.data(), tokens, hidden);

  tpcoll_plan_info_t plan{};
  const std::int64_t shape[2] = {static_cast<std::int64_t>(tokens), static_cast<std::int64_t>(hidden)};
  tpcoll::check(tpcoll_plan(job.ranks().front().comm, TPCOLL_OP_FUSED_REDUCE_SCATTER_RMSNORM,
                            static_cast<tpcoll_dtype_t>(dtype), 2, shape, 0, &plan));
  row.algo = plan.algorithm;
  const int calls = calls_per_replay(bytes);
  row.time_us = job.time_calls(row, [&] { job.fused_reduce_scatter(dtype, tokens, hidden); }, calls);
  row.baseline_time_us = job.time_calls(row, [&] { job.fused(dtype, tokens, hidden); }, calls);
  row.algbw = static_cast<double>(bytes) / row.time_us / 1e3;
  row.busbw = row.algbw * (world - 1) / world;
  return row;
}

}  // namespace tpcoll::bench::gpu
