// Collectives across real processes, through the public C++ API only. Run
// under the launcher: `tpcoll run -n N -- tpcoll_multiprocess_tests`. Every
// rank runs every test in the same order (no shuffling, no per-rank filters),
// creates its communicator from the launcher's environment, and checks its own
// results against references it computes locally: each rank can regenerate
// every rank's input, which is a deterministic function of (rank, index).
//
// Inside a test, ranks must issue the same collectives whatever their checks
// found, so checks are EXPECT_* (never an early return between collectives).
#include <tpcoll/tpcoll.hpp>

#include "common/numerics.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace {

namespace nx = tpcoll::numerics;
using tpcoll::Algo;
using tpcoll::DType;
using tpcoll::Op;
using Bytes = std::vector<std::byte>;

// ---- data ----

std::uint64_t mix(std::uint64_t x) {  // splitmix64's finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::uint64_t hash(std::uint64_t salt, int rank, std::size_t i) {
  return mix(mix(salt * 0x100000001b3ull + static_cast<std::uint64_t>(rank)) ^ i);
}

std::size_t esize(DType d) { return tpcoll::dtype_size(d); }
const char* name(DType d) { return tpcoll::dtype_name(d); }

// Element i of `rank`'s all-reduce input, as a bit pattern: finite values
// whose sums round in interesting ways (mixed magnitudes and signs, fp16
// subnormals), and signed zeros at fixed positions on every rank.
std::uint32_t reduce_input(DType d, std::uint64_t salt, int rank, std::size_t i) {
  const std::uint64_t h = hash(salt, rank, i);
  const std::uint32_t sign = static_cast<std::uint32_t>(h >> 63);
  if (i % 97 == 13) return d == DType::kFloat32 ? 0x80000000u : 0x8000u;  // -0 on every rank: sum -0
  if (i % 89 == 7 && rank > 0) return 0;                                  // +0 after rank 0's value
  switch (d) {
    case DType::kFloat32: {
      const std::uint32_t exponent = h % 61 == 0 ? 0u : 112u + static_cast<std::uint32_t>((h >> 8) % 32);
      return (sign << 31) | (exponent << 23) | static_cast<std::uint32_t>((h >> 16) & 0x7fffff);
    }
    case DType::kFloat16: {  // |x| < 32, sums of 8 stay finite; exponent 0 = subnormal
      const std::uint32_t exponent = static_cast<std::uint32_t>((h >> 8) % 20);
      return (sign << 15) | (exponent << 10) | static_cast<std::uint32_t>((h >> 16) & 0x3ff);
    }
    default: {
      const std::uint32_t exponent = 100u + static_cast<std::uint32_t>((h >> 8) % 40);
      return (sign << 15) | (exponent << 7) | static_cast<std::uint32_t>((h >> 16) & 0x7f);
    }
  }
}

float widen(DType d, std::uint32_t v) {
  if (d == DType::kFloat32) return std::bit_cast<float>(v);
  const auto h = static_cast<std::uint16_t>(v);
  return d == DType::kFloat16 ? nx::fp16_to_float(h) : nx::bf16_to_float(h);
}

std::uint32_t narrow(DType d, float f) {
  if (d == DType::kFloat32) return std::bit_cast<std::uint32_t>(f);
  return d == DType::kFloat16 ? nx::float_to_fp16(f) : nx::float_to_bf16(f);
}

void put(DType d, Bytes& buf, std::size_t i, std::uint32_t v) {
  if (esize(d) == 4) {
    std::memcpy(&buf[i * 4], &v, 4);
  } else {
    const auto h = static_cast<std::uint16_t>(v);
    std::memcpy(&buf[i * 2], &h, 2);
  }
}

std::uint32_t get(DType d, const Bytes& buf, std::size_t i) {
  std::uint32_t v = 0;
  std::memcpy(&v, &buf[i * esize(d)], esize(d));
  return v;
}

Bytes rank_input(DType d, std::uint64_t salt, int rank, std::size_t count) {
  Bytes b(count * esize(d));
  for (std::size_t i = 0; i < count; ++i) put(d, b, i, reduce_input(d, salt, rank, i));
  return b;
}

// The contract: widen every rank's element, add in rank order starting from
// rank 0's value, round once.
Bytes reference_sum(DType d, std::uint64_t salt, int world, std::size_t count) {
  Bytes b(count * esize(d));
  for (std::size_t i = 0; i < count; ++i) {
    float acc = widen(d, reduce_input(d, salt, 0, i));
    for (int r = 1; r < world; ++r) acc = acc + widen(d, reduce_input(d, salt, r, i));
    put(d, b, i, narrow(d, acc));
  }
  return b;
}

// Byte-for-byte comparison that names the first differing element.
::testing::AssertionResult same_bytes(const Bytes& got, const Bytes& expected, std::size_t elem) {
  if (got.size() != expected.size())
    return ::testing::AssertionFailure() << "size " << got.size() << " vs " << expected.size();
  const auto diff = std::mismatch(got.begin(), got.end(), expected.begin());
  if (diff.first == got.end()) return ::testing::AssertionSuccess();
  const std::size_t at = static_cast<std::size_t>(diff.first - got.begin()) / elem;
  std::size_t differing = 0;
  for (std::size_t i = 0; i < got.size(); i += elem)
    if (std::memcmp(&got[i], &expected[i], elem) != 0) ++differing;
  auto r = ::testing::AssertionFailure();
  r << differing << " of " << got.size() / elem << " elements differ; first at " << at << ": got";
  for (std::size_t k = 0; k < elem; ++k) r << " " << std::hex << static_cast<int>(got[at * elem + k]);
  r << ", expected";
  for (std::size_t k = 0; k < elem; ++k) r << " " << std::hex << static_cast<int>(expected[at * elem + k]);
  return r;
}

std::string algo_label(std::optional<Algo> a) {
  if (!a) return "auto";
  switch (*a) {
    case Algo::kOneShot: return "oneshot";
    case Algo::kTwoShot: return "twoshot";
    case Algo::kUnfused: return "unfused";
    case Algo::kFallback: return "fallback";
  }
  return "?";
}

constexpr std::array kReducible{DType::kFloat32, DType::kFloat16, DType::kBFloat16};
const std::vector<std::optional<Algo>> kReduceAlgos{std::nullopt, Algo::kOneShot, Algo::kTwoShot, Algo::kFallback};

// ---- fixture ----

class Mp : public ::testing::Test {
 protected:
  void SetUp() override {
    comm_ = std::make_unique<tpcoll::Communicator>(tpcoll::Config::from_env());
    rank_ = comm_->rank();
    world_ = comm_->world_size();
  }
  void TearDown() override { comm_.reset(); }

  tpcoll::Communicator& comm() { return *comm_; }

  // Every rank's value of `v`, gathered.
  std::vector<std::int64_t> gather_all(std::int64_t v) {
    std::vector<std::int64_t> all(static_cast<std::size_t>(world_));
    const std::int64_t shape[] = {1};
    comm().all_gather(&v, all.data(), DType::kInt64, shape, 0);
    return all;
  }

  std::unique_ptr<tpcoll::Communicator> comm_;
  int rank_ = 0;
  int world_ = 1;
};

// ---- all_reduce ----

class AllReduce : public Mp, public ::testing::WithParamInterface<DType> {};

TEST_P(AllReduce, EveryAlgorithmGivesTheReferenceBits) {
  const DType d = GetParam();
  for (const std::size_t count : {1u, 7u, 1000u, 4097u, 300000u}) {
    const std::uint64_t salt = count * 3 + static_cast<std::uint64_t>(d);
    const Bytes in = rank_input(d, salt, rank_, count);
    const Bytes expected = reference_sum(d, salt, world_, count);
    std::optional<Bytes> first;
    for (const auto& algo : kReduceAlgos) {
      comm().force_algo(algo);
      const std::string what = std::string(name(d)) + " count " + std::to_string(count) + " " + algo_label(algo);
      const tpcoll::PlanInfo plan = comm().plan(Op::kAllReduce, d, std::array{static_cast<std::int64_t>(count)});
      if (algo) { EXPECT_EQ(plan.algo, *algo) << what << ": " << plan.reason; }

      Bytes out(in.size(), std::byte{0x7e});
      comm().all_reduce(in.data(), out.data(), count, d);
      EXPECT_TRUE(same_bytes(out, expected, esize(d))) << what << ", out of place";

      Bytes inplace = in;
      comm().all_reduce(inplace.data(), inplace.data(), count, d);
      EXPECT_TRUE(same_bytes(inplace, expected, esize(d))) << what << ", in place";

      if (!first) first = out;
      EXPECT_TRUE(same_bytes(out, *first, esize(d))) << what << " differs from auto";
    }
  }
}

TEST_P(AllReduce, NegativeZeroSumsToNegativeZero) {
  const DType d = GetParam();
  const std::size_t count = 4097;
  const std::uint32_t neg = d == DType::kFloat32 ? 0x80000000u : 0x8000u;
  Bytes all_neg(count * esize(d));
  for (std::size_t i = 0; i < count; ++i) put(d, all_neg, i, neg);
  // Rank 0 gives -0 and the others +0: -0 + +0 = +0 (at world 1 the sum is rank 0's -0).
  Bytes mixed(count * esize(d));
  for (std::size_t i = 0; i < count; ++i) put(d, mixed, i, rank_ == 0 ? neg : 0);
  for (const auto& algo : kReduceAlgos) {
    comm().force_algo(algo);
    Bytes out(all_neg.size(), std::byte{0x11});
    comm().all_reduce(all_neg.data(), out.data(), count, d);
    EXPECT_TRUE(same_bytes(out, all_neg, esize(d))) << name(d) << " " << algo_label(algo) << ": -0 sum lost its sign";
    comm().all_reduce(mixed.data(), out.data(), count, d);
    const std::uint32_t expected = world_ == 1 ? neg : 0u;
    for (std::size_t i = 0; i < count; ++i) {
      if (get(d, out, i) != expected) {
        ADD_FAILURE() << name(d) << " " << algo_label(algo) << ": -0 + +0 at " << i << " gave 0x" << std::hex
                      << get(d, out, i);
        break;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, AllReduce, ::testing::ValuesIn(kReducible),
                         [](const auto& info) { return std::string(name(info.param)); });

TEST_F(Mp, ManySmallAllReducesBackToBack) {
  // Exact integers, so every iteration's sum is known; a stale or early read
  // of a peer's slot shows up as a wrong value. One-shot and two-shot take
  // turns in runs of 7, so slots and result areas are reused by both.
  const int iterations = 100000;
  std::array<float, 8> x{}, y{};
  int bad = 0;
  for (int it = 0; it < iterations; ++it) {
    if (it % 7 == 0) comm().force_algo((it / 7) % 2 ? Algo::kTwoShot : Algo::kOneShot);
    for (int j = 0; j < 8; ++j) x[j] = static_cast<float>((rank_ + 1) * 1000 + it % 4096 + j);
    comm().all_reduce(x.data(), y.data(), 8, DType::kFloat32);
    for (int j = 0; j < 8; ++j) {
      const float expected = static_cast<float>(1000 * world_ * (world_ + 1) / 2 + world_ * (it % 4096 + j));
      if (y[j] != expected && bad++ < 5)
        ADD_FAILURE() << "iteration " << it << " element " << j << ": " << y[j] << " != " << expected;
    }
  }
  EXPECT_EQ(bad, 0);
}

// ---- all_gather ----

// torch.cat(inputs of every rank, dim) for contiguous inputs of `shape`.
Bytes reference_cat(const std::vector<Bytes>& inputs, const std::vector<std::int64_t>& shape, int dim, std::size_t elem) {
  std::size_t outer = 1, inner = elem;
  for (int i = 0; i < dim; ++i) outer *= static_cast<std::size_t>(shape[i]);
  for (std::size_t i = static_cast<std::size_t>(dim); i < shape.size(); ++i) inner *= static_cast<std::size_t>(shape[i]);
  Bytes out;
  for (std::size_t o = 0; o < outer; ++o)
    for (const Bytes& in : inputs) out.insert(out.end(), in.begin() + o * inner, in.begin() + (o + 1) * inner);
  return out;
}

Bytes gather_input(std::uint64_t salt, int rank, std::size_t bytes) {
  Bytes b(bytes);
  for (std::size_t i = 0; i < bytes; ++i) b[i] = static_cast<std::byte>(hash(salt, rank, i / 8) >> (8 * (i % 8)));
  return b;
}

constexpr std::array kAllDtypes{DType::kFloat32,    DType::kFloat16,    DType::kBFloat16, DType::kFloat64,
                                DType::kFloat8E4M3, DType::kFloat8E5M2, DType::kInt8,     DType::kUInt8,
                                DType::kInt32,      DType::kInt64};

class AllGather : public Mp, public ::testing::WithParamInterface<DType> {
 protected:
  // Gathers `shape` along every dim with every algorithm setting and checks the bytes.
  void check_every_dim(const std::vector<std::int64_t>& shape, const std::vector<std::optional<Algo>>& algos,
                       bool expect_chunks = false) {
    for (int dim = 0; dim < static_cast<int>(shape.size()); ++dim) check_dim(shape, dim, algos, expect_chunks);
  }

  void check_dim(const std::vector<std::int64_t>& shape, int dim, const std::vector<std::optional<Algo>>& algos,
                 bool expect_chunks) {
    const DType d = GetParam();
    std::size_t count = 1;
    for (auto e : shape) count *= static_cast<std::size_t>(e);
    const std::size_t bytes = count * esize(d);
    {
      const std::uint64_t salt = bytes * 31 + static_cast<std::uint64_t>(dim) * 7 + static_cast<std::uint64_t>(d);
      std::vector<Bytes> inputs;
      for (int r = 0; r < world_; ++r) inputs.push_back(gather_input(salt, r, bytes));
      const Bytes expected = reference_cat(inputs, shape, dim, esize(d));
      for (const auto& algo : algos) {
        comm().force_algo(algo);
        std::string what = std::string(name(d)) + " shape [";
        for (auto e : shape) what += std::to_string(e) + ",";
        what += "] dim " + std::to_string(dim) + " " + algo_label(algo);
        const tpcoll::PlanInfo plan = comm().plan(Op::kAllGather, d, shape, dim);
        // Two-shot and unfused do not apply to a gather: the table decides instead.
        if (algo == Algo::kOneShot || algo == Algo::kFallback) { EXPECT_EQ(plan.algo, *algo) << what; }
        if (algo == Algo::kTwoShot || algo == Algo::kUnfused) {
          EXPECT_NE(plan.algo, Algo::kTwoShot) << what;
          EXPECT_NE(plan.algo, Algo::kUnfused) << what;
          EXPECT_NE(plan.reason.find("does not apply"), std::string::npos) << what << ": " << plan.reason;
        }
        if (expect_chunks && plan.algo != Algo::kFallback) { EXPECT_GT(plan.steps, 1u) << what; }
        Bytes out(expected.size(), std::byte{0x5c});
        comm().all_gather(inputs[static_cast<std::size_t>(rank_)].data(), out.data(), d, shape, dim);
        EXPECT_TRUE(same_bytes(out, expected, esize(d))) << what;
      }
    }
  }
};

TEST_P(AllGather, EveryDimOfOddShapes) {
  const std::vector<std::optional<Algo>> algos{std::nullopt, Algo::kOneShot, Algo::kFallback, Algo::kTwoShot,
                                               Algo::kUnfused};
  for (const auto& shape : std::vector<std::vector<std::int64_t>>{{1}, {13}, {5, 3}, {3, 5, 7}, {1, 1, 9}})
    check_every_dim(shape, algos);
}

TEST_P(AllGather, LargerThanTheStagingBuffer) {
  // More than 1 MiB (the default staging buffer) per rank, odd extents.
  const std::size_t elems = (std::size_t{1} << 20) / esize(GetParam()) + 4099;
  const std::int64_t last = static_cast<std::int64_t>(elems / 21 + 1);
  check_every_dim({3, 7, last}, {std::nullopt, Algo::kOneShot}, /*expect_chunks=*/true);
  check_dim({3, 7, last}, 1, {Algo::kFallback}, false);  // the fallback moves it all through the bootstrap: once
}

INSTANTIATE_TEST_SUITE_P(Dtypes, AllGather, ::testing::ValuesIn(kAllDtypes),
                         [](const auto& info) { return std::string(name(info.param)); });

// ---- fused all-reduce + residual + RMSNorm ----

// Identical on every rank (as in tensor parallelism): residual and weight.
Bytes shared_values(DType d, std::uint64_t salt, std::size_t count) { return rank_input(d, salt, 0, count); }

class Fused : public Mp, public ::testing::WithParamInterface<DType> {};

TEST_P(Fused, EveryAlgorithmEqualsAllReduceThenAddRmsNorm) {
  const DType d = GetParam();
  const float eps = 1e-6f;
  const std::vector<std::optional<Algo>> algos{std::nullopt, Algo::kOneShot, Algo::kTwoShot, Algo::kUnfused,
                                               Algo::kFallback};
  for (const std::size_t tokens : {1u, 3u, 64u}) {
    for (const std::size_t hidden : {8u, 2880u, 4096u, 5000u, 7u}) {
      const std::size_t n = tokens * hidden, bytes = n * esize(d);
      const std::uint64_t salt = n * 13 + hidden + static_cast<std::uint64_t>(d);
      const Bytes x = rank_input(d, salt, rank_, n);
      const Bytes residual = shared_values(d, salt + 1, n);
      const Bytes weight = shared_values(d, salt + 2, hidden);

      // The unfused reference, with this communicator's own ops.
      comm().force_algo(std::nullopt);
      Bytes reduced(bytes);
      comm().all_reduce(x.data(), reduced.data(), n, d);
      EXPECT_TRUE(same_bytes(reduced, reference_sum(d, salt, world_, n), esize(d))) << "all_reduce of x";
      for (const bool with_residual : {false, true}) {
        const void* res = with_residual ? residual.data() : nullptr;
        Bytes ref_out(bytes), ref_res(bytes, std::byte{0x33});
        comm().add_rmsnorm(reduced.data(), res, weight.data(), ref_out.data(), ref_res.data(), tokens, hidden, d, eps);
        for (const auto& algo : algos) {
          comm().force_algo(algo);
          const std::string what = std::string(name(d)) + " " + std::to_string(tokens) + "x" + std::to_string(hidden) +
                                   (with_residual ? " residual " : " ") + algo_label(algo);
          const tpcoll::PlanInfo plan = comm().plan(
              Op::kFusedAllReduceRmsNorm, d,
              std::array{static_cast<std::int64_t>(tokens), static_cast<std::int64_t>(hidden)});
          if (algo) {
            // A forced algorithm is used, except that rows too wide for the
            // fused kernels go unfused; a row of at most 2 KiB always fits
            // (staging buffers are at least 4 KiB).
            const bool narrow_rows = hidden * esize(d) <= 2048;
            EXPECT_TRUE(plan.algo == *algo ||
                        (!narrow_rows && plan.algo == Algo::kUnfused && *algo != Algo::kFallback))
                << what << ": planned " << plan.algorithm << " (" << plan.reason << ")";
          }

          Bytes out(bytes, std::byte{0x44}), res_out(bytes, std::byte{0x33});
          comm().fused_allreduce_residual_rmsnorm(x.data(), res, weight.data(), out.data(), res_out.data(), tokens,
                                                  hidden, d, eps);
          EXPECT_TRUE(same_bytes(out, ref_out, esize(d))) << what << ": out";
          EXPECT_TRUE(same_bytes(res_out, ref_res, esize(d)))
              << what << (with_residual ? ": residual_out" : ": residual_out written without a residual");

          // out aliasing x, residual_out aliasing residual.
          Bytes xa = x, ra = residual;
          comm().fused_allreduce_residual_rmsnorm(xa.data(), with_residual ? ra.data() : nullptr, weight.data(),
                                                  xa.data(), with_residual ? ra.data() : nullptr, tokens, hidden, d,
                                                  eps);
          EXPECT_TRUE(same_bytes(xa, ref_out, esize(d))) << what << ": out aliasing x";
          if (with_residual) { EXPECT_TRUE(same_bytes(ra, ref_res, esize(d))) << what << ": residual_out aliasing residual"; }
        }
      }
    }
  }
}

TEST_P(Fused, RowsWiderThanHalfTheStagingGoUnfused) {
  // 300000 elements per row is more than half of any staging buffer the
  // variants use (at most 1 MiB): every algorithm but fallback runs unfused.
  const DType d = GetParam();
  const std::size_t tokens = 2, hidden = 300000, n = tokens * hidden, bytes = n * esize(d);
  const std::uint64_t salt = 77 + static_cast<std::uint64_t>(d);
  const Bytes x = rank_input(d, salt, rank_, n);
  const Bytes residual = shared_values(d, salt + 1, n);
  const Bytes weight = shared_values(d, salt + 2, hidden);
  comm().force_algo(std::nullopt);
  Bytes reduced(bytes), ref_out(bytes), ref_res(bytes);
  comm().all_reduce(x.data(), reduced.data(), n, d);
  comm().add_rmsnorm(reduced.data(), residual.data(), weight.data(), ref_out.data(), ref_res.data(), tokens, hidden, d,
                     1e-5f);
  for (const auto& algo : std::vector<std::optional<Algo>>{std::nullopt, Algo::kOneShot, Algo::kTwoShot,
                                                           Algo::kFallback}) {
    comm().force_algo(algo);
    const auto plan = comm().plan(Op::kFusedAllReduceRmsNorm, d, std::array<std::int64_t, 2>{2, 300000});
    EXPECT_EQ(plan.algo, algo == Algo::kFallback ? Algo::kFallback : Algo::kUnfused) << plan.reason;
    Bytes out(bytes), res_out(bytes);
    comm().fused_allreduce_residual_rmsnorm(x.data(), residual.data(), weight.data(), out.data(), res_out.data(),
                                            tokens, hidden, d, 1e-5f);
    EXPECT_TRUE(same_bytes(out, ref_out, esize(d))) << name(d) << " " << algo_label(algo);
    EXPECT_TRUE(same_bytes(res_out, ref_res, esize(d))) << name(d) << " " << algo_label(algo);
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, Fused, ::testing::ValuesIn(kReducible),
                         [](const auto& info) { return std::string(name(info.param)); });

// ---- reduce-scatter ----

// This rank's share of `all`, a whole op's bytes split into `world` shares.
Bytes share_of(const Bytes& all, int world, int rank) {
  const std::size_t share = all.size() / static_cast<std::size_t>(world);
  return Bytes(all.begin() + static_cast<std::ptrdiff_t>(share * rank),
               all.begin() + static_cast<std::ptrdiff_t>(share * (rank + 1)));
}

class ReduceScatter : public Mp, public ::testing::WithParamInterface<DType> {};

TEST_P(ReduceScatter, ShareIsTheAllReduceShareBitForBit) {
  const DType d = GetParam();
  // Per-rank shares of 1 to 40000 elements: the largest take many steps
  // through the 4 KiB and 64 KiB staging buffers of np3, np2 and np4.
  for (const std::size_t per_rank : {1u, 7u, 1000u, 40000u}) {
    const std::size_t count = per_rank * static_cast<std::size_t>(world_);
    const std::uint64_t salt = count * 5 + static_cast<std::uint64_t>(d);
    const Bytes in = rank_input(d, salt, rank_, count);
    comm().force_algo(std::nullopt);
    Bytes reduced(in.size());
    comm().all_reduce(in.data(), reduced.data(), count, d);
    const Bytes expected = share_of(reduced, world_, rank_);
    EXPECT_TRUE(same_bytes(expected, share_of(reference_sum(d, salt, world_, count), world_, rank_), esize(d)));
    for (const auto& algo : std::vector<std::optional<Algo>>{std::nullopt, Algo::kFallback}) {
      comm().force_algo(algo);
      const std::string what = std::string(name(d)) + " count " + std::to_string(count) + " " + algo_label(algo);
      Bytes out(expected.size(), std::byte{0x7e});
      comm().reduce_scatter(in.data(), out.data(), count, d);
      EXPECT_TRUE(same_bytes(out, expected, esize(d))) << what << ", out of place";
      Bytes inplace = in;
      std::byte* mine = inplace.data() + expected.size() * static_cast<std::size_t>(rank_);
      comm().reduce_scatter(inplace.data(), mine, count, d);
      EXPECT_TRUE(same_bytes(Bytes(mine, mine + expected.size()), expected, esize(d))) << what << ", in place";
    }
  }
}

TEST_P(ReduceScatter, FusedEqualsTheFullFusedOpsRows) {
  const DType d = GetParam();
  const float eps = 1e-6f;
  for (const std::size_t per_rank : {1u, 3u}) {
    for (const std::size_t hidden : {8u, 2880u, 7u}) {
      const std::size_t tokens = per_rank * static_cast<std::size_t>(world_), n = tokens * hidden;
      const std::size_t share = per_rank * hidden * esize(d);
      const std::uint64_t salt = n * 17 + hidden + static_cast<std::uint64_t>(d);
      const Bytes x = rank_input(d, salt, rank_, n);
      const Bytes residual = shared_values(d, salt + 1, n);
      const Bytes weight = shared_values(d, salt + 2, hidden);
      for (const bool with_residual : {false, true}) {
        comm().force_algo(std::nullopt);
        Bytes full_out(n * esize(d)), full_res(n * esize(d));
        comm().fused_allreduce_residual_rmsnorm(x.data(), with_residual ? residual.data() : nullptr, weight.data(),
                                                full_out.data(), full_res.data(), tokens, hidden, d, eps);
        const Bytes my_residual = share_of(residual, world_, rank_);
        for (const auto& algo : std::vector<std::optional<Algo>>{std::nullopt, Algo::kFallback}) {
          comm().force_algo(algo);
          const std::string what = std::string(name(d)) + " " + std::to_string(tokens) + "x" + std::to_string(hidden) +
                                   (with_residual ? " residual " : " ") + algo_label(algo);
          Bytes out(share, std::byte{0x44}), res_out(share, std::byte{0x33});
          comm().fused_reduce_scatter_residual_rmsnorm(x.data(), with_residual ? my_residual.data() : nullptr,
                                                       weight.data(), out.data(), res_out.data(), tokens, hidden, d,
                                                       eps);
          EXPECT_TRUE(same_bytes(out, share_of(full_out, world_, rank_), esize(d))) << what << ": out";
          if (with_residual) {
            EXPECT_TRUE(same_bytes(res_out, share_of(full_res, world_, rank_), esize(d))) << what << ": residual_out";
          } else {
            EXPECT_TRUE(same_bytes(res_out, Bytes(share, std::byte{0x33}), esize(d))) << what << ": residual_out written";
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, ReduceScatter, ::testing::ValuesIn(kReducible),
                         [](const auto& info) { return std::string(name(info.param)); });

// ---- plan ----

TEST_F(Mp, PlanExplainsItselfAndIsTheSameOnEveryRank) {
  struct Query {
    Op op;
    DType dtype;
    std::vector<std::int64_t> shape;
    int dim;
  };
  const std::vector<Query> queries{
      {Op::kAllReduce, DType::kFloat32, {1}, 0},          {Op::kAllReduce, DType::kBFloat16, {300000}, 0},
      {Op::kAllReduce, DType::kFloat16, {4097}, 0},       {Op::kAllGather, DType::kInt8, {3, 5, 7}, 1},
      {Op::kAllGather, DType::kFloat64, {1 << 20}, 0},    {Op::kFusedAllReduceRmsNorm, DType::kBFloat16, {64, 5000}, 0},
      {Op::kFusedAllReduceRmsNorm, DType::kFloat32, {1, 8}, 0}, {Op::kFusedAllReduceRmsNorm, DType::kFloat16, {3, 300000}, 0},
  };
  const std::array<const char*, 4> names{"oneshot", "twoshot", "unfused", "fallback"};
  for (const auto& algo : std::vector<std::optional<Algo>>{std::nullopt, Algo::kOneShot, Algo::kTwoShot,
                                                           Algo::kUnfused, Algo::kFallback}) {
    comm().force_algo(algo);
    for (const Query& q : queries) {
      const tpcoll::PlanInfo p = comm().plan(q.op, q.dtype, q.shape, q.dim);
      const int a = static_cast<int>(p.algo);
      EXPECT_TRUE(a >= 0 && a < 4) << a;
      EXPECT_EQ(p.algorithm, names[static_cast<std::size_t>(a) % names.size()]);
      EXPECT_FALSE(p.reason.empty());
      EXPECT_FALSE(p.backend.empty());
      EXPECT_GE(p.steps, 1u);
      // Every rank must have planned the same: compare through a gather.
      std::uint64_t h = 1469598103934665603ull;  // FNV-1a of everything the plan says
      for (unsigned char c : p.algorithm + "|" + p.backend + "|" + p.reason) h = (h ^ c) * 1099511628211ull;
      h = mix(h ^ p.steps) ^ mix(p.chunk_bytes + static_cast<std::uint64_t>(a));
      const auto digest = static_cast<std::int64_t>(h);
      for (const std::int64_t theirs : gather_all(digest)) EXPECT_EQ(theirs, digest) << "ranks planned differently";
      const auto algos = gather_all(a);
      EXPECT_TRUE(std::all_of(algos.begin(), algos.end(), [&](std::int64_t v) { return v == a; }));
    }
  }
}

// ---- ranks that disagree ----

::testing::AssertionResult is_mismatch(const tpcoll::Error& e, std::initializer_list<std::string> needles) {
  if (e.code() != TPCOLL_MISMATCH)
    return ::testing::AssertionFailure() << tpcoll_result_string(e.code()) << ": " << e.what();
  const std::string m = e.what();
  for (const auto& n : needles)
    if (m.find(n) == std::string::npos) return ::testing::AssertionFailure() << "\"" << m << "\" lacks \"" << n << "\"";
  return ::testing::AssertionSuccess();
}

class Mismatch : public Mp {
 protected:
  void SetUp() override {
    Mp::SetUp();
    if (world_ < 2) GTEST_SKIP() << "needs at least 2 ranks";
  }

  // Runs fn, which must fail with TPCOLL_MISMATCH naming the needles, leave
  // `out` as it was, and leave the communicator usable.
  template <typename Fn>
  void expect_mismatch(Fn&& fn, std::initializer_list<std::string> needles, const Bytes& out, const Bytes& before) {
    try {
      fn();
      ADD_FAILURE() << "rank " << rank_ << ": no error";
    } catch (const tpcoll::Error& e) {
      EXPECT_TRUE(is_mismatch(e, needles)) << "rank " << rank_;
    }
    EXPECT_EQ(out, before) << "a mismatched call wrote its output";
    expect_still_works();
  }

  void expect_still_works() {
    std::array<float, 5> x{}, y{};
    for (std::size_t j = 0; j < x.size(); ++j) x[j] = static_cast<float>(rank_ * 10 + static_cast<int>(j));
    comm().all_reduce(x.data(), y.data(), x.size(), DType::kFloat32);
    for (std::size_t j = 0; j < x.size(); ++j)
      EXPECT_EQ(y[j], static_cast<float>(10 * world_ * (world_ - 1) / 2 + world_ * static_cast<int>(j)));
  }
};

TEST_F(Mismatch, DifferentCounts) {
  for (const auto& algo : std::vector<std::optional<Algo>>{std::nullopt, Algo::kFallback, Algo::kTwoShot}) {
    comm().force_algo(algo);
    const std::size_t count = rank_ == 0 ? 100 : 101;
    std::vector<float> in(count, 1.0f);
    Bytes out(count * 4, std::byte{0x42});
    const Bytes before = out;
    expect_mismatch([&] { comm().all_reduce(in.data(), out.data(), count, DType::kFloat32); }, {"[100]", "[101]"},
                    out, before);
  }
}

TEST_F(Mismatch, DifferentCountsAcrossManyChunks) {
  const std::size_t count = rank_ == 0 ? 600000 : 600001;  // > 2 MiB: several chunks in every variant
  std::vector<float> in(count, 0.5f);
  Bytes out(count * 4, std::byte{0x42});
  const Bytes before = out;
  comm().force_algo(Algo::kTwoShot);
  expect_mismatch([&] { comm().all_reduce(in.data(), out.data(), count, DType::kFloat32); }, {"[600000]", "[600001]"},
                  out, before);
}

TEST_F(Mismatch, DifferentOpsWithTheSameElementCount) {
  for (const auto& algo : std::vector<std::optional<Algo>>{std::nullopt, Algo::kFallback}) {
    comm().force_algo(algo);
    const std::size_t count = 105;
    std::vector<float> in(count, 2.0f);
    Bytes out(count * 4 * static_cast<std::size_t>(world_), std::byte{0x42});
    const Bytes before = out;
    const std::int64_t shape[] = {static_cast<std::int64_t>(count)};
    expect_mismatch(
        [&] {
          if (rank_ == 0)
            comm().all_reduce(in.data(), out.data(), count, DType::kFloat32);
          else
            comm().all_gather(in.data(), out.data(), DType::kFloat32, shape, 0);
        },
        {"all_reduce", "all_gather"}, out, before);
  }
}

TEST_F(Mismatch, ReduceScatterAgainstAnotherCountOrAnAllReduce) {
  for (const auto& algo : std::vector<std::optional<Algo>>{std::nullopt, Algo::kFallback}) {
    comm().force_algo(algo);
    const std::size_t count = 100 * static_cast<std::size_t>(world_);
    const std::size_t other = 101 * static_cast<std::size_t>(world_);
    std::vector<float> in(other, 1.0f);
    Bytes out(other * 4, std::byte{0x42});
    const Bytes before = out;
    expect_mismatch([&] { comm().reduce_scatter(in.data(), out.data(), rank_ == 0 ? count : other, DType::kFloat32); },
                    {"reduce_scatter", "[" + std::to_string(count) + "]", "[" + std::to_string(other) + "]"}, out,
                    before);
    expect_mismatch(
        [&] {
          if (rank_ == 0)
            comm().reduce_scatter(in.data(), out.data(), count, DType::kFloat32);
          else
            comm().all_reduce(in.data(), out.data(), count, DType::kFloat32);
        },
        {"reduce_scatter", "all_reduce"}, out, before);
  }
}

TEST_F(Mismatch, DifferentDtypes) {
  for (const auto& algo : std::vector<std::optional<Algo>>{std::nullopt, Algo::kFallback}) {
    comm().force_algo(algo);
    std::vector<std::uint16_t> in(64, 0x3c00);
    Bytes out(128, std::byte{0x42});
    const Bytes before = out;
    expect_mismatch(
        [&] { comm().all_reduce(in.data(), out.data(), 64, rank_ == 0 ? DType::kFloat16 : DType::kBFloat16); },
        {"float16", "bfloat16"}, out, before);
  }
}

TEST_F(Mismatch, DifferentGatherShapesAndDims) {
  for (const auto& algo : std::vector<std::optional<Algo>>{std::nullopt, Algo::kFallback}) {
    comm().force_algo(algo);
    std::vector<std::int32_t> in(24, rank_);
    Bytes out(24 * 4 * static_cast<std::size_t>(world_), std::byte{0x42});
    const Bytes before = out;
    const std::int64_t a[] = {4, 6}, b[] = {6, 4};
    expect_mismatch([&] { comm().all_gather(in.data(), out.data(), DType::kInt32, rank_ == 0 ? a : b, 1); },
                    {"[4, 6]", "[6, 4]"}, out, before);
    expect_mismatch([&] { comm().all_gather(in.data(), out.data(), DType::kInt32, a, rank_ == 0 ? 0 : 1); },
                    {"dim 0", "dim 1"}, out, before);
  }
}

TEST_F(Mismatch, DifferentEpsOrResidualInTheFusedOp) {
  const std::size_t tokens = 4, hidden = 64, n = tokens * hidden;
  std::vector<float> x(n, 1.0f), residual(n, 0.5f), weight(hidden, 1.0f);
  Bytes out(n * 4, std::byte{0x42}), res_out(n * 4, std::byte{0x42});
  const Bytes before = out;
  for (const auto& algo : std::vector<std::optional<Algo>>{std::nullopt, Algo::kOneShot, Algo::kTwoShot,
                                                           Algo::kUnfused, Algo::kFallback}) {
    comm().force_algo(algo);
    expect_mismatch(
        [&] {
          comm().fused_allreduce_residual_rmsnorm(x.data(), residual.data(), weight.data(), out.data(), res_out.data(),
                                                  tokens, hidden, DType::kFloat32, rank_ == 0 ? 1e-5f : 1e-6f);
        },
        {"eps"}, out, before);
    EXPECT_EQ(res_out, before);
    expect_mismatch(
        [&] {
          comm().fused_allreduce_residual_rmsnorm(x.data(), rank_ == 0 ? residual.data() : nullptr, weight.data(),
                                                  out.data(), res_out.data(), tokens, hidden, DType::kFloat32, 1e-5f);
        },
        {"no residual", ", residual"}, out, before);
  }
}

// ---- settings that differ at creation ----

class ScopedVar {
 public:
  ScopedVar(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value)
      setenv(name, value, 1);
    else
      unsetenv(name);
  }
  ~ScopedVar() {
    if (old_)
      setenv(name_.c_str(), old_->c_str(), 1);
    else
      unsetenv(name_.c_str());
  }

 private:
  std::string name_;
  std::optional<std::string> old_;
};

TEST(Settings, RanksCreatedWithDifferentSettingsGetAMismatch) {
  const tpcoll::Config config = tpcoll::Config::from_env();
  if (config.world_size < 2) GTEST_SKIP() << "needs at least 2 ranks";
  const bool odd = config.rank % 2 == 1;
  const std::vector<std::pair<const char*, std::pair<const char*, const char*>>> cases{
      {"TPCOLL_CPU_BUFFER_BYTES", {"65536", "131072"}},
      // Sizes the CUDA kernels (which one, how many blocks): agreed by every backend.
      {"TPCOLL_CUDA_LOW_LATENCY_BYTES", {"0", "262144"}},
      {"TPCOLL_DISABLE", {"0", "1"}},
      {"TPCOLL_ALGO", {"oneshot", "fallback"}},
  };
  for (const auto& [var, values] : cases) {
    ScopedVar v(var, odd ? values.second : values.first);
    try {
      tpcoll::Communicator comm(config);
      ADD_FAILURE() << var << " differs between ranks, yet the communicator was created";
    } catch (const tpcoll::Error& e) {
      EXPECT_EQ(e.code(), TPCOLL_MISMATCH) << var << ": " << e.what();
      EXPECT_NE(std::string(e.what()).find(var), std::string::npos) << e.what();
      if (std::string(var) == "TPCOLL_CPU_BUFFER_BYTES") {
        EXPECT_NE(std::string(e.what()).find("65536 vs 131072"), std::string::npos) << e.what();
      }
    }
  }
  // And with agreeing settings the next communicator works.
  tpcoll::Communicator comm(config);
  float x = 1.0f, y = 0.0f;
  comm.all_reduce(&x, &y, 1, DType::kFloat32);
  EXPECT_EQ(y, static_cast<float>(config.world_size));
}

// Issue 18, item 5 (vllm#46515: handles leaked per communicator): 200
// create/op/destroy cycles through the socket rendezvous leave every rank's
// file descriptors, and rank 0's shared-memory segments, as they were.
std::size_t open_fds() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

std::size_t segments_named_by_me() {  // shm_segment.cpp: rank 0 names them "tpcoll-<pid>-..."
  const std::string prefix = "tpcoll-" + std::to_string(::getpid()) + "-";
  std::size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator("/dev/shm"))
    if (e.path().filename().string().starts_with(prefix)) ++n;
  return n;
}

TEST(Hygiene, CreateDestroyCyclesLeaveNothingBehind) {
  const tpcoll::Config config = tpcoll::Config::from_env();
  const auto cycle = [&] {
    tpcoll::Communicator comm(config);
    float x = 1.0f, y = 0.0f;
    comm.all_reduce(&x, &y, 1, DType::kFloat32);
    EXPECT_EQ(y, static_cast<float>(config.world_size));
  };
  cycle();  // lazily opened process-wide resources are not leaks
  const std::size_t fds = open_fds(), segments = segments_named_by_me();
  for (int i = 0; i < 200; ++i) cycle();
  EXPECT_EQ(open_fds(), fds);
  EXPECT_EQ(segments_named_by_me(), segments);
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // Every rank must run the same tests in the same order.
  if (GTEST_FLAG_GET(shuffle)) {
    std::fprintf(stderr, "tpcoll_multiprocess_tests: --gtest_shuffle would desynchronise the ranks\n");
    return 2;
  }
  // Rank 0 prints the full report; the others print only their failures.
  const char* rank = std::getenv("TPCOLL_RANK");
  if (rank != nullptr && std::string(rank) != "0") GTEST_FLAG_SET(brief, true);
  return RUN_ALL_TESTS();
}
