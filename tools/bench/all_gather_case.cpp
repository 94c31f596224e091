// all_gather: the output equals, byte for byte, the concatenation along dim of
// every rank's input (recomputed locally), for every algorithm.
#include "tools/bench/data.hpp"
#include "tools/bench/harness.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstring>
#include <vector>

namespace tpcoll::bench {
namespace {

struct GatherShape {
  std::vector<std::int64_t> shape;
  int dim;
};

// dim_kind 0: [rows, cols] along 0; 1: along the last dim (vocab-parallel
// logits); 2: [2, m, cols] along the middle dim.
GatherShape gather_shape(std::size_t count, int dim_kind) {
  const std::int64_t cols = count % 256 == 0 ? 256 : (count % 8 == 0 ? 8 : 1);
  const auto n = static_cast<std::int64_t>(count);
  if (dim_kind == 2 && n % (2 * cols) == 0) return {{2, n / (2 * cols), cols}, 1};
  if (dim_kind == 0) return {{n / cols, cols}, 0};
  return {{n / cols, cols}, 1};
}

std::size_t outer_of(const GatherShape& g) {
  std::size_t outer = 1;
  for (int i = 0; i < g.dim; ++i) outer *= static_cast<std::size_t>(g.shape[i]);
  return outer;
}

}  // namespace

Row Harness::all_gather(DType dtype, std::size_t count, int dim_kind) {
  Row row = start_row("all_gather", dtype, count);
  const int world = comm_.world_size();
  const GatherShape g = gather_shape(count, dim_kind);
  row.shape = fmt::format("[{}] dim {}", fmt::join(g.shape, ", "), g.dim);
  const std::uint64_t seed = mix(count * 977 + static_cast<std::uint64_t>(dtype) * 7 + dim_kind);
  const std::size_t total = row.bytes * world;
  std::vector<std::byte> in(row.bytes), out(total), other(total), expected(total);
  for (std::size_t i = 0; i < row.bytes; ++i) in[i] = std::byte{sample_byte(seed, comm_.rank(), i)};

  const std::size_t outer = outer_of(g);
  const std::size_t inner = row.bytes / outer;
  for (std::size_t o = 0; o < outer; ++o)
    for (int r = 0; r < world; ++r)
      for (std::size_t j = 0; j < inner; ++j)
        expected[(o * world + r) * inner + j] = std::byte{sample_byte(seed, r, o * inner + j)};

  std::string failure;
  comm_.force_algo(Algo::kOneShot);
  comm_.all_gather(in.data(), out.data(), dtype, g.shape, g.dim);
  if (std::memcmp(out.data(), expected.data(), total) != 0) failure = "oneshot differs from the reference gather";
  comm_.force_algo(Algo::kFallback);
  comm_.all_gather(in.data(), other.data(), dtype, g.shape, g.dim);
  if (std::memcmp(other.data(), expected.data(), total) != 0 && failure.empty())
    failure = "fallback differs from the reference gather";
  comm_.force_algo(std::nullopt);
  row.check = agree(failure.empty(), out.data(), total) ? "ok" : (failure.empty() ? "ranks differ" : failure);

  row.algo = comm_.plan(Op::kAllGather, dtype, g.shape, g.dim).algorithm;
  // The baseline gathers contiguously, then (off dim 0) permutes into the
  // concatenated layout, as a framework does with a library gather + cat.
  measure(
      row, {Algo::kOneShot}, [&] { comm_.all_gather(in.data(), out.data(), dtype, g.shape, g.dim); },
      [&] {
        baseline_->all_gather_bytes(in.data(), g.dim == 0 ? out.data() : other.data(), row.bytes);
        if (g.dim == 0) return;
        for (int r = 0; r < world; ++r)
          for (std::size_t o = 0; o < outer; ++o)
            std::memcpy(out.data() + (o * world + r) * inner, other.data() + r * row.bytes + o * inner, inner);
      });
  row.algbw = static_cast<double>(total) / row.time_us / 1e3;
  row.busbw = row.algbw * (world - 1) / world;
  return row;
}

}  // namespace tpcoll::bench
