// all_reduce: every algorithm gives the same bits, in place too; every rank
// holds the same bits; the result is within rounding of an fp64 reference.
#include "tools/bench/data.hpp"
#include "tools/bench/harness.hpp"

#include <cmath>
#include <cstring>
#include <vector>

namespace tpcoll::bench {

Row Harness::all_reduce(DType dtype, std::size_t count) {
  Row row = start_row("all_reduce", dtype, count);
  const int world = comm_.world_size();
  const std::uint64_t seed = mix(count * 131 + static_cast<std::uint64_t>(dtype));
  std::vector<std::byte> in(row.bytes), out(row.bytes), other(row.bytes);
  fill_floats(dtype, in.data(), count, seed, comm_.rank());

  std::string failure;
  comm_.force_algo(Algo::kOneShot);
  comm_.all_reduce(in.data(), out.data(), count, dtype);
  for (Algo algo : {Algo::kTwoShot, Algo::kFallback}) {
    comm_.force_algo(algo);
    comm_.all_reduce(in.data(), other.data(), count, dtype);
    if (std::memcmp(out.data(), other.data(), row.bytes) != 0 && failure.empty())
      failure = std::string(algo_label(algo)) + " differs from oneshot";
  }
  comm_.force_algo(std::nullopt);
  other = in;
  comm_.all_reduce(other.data(), other.data(), count, dtype);
  if (std::memcmp(out.data(), other.data(), row.bytes) != 0 && failure.empty()) failure = "in-place result differs";

  // fp64 reference on up to 64Ki evenly spaced elements.
  const std::size_t stride = std::max<std::size_t>(1, count / 65536);
  double max_error = 0;
  for (std::size_t i = 0; i < count; i += stride) {
    double ref = 0, magnitude = 0;
    for (int r = 0; r < world; ++r) {
      const double v = rounded_sample(dtype, seed, r, i);
      ref += v;
      magnitude += std::fabs(v);
    }
    const double error = std::fabs(load_float(dtype, out.data(), i) - ref);
    const double tolerance = unit_roundoff(dtype) * std::fabs(ref) + world * 0x1p-24 * magnitude + 0x1p-24;
    max_error = std::max(max_error, error);
    if (!(error <= tolerance) && failure.empty()) failure = "element " + std::to_string(i) + " off the fp64 reference";
  }
  row.max_error = max_error;
  row.check = agree(failure.empty(), out.data(), row.bytes) ? "ok" : (failure.empty() ? "ranks differ" : failure);

  const std::int64_t shape[1] = {static_cast<std::int64_t>(count)};
  row.algo = comm_.plan(Op::kAllReduce, dtype, shape).algorithm;
  measure(
      row, runnable({Algo::kOneShot, Algo::kTwoShot}, Op::kAllReduce, dtype, shape),
      [&] { comm_.all_reduce(in.data(), out.data(), count, dtype); },
      [&] { baseline_->all_reduce(in.data(), other.data(), count, dtype); });
  row.algbw = static_cast<double>(row.bytes) / row.time_us / 1e3;
  row.busbw = row.algbw * 2.0 * (world - 1) / world;
  return row;
}

}  // namespace tpcoll::bench
