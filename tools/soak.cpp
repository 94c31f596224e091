// The soak: a parent starts rounds, each a job of one world size launched as
// `tpcoll run` would; the ranks of a round draw the same sequence of calls
// from a generator seeded by (seed, round), so they always agree, and stop
// together when rank 0 says the round's time is up (a flag all-reduced every
// few ops). Inputs are small integers, so every all-reduce result is exact in
// every dtype and checked against the sum (a reduce-scatter's share too);
// gathers are checked byte for byte; the fused op must equal all_reduce +
// add_rmsnorm bit for bit.
#include "tools/soak.hpp"

#include "tools/bench/data.hpp"
#include "tools/launcher.hpp"

#include <tpcoll/tpcoll.hpp>

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <fmt/ranges.h>

#include <array>
#include <bit>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <utility>

namespace tpcoll::tools {
namespace {

using bench::load_float;
using bench::mix;
using bench::store_float;
using Clock = std::chrono::steady_clock;

constexpr const char* kRoundVariable = "TPCOLL_SOAK_ROUND";
constexpr const char* kReportVariable = "TPCOLL_SOAK_REPORT";
constexpr const char* kRoundSecondsVariable = "TPCOLL_SOAK_ROUND_SECONDS";
constexpr int kFlagEvery = 16;  // ops between two stop-flag all-reduces

struct Tally {
  std::uint64_t ops = 0;
  std::uint64_t errors = 0;
};

// Where a rank's device buffers come from: cudaMalloc and cudaFree per
// buffer, or (--arena) one allocation per round carved anew for every op, as
// an engine's caching allocator hands out memory without freeing it. The
// difference matters to ranks sharing a GPU under MPS, where a freeing call
// can wait for every client's kernels, a peer's spinning one included.
class DeviceMemory {
 public:
  DeviceMemory(bool cuda, std::size_t arena_bytes) : cuda_(cuda), capacity_(cuda ? arena_bytes : 0) {
    if (capacity_ > 0 && cudaMalloc(&arena_, capacity_) != cudaSuccess)
      throw Error(TPCOLL_CUDA_ERROR, fmt::format("soak: cudaMalloc of a {} byte arena failed", capacity_));
  }
  ~DeviceMemory() {
    if (arena_) cudaFree(arena_);
  }
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;

  bool cuda() const { return cuda_; }
  // Every buffer of the previous op is gone.
  void reset() { used_ = 0; }

  void* take(std::size_t bytes) {
    bytes = std::max<std::size_t>(bytes, 1);
    if (!arena_) {
      void* p = nullptr;
      if (cudaMalloc(&p, bytes) != cudaSuccess)
        throw Error(TPCOLL_CUDA_ERROR, fmt::format("soak: cudaMalloc of {} bytes failed", bytes));
      return p;
    }
    const std::size_t at = (used_ + 255) / 256 * 256;
    if (at + bytes > capacity_)
      throw Error(TPCOLL_INTERNAL_ERROR, fmt::format("soak: the {} byte arena cannot hold {} more", capacity_, bytes));
    used_ = at + bytes;
    return static_cast<std::byte*>(arena_) + at;
  }
  void give(void* p) {
    if (!arena_) cudaFree(p);
  }

 private:
  bool cuda_;
  std::size_t capacity_;
  void* arena_ = nullptr;
  std::size_t used_ = 0;
};

// Host bytes with a twin in device memory for a CUDA communicator.
class Buffer {
 public:
  Buffer(std::size_t bytes, DeviceMemory& memory) : host_(bytes), memory_(&memory) {
    if (memory.cuda()) device_ = memory.take(bytes);
  }
  // Host only, whatever the backend (an expected result).
  explicit Buffer(std::size_t bytes) : host_(bytes) {}
  ~Buffer() {
    if (device_) memory_->give(device_);
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  std::byte* host() { return host_.data(); }
  void* ptr() { return device_ ? device_ : host_.data(); }
  void upload() { copy(device_, host_.data(), cudaMemcpyHostToDevice); }
  void download() { copy(host_.data(), device_, cudaMemcpyDeviceToHost); }
  bool same(const Buffer& o) const { return host_ == o.host_; }

 private:
  void copy(void* dst, const void* src, cudaMemcpyKind kind) {
    if (device_ && !host_.empty() && cudaMemcpy(dst, src, host_.size(), kind) != cudaSuccess)
      throw Error(TPCOLL_CUDA_ERROR, "soak: cudaMemcpy failed");
  }
  std::vector<std::byte> host_;
  DeviceMemory* memory_ = nullptr;
  void* device_ = nullptr;
};

// Small integers in [-8, 8]: sums over 64 ranks stay exact in bf16 and fp16.
float small_int(std::uint64_t seed, int rank, std::size_t i) {
  return static_cast<float>(static_cast<int>(bench::sample_bits(seed, rank, i) % 17) - 8);
}

// Where a rank is, for its watchdog: a rank stuck in a host call (a wait
// inside tpcoll is bounded and reports itself) would otherwise be silent
// until the launcher stops it, leaving its peers' timeouts as the only clue.
class Progress {
 public:
  void at(std::string what) {
    const std::lock_guard lock(mutex_);
    what_ = std::move(what);
    ++steps_;
  }
  std::pair<std::uint64_t, std::string> now() const {
    const std::lock_guard lock(mutex_);
    return {steps_, what_};
  }

 private:
  mutable std::mutex mutex_;
  std::uint64_t steps_ = 0;
  std::string what_ = "start";
};

// Prints, once per stall, where the rank has been for `stall` without a step.
std::jthread watchdog(const Progress& progress, int rank, std::chrono::seconds stall) {
  return std::jthread([&progress, rank, stall](const std::stop_token& stop) {
    auto [last, what] = progress.now();
    auto since = Clock::now();
    bool told = false;
    while (!stop.stop_requested()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      const auto [steps, where] = progress.now();
      if (steps != last) {
        last = steps;
        since = Clock::now();
        told = false;
      } else if (!told && Clock::now() - since >= stall) {
        fmt::print(stderr, "soak rank {}: no progress for {} s, at {}\n", rank, stall.count(), where);
        told = true;
      }
    }
  });
}

class SoakRank {
 public:
  SoakRank(Communicator& comm, const SoakOptions& o, int round)
      : comm_(comm),
        o_(o),
        rng_(mix(o.seed * 1000003 + static_cast<std::uint64_t>(round))),
        // The largest op: a gather's input (up to 8 rows of max_bytes) and
        // its world outputs, or the fused op's nine buffers (a row past
        // max_bytes at most).
        memory_(o.cuda, o.arena ? std::max<std::size_t>(8 * (comm.world_size() + 1), 9) * (o.max_bytes + (64 << 10))
                                : 0) {}

  Tally run() {
    const auto start = Clock::now();
    const std::jthread dog = watchdog(progress_, comm_.rank(), std::chrono::seconds(5));
    for (std::uint64_t n = 0;; ++n) {
      memory_.reset();
      if (n % kFlagEvery == 0 && time_up(start)) break;
      one_op(n);
    }
    return tally_;
  }

 private:
  std::uint64_t draw(std::uint64_t below) { return rng_() % below; }

  // Log-uniform element counts up to max_bytes.
  std::size_t draw_count(std::size_t element) {
    const std::size_t max_count = std::max<std::size_t>(1, o_.max_bytes / element);
    const int bits = static_cast<int>(draw(std::bit_width(max_count)));
    return std::min(max_count, (std::size_t{1} << bits) + draw(std::size_t{1} << bits));
  }

  void at(const std::string& op, const char* phase) { progress_.at(fmt::format("op {}: {}: {}", tally_.ops, op, phase)); }

  void record(bool ok, const std::string& what) {
    ++tally_.ops;
    if (ok) return;
    if (tally_.errors++ < 10) fmt::print(stderr, "soak rank {}: WRONG RESULT: {}\n", comm_.rank(), what);
  }

  bool time_up(Clock::time_point start) {
    float mine = comm_.rank() == 0 && Clock::now() - start >= std::chrono::duration<double>(o_.round_seconds) ? 1 : 0;
    at("stop flag", "allocate");
    Buffer flag(sizeof(float), memory_);
    std::memcpy(flag.host(), &mine, sizeof mine);
    at("stop flag", "upload");
    flag.upload();
    at("stop flag", "tpcoll call");
    comm_.all_reduce(flag.ptr(), flag.ptr(), 1, DType::kFloat32);
    at("stop flag", "download");
    flag.download();
    float all = 0;
    std::memcpy(&all, flag.host(), sizeof all);
    record(all == mine || comm_.rank() != 0, "stop flag");
    return all > 0;
  }

  void one_op(std::uint64_t n) {
    constexpr std::array<std::optional<Algo>, 5> kAlgos{std::nullopt, Algo::kOneShot, Algo::kTwoShot, Algo::kUnfused,
                                                        Algo::kFallback};
    comm_.force_algo(o_.cuda ? std::nullopt : kAlgos[draw(kAlgos.size())]);  // CUDA: NCCL fallback not started
    constexpr std::array<DType, 3> kFloats{DType::kFloat32, DType::kFloat16, DType::kBFloat16};
    const std::uint64_t seed = mix(n ^ rng_());
    switch (draw(4)) {
      case 0: all_reduce(kFloats[draw(3)], seed); break;
      case 1: all_gather(seed); break;
      case 2: reduce_scatter(kFloats[draw(3)], seed); break;
      default: fused(kFloats[draw(3)], seed); break;
    }
  }

  void all_reduce(DType d, std::uint64_t seed) {
    const std::size_t count = draw_count(dtype_size(d));
    const bool in_place = draw(2);
    const std::string op = fmt::format("all_reduce {} x {}{}", count, dtype_name(d), in_place ? " in place" : "");
    at(op, "allocate");
    Buffer in(count * dtype_size(d), memory_), out(count * dtype_size(d), memory_);
    for (std::size_t i = 0; i < count; ++i) store_float(d, in.host(), i, small_int(seed, comm_.rank(), i));
    at(op, "upload");
    in.upload();
    at(op, "tpcoll call");
    comm_.all_reduce(in.ptr(), in_place ? in.ptr() : out.ptr(), count, d);
    Buffer& result = in_place ? in : out;
    at(op, "download");
    result.download();
    bool ok = true;
    for (std::size_t i = 0; ok && i < count; ++i) {
      float sum = 0;
      for (int r = 0; r < comm_.world_size(); ++r) sum += small_int(seed, r, i);
      ok = load_float(d, result.host(), i) == sum;
    }
    record(ok, op);
  }

  // This rank's share of the exact sum, out of place or in place (out is
  // the input's own share).
  void reduce_scatter(DType d, std::uint64_t seed) {
    const int world = comm_.world_size(), rank = comm_.rank();
    const std::size_t elem = dtype_size(d);
    const std::size_t share = std::max<std::size_t>(1, draw_count(elem) / static_cast<std::size_t>(world));
    const std::size_t count = share * static_cast<std::size_t>(world), mine = share * static_cast<std::size_t>(rank);
    const bool in_place = draw(2);
    const std::string op = fmt::format("reduce_scatter {} x {}{}", count, dtype_name(d), in_place ? " in place" : "");
    at(op, "allocate");
    Buffer in(count * elem, memory_), out(share * elem, memory_);
    for (std::size_t i = 0; i < count; ++i) store_float(d, in.host(), i, small_int(seed, rank, i));
    at(op, "upload");
    in.upload();
    at(op, "tpcoll call");
    comm_.reduce_scatter(in.ptr(), in_place ? static_cast<std::byte*>(in.ptr()) + mine * elem : out.ptr(), count, d);
    at(op, "download");
    (in_place ? in : out).download();
    const std::byte* result = in_place ? in.host() + mine * elem : out.host();
    bool ok = true;
    for (std::size_t i = 0; ok && i < share; ++i) {
      float sum = 0;
      for (int r = 0; r < world; ++r) sum += small_int(seed, r, mine + i);
      ok = load_float(d, result, i) == sum;
    }
    record(ok, op);
  }

  void all_gather(std::uint64_t seed) {
    constexpr std::array<DType, 4> kAny{DType::kBFloat16, DType::kFloat8E4M3, DType::kInt32, DType::kInt64};
    const DType d = kAny[draw(kAny.size())];
    const std::size_t elem = dtype_size(d);
    // Up to three dims; gathered along a random one.
    const std::size_t count = draw_count(elem);
    std::array<std::int64_t, 3> shape{1, 1, static_cast<std::int64_t>(count)};
    const int ndim = 1 + static_cast<int>(draw(3));
    if (ndim > 1) shape[ndim - 2] = 1 + static_cast<std::int64_t>(draw(8));
    const std::span<const std::int64_t> dims(shape.data() + (3 - ndim), static_cast<std::size_t>(ndim));
    std::size_t total = 1;
    for (std::int64_t e : dims) total *= static_cast<std::size_t>(e);
    const int dim = static_cast<int>(draw(static_cast<std::uint64_t>(ndim)));
    const int world = comm_.world_size();
    const std::string op = fmt::format("all_gather {} x {} dim {}", total, dtype_name(d), dim);
    at(op, "allocate");
    Buffer in(total * elem, memory_), out(total * elem * world, memory_), expected(total * elem * world);
    const auto byte_of = [&](int r, std::size_t i) { return static_cast<std::byte>(bench::sample_bits(seed, r, i)); };
    for (std::size_t i = 0; i < total * elem; ++i) in.host()[i] = byte_of(comm_.rank(), i);
    at(op, "upload");
    in.upload();
    at(op, "tpcoll call");
    comm_.all_gather(in.ptr(), out.ptr(), d, dims, dim);
    at(op, "download");
    out.download();
    // Concatenation along dim: outer blocks of `inner` bytes, one per rank in turn.
    std::size_t outer = 1;
    for (int i = 0; i < dim; ++i) outer *= static_cast<std::size_t>(dims[i]);
    const std::size_t inner = total * elem / outer;
    for (std::size_t o = 0; o < outer; ++o)
      for (int r = 0; r < world; ++r)
        for (std::size_t b = 0; b < inner; ++b) expected.host()[(o * world + r) * inner + b] = byte_of(r, o * inner + b);
    record(out.same(expected), op);
  }

  void fused(DType d, std::uint64_t seed) {
    const std::size_t elem = dtype_size(d);
    const std::size_t hidden = 8 * (1 + draw(1024)), tokens = 1 + draw(std::max<std::size_t>(1, o_.max_bytes / elem / hidden));
    const std::size_t count = tokens * hidden, bytes = count * elem;
    const std::string op = fmt::format("fused {} x {} {}", tokens, hidden, dtype_name(d));
    at(op, "allocate");
    Buffer x(bytes, memory_), residual(bytes, memory_), weight(hidden * elem, memory_), out(bytes, memory_),
        residual_out(bytes, memory_), reduced(bytes, memory_), ref_out(bytes, memory_), ref_residual(bytes, memory_);
    for (std::size_t i = 0; i < count; ++i) {
      store_float(d, x.host(), i, small_int(seed, comm_.rank(), i));
      store_float(d, residual.host(), i, small_int(seed + 1, 0, i));  // the same on every rank
    }
    for (std::size_t i = 0; i < hidden; ++i) store_float(d, weight.host(), i, small_int(seed + 2, 0, i) / 8);
    at(op, "upload");
    x.upload();
    residual.upload();
    weight.upload();
    const float eps = 1e-5f;
    at(op, "tpcoll calls");
    comm_.fused_allreduce_residual_rmsnorm(x.ptr(), residual.ptr(), weight.ptr(), out.ptr(), residual_out.ptr(),
                                           tokens, hidden, d, eps);
    comm_.all_reduce(x.ptr(), reduced.ptr(), count, d);
    comm_.add_rmsnorm(reduced.ptr(), residual.ptr(), weight.ptr(), ref_out.ptr(), ref_residual.ptr(), tokens, hidden,
                      d, eps);
    at(op, "download");
    for (Buffer* b : {&out, &residual_out, &ref_out, &ref_residual}) b->download();
    tally_.ops += 2;  // the reference all_reduce and add_rmsnorm
    record(out.same(ref_out) && residual_out.same(ref_residual), op + " against all_reduce + add_rmsnorm");
  }

  Communicator& comm_;
  const SoakOptions& o_;
  std::mt19937_64 rng_;
  DeviceMemory memory_;
  Progress progress_;
  Tally tally_;
};

// One rank of one round; rank 0 writes the tally to the report file.
int run_round(SoakOptions o) {
  const int round = std::atoi(std::getenv(kRoundVariable));
  o.round_seconds = std::atof(std::getenv(kRoundSecondsVariable));
  Communicator comm(Config::from_env());
  const Tally t = SoakRank(comm, o, round).run();
  if (comm.rank() == 0) {
    std::ofstream(std::getenv(kReportVariable)) << t.ops << ' ' << t.errors << '\n';
  }
  return t.errors == 0 ? 0 : 1;
}

}  // namespace

int soak(const SoakOptions& o, const std::vector<std::string>& own_command) {
  if (std::getenv(kRoundVariable) != nullptr) return run_round(o);
  const auto start = Clock::now();
  const auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };
  const std::string report = fmt::format("/tmp/tpcoll-soak-{}.txt", fresh_job_id());
  Tally total;
  int rounds = 0, failed_rounds = 0;
  while (elapsed() < o.seconds) {
    const int world = o.world_sizes[static_cast<std::size_t>(rounds) % o.world_sizes.size()];
    LaunchOptions job;
    job.ranks = world;
    job.command = own_command;
    job.environment = {{kRoundVariable, std::to_string(rounds)},
                       {kReportVariable, report},
                       {kRoundSecondsVariable, fmt::format("{}", std::min(o.round_seconds, o.seconds - elapsed()))}};
    if (o.cuda && std::getenv("TPCOLL_DEVICE") == nullptr) job.environment.emplace_back("TPCOLL_DEVICE", "auto");
    std::remove(report.c_str());
    const int status = launch(job);
    Tally t;
    const bool reported = static_cast<bool>(std::ifstream(report) >> t.ops >> t.errors);
    if (status != 0 || !reported) {
      ++failed_rounds;
      ++t.errors;  // a rank failed (an exception, a crash): the round counts as one error at least
    }
    fmt::print("round {}: {} ranks, {} ops, {} errors{} ({:.0f} s elapsed)\n", rounds, world, t.ops, t.errors,
               status != 0 ? fmt::format(", a rank exited with {}", status) : "", elapsed());
    std::fflush(stdout);
    total.ops += t.ops;
    total.errors += t.errors;
    ++rounds;
  }
  std::remove(report.c_str());
  fmt::print("soak: {:.1f} minutes, {} rounds (world sizes {}), {} ops, {} errors, {} failed rounds, backend {}\n",
             elapsed() / 60, rounds, fmt::join(o.world_sizes, ","), total.ops, total.errors, failed_rounds,
             o.cuda ? "cuda" : "cpu");
  return total.errors == 0 ? 0 : 1;
}

}  // namespace tpcoll::tools
