// The all-reduce, all-gather and reduce-scatter rows.
#include "tools/bench/gpu_cases.hpp"

#include <fmt/ranges.h>

namespace tpcoll::bench::gpu {
namespace {

// Bytes every rank reads and writes in device memory, all ranks together.
double bytes_touched(const std::string& algo, std::size_t bytes, int world) {
  const double s = static_cast<double>(bytes), n = world;
  if (algo == "twoshot") return n * (2.0 + 4.0 * (n - 1) / n) * s;
  return n * (2.0 * n + 1.0) * s;  // one-shot: push (n-1)S + read S; reduce nS + write S
}

// Bytes all ranks read and write in an all-gather: each rank reads its input
// once, writes it to every peer's staging and into its own output, then
// copies each peer's staged part into its output.
double gather_bytes_touched(std::size_t bytes, int world) {
  const double s = static_cast<double>(bytes), n = world;
  return n * (3.0 * n - 1.0) * s;
}

// Fills every rank's input with its samples of `seed` and returns their sum
// by the contract, on the host: rank 0's value, plus ranks 1..n-1 in order,
// one rounding.
std::vector<std::byte> upload_summands(GpuJob& job, DType dtype, std::size_t count, std::uint64_t seed) {
  const std::size_t bytes = count * dtype_size(dtype);
  std::vector<std::byte> host(bytes), sum(bytes);
  for (GpuRank& g : job.ranks()) {
    fill_floats(dtype, host.data(), count, seed, g.rank);
    check(cudaMemcpy(g.in, host.data(), bytes, cudaMemcpyHostToDevice), "upload");
  }
  for (std::size_t i = 0; i < count; ++i) {
    float acc = rounded_sample(dtype, seed, 0, i);
    for (int r = 1; r < job.world(); ++r) acc += rounded_sample(dtype, seed, r, i);
    store_float(dtype, sum.data(), i, acc);
  }
  return sum;
}

}  // namespace

Row run_all_reduce(GpuJob& job, const Options& o, DType dtype, std::size_t count, double copy_bw) {
  const int world = job.world();
  const std::size_t elem = dtype_size(dtype);
  const std::size_t bytes = count * elem;
  Row row = start_row("all_reduce", dtype, count, world);
  row.baseline = "copy-roofline";

  const std::vector<std::byte> expected =
      upload_summands(job, dtype, count, mix(count * 131 + static_cast<std::uint64_t>(dtype)));
  std::string failure;
  for (Algo algo : {Algo::kOneShot, Algo::kTwoShot}) {
    job.force(algo);
    for (GpuRank& g : job.ranks()) check(cudaMemset(g.out, 0xff, bytes), "memset");
    // cudaMemset runs on the legacy stream, which the ranks' non-blocking
    // streams do not wait for.
    check(cudaDeviceSynchronize(), "sync after memset");
    job.all_reduce(count, dtype);
    check(cudaDeviceSynchronize(), "sync after all_reduce");
    if (const int r = job.first_differing_rank(&GpuRank::out, expected); r >= 0 && failure.empty())
      failure = fmt::format("{} on rank {} differs from the contract", algo_label(algo), r);
  }
  job.force(std::nullopt);
  job.set_check(row, failure);

  tpcoll_plan_info_t plan{};
  const std::int64_t shape[1] = {static_cast<std::int64_t>(count)};
  tpcoll::check(tpcoll_plan(job.ranks().front().comm, TPCOLL_OP_ALL_REDUCE, static_cast<tpcoll_dtype_t>(dtype), 1, shape, 0, &plan));
  row.algo = plan.algorithm;
  const int calls = calls_per_replay(bytes);
  const auto call = [&] { job.all_reduce(count, dtype); };
  row.time_us = job.time_calls(row, call, calls);
  if (o.all_algos) time_candidates(job, row, {Algo::kOneShot, Algo::kTwoShot}, call, calls);
  row.algbw = static_cast<double>(bytes) / row.time_us / 1e3;
  row.busbw = row.algbw * 2.0 * (world - 1) / world;
  row.baseline_time_us = bytes_touched(row.algo, bytes, world) / copy_bw * 1e6;
  return row;
}

Row run_all_gather(GpuJob& job, DType dtype, const std::vector<std::int64_t>& shape, int dim, GatherBaseline baseline,
                   double copy_bw) {
  const int world = job.world();
  std::size_t count = 1;
  for (std::int64_t e : shape) count *= static_cast<std::size_t>(e);
  Row row = start_row("all_gather", dtype, count, world);
  std::size_t inner = dtype_size(dtype);
  for (std::size_t d = static_cast<std::size_t>(dim); d < shape.size(); ++d) inner *= static_cast<std::size_t>(shape[d]);
  const std::size_t outer = row.bytes / inner, total = row.bytes * world;
  row.shape = fmt::format("[{}] dim {}", fmt::join(shape, ", "), dim);

  const std::uint64_t seed = mix(row.bytes * 977 + static_cast<std::uint64_t>(dtype) * 7 + static_cast<unsigned>(dim));
  std::vector<std::byte> host(row.bytes), expected(total);
  for (GpuRank& g : job.ranks()) {
    for (std::size_t i = 0; i < row.bytes; ++i) host[i] = std::byte{sample_byte(seed, g.rank, i)};
    check(cudaMemcpy(g.in, host.data(), row.bytes, cudaMemcpyHostToDevice), "upload");
    check(cudaMemset(g.out, 0xff, total), "memset");
  }
  for (std::size_t o = 0; o < outer; ++o)
    for (int r = 0; r < world; ++r)
      for (std::size_t j = 0; j < inner; ++j)
        expected[(o * world + r) * inner + j] = std::byte{sample_byte(seed, r, o * inner + j)};
  check(cudaDeviceSynchronize(), "sync before all_gather");
  job.all_gather(dtype, shape, dim);
  check(cudaDeviceSynchronize(), "sync after all_gather");
  const int differs = job.first_differing_rank(&GpuRank::out, expected);
  job.set_check(row, differs < 0 ? "" : fmt::format("rank {} differs from the concatenation", differs));

  tpcoll_plan_info_t plan{};
  tpcoll::check(tpcoll_plan(job.ranks().front().comm, TPCOLL_OP_ALL_GATHER, static_cast<tpcoll_dtype_t>(dtype),
                            static_cast<int>(shape.size()), shape.data(), dim, &plan));
  row.algo = plan.algorithm;
  const int calls = calls_per_replay(row.bytes);
  row.time_us = job.time_calls(row, [&] { job.all_gather(dtype, shape, dim); }, calls);
  row.algbw = static_cast<double>(total) / row.time_us / 1e3;
  row.busbw = row.algbw * (world - 1) / world;
  if (baseline == GatherBaseline::kRoofline) {
    row.baseline = "copy-roofline";
    row.baseline_time_us = gather_bytes_touched(row.bytes, world) / copy_bw * 1e6;
    return row;
  }
  row.baseline = "flat-gather+concat";
  const std::vector<std::int64_t> flat{static_cast<std::int64_t>(row.count)};
  row.baseline_time_us = job.time_calls(
      row,
      [&] {
        job.all_gather(dtype, flat, 0, /*into_scratch=*/true);
        for (GpuRank& g : job.ranks())
          for (int r = 0; r < world; ++r)
            check(cudaMemcpy2DAsync(static_cast<std::byte*>(g.out) + r * inner, world * inner,
                                    static_cast<const std::byte*>(g.scratch) + r * row.bytes, inner, inner, outer,
                                    cudaMemcpyDeviceToDevice, g.stream),
                  "concatenation copy");
      },
      calls);
  return row;
}

Row run_reduce_scatter(GpuJob& job, DType dtype, std::size_t count) {
  const int world = job.world();
  const std::size_t bytes = count * dtype_size(dtype);
  Row row = start_row("reduce_scatter", dtype, count, world);
  row.baseline = "tpcoll all_reduce";
  const std::vector<std::byte> expected =
      upload_summands(job, dtype, count, mix(count * 137 + static_cast<std::uint64_t>(dtype)));
  for (GpuRank& g : job.ranks()) check(cudaMemset(g.scratch, 0xff, bytes), "memset");
  check(cudaDeviceSynchronize(), "sync before reduce_scatter");
  job.all_reduce(count, dtype);
  job.reduce_scatter(count, dtype);
  check(cudaDeviceSynchronize(), "sync after reduce_scatter");
  std::string failure;
  if (const int r = job.first_differing_rank(&GpuRank::out, expected); r >= 0)
    failure = fmt::format("all_reduce on rank {} differs from the contract", r);
  else if (const int s = job.first_differing_share(&GpuRank::scratch, false, expected); s >= 0)
    failure = fmt::format("share of rank {} differs from all_reduce", s);
  job.set_check(row, failure);

  tpcoll_plan_info_t plan{};
  const std::int64_t shape[1] = {static_cast<std::int64_t>(count)};
  tpcoll::check(tpcoll_plan(job.ranks().front().comm, TPCOLL_OP_REDUCE_SCATTER, static_cast<tpcoll_dtype_t>(dtype), 1,
                            shape, 0, &plan));
  row.algo = plan.algorithm;
  const int calls = calls_per_replay(bytes);
  row.time_us = job.time_calls(row, [&] { job.reduce_scatter(count, dtype); }, calls);
  row.baseline_time_us = job.time_calls(row, [&] { job.all_reduce(count, dtype); }, calls);
  row.algbw = static_cast<double>(bytes) / row.time_us / 1e3;
  row.busbw = row.algbw * (world - 1) / world;
  return row;
}

}  // namespace tpcoll::bench::gpu
