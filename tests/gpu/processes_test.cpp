// The CUDA backend with one process per rank (started by `tpcoll run`, device
// from TPCOLL_DEVICE), peer buffers through CUDA IPC; all ranks may share one
// GPU (then under MPS). Every rank recomputes every rank's input locally and
// checks its own result bit for bit: the all-reduce against the numeric
// contract for fp32, fp16 and bf16, one-shot and two-shot, odd and chunked
// sizes, eagerly and from a replayed CUDA graph; the reduce-scatter's share
// against the same contract; the all-gather along the last dim against the
// concatenation. Exit 0 pass, 1 fail, 77 without a CUDA device.
#include "common/numerics.hpp"

#include <tpcoll/tpcoll.hpp>

#include <cuda_runtime.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <vector>

namespace {

namespace nx = tpcoll::numerics;
using tpcoll::DType;

// Rank r's element i: a value in [-1, 1) exact in every dtype, -0.0 sometimes.
float input(int r, std::size_t i, std::uint32_t seed) {
  std::uint32_t x = static_cast<std::uint32_t>(i) * 2654435761u ^ (static_cast<std::uint32_t>(r) + 1) * 40503u ^ seed;
  x ^= x >> 13;
  x *= 0x5bd1e995u;
  x ^= x >> 15;
  if (i % 101 == 0) return -0.0f;
  return static_cast<float>(static_cast<int>(x % 4096) - 2048) / 2048.0f;
}

// Element i of a buffer of `dtype`, as bytes: stored narrowed, read widened.
void store(DType dtype, std::vector<std::byte>& buffer, std::size_t i, float v) {
  if (dtype == DType::kFloat32) {
    std::memcpy(buffer.data() + 4 * i, &v, 4);
    return;
  }
  const std::uint16_t h = dtype == DType::kFloat16 ? nx::float_to_fp16(v) : nx::float_to_bf16(v);
  std::memcpy(buffer.data() + 2 * i, &h, 2);
}

float load(DType dtype, const std::vector<std::byte>& buffer, std::size_t i) {
  if (dtype == DType::kFloat32) {
    float v;
    std::memcpy(&v, buffer.data() + 4 * i, 4);
    return v;
  }
  std::uint16_t h;
  std::memcpy(&h, buffer.data() + 2 * i, 2);
  return dtype == DType::kFloat16 ? nx::fp16_to_float(h) : nx::bf16_to_float(h);
}

// Runs `op(in, out)` once eagerly, or captured in a graph replayed three times.
template <typename Op>
cudaError_t run_on(cudaStream_t stream, bool graph, Op&& op) {
  if (!graph) {
    op();
    return cudaStreamSynchronize(stream);
  }
  cudaGraph_t g;
  cudaGraphExec_t exec;
  cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal);
  op();
  cudaStreamEndCapture(stream, &g);
  cudaGraphInstantiate(&exec, g, 0);
  for (int i = 0; i < 3; ++i) cudaGraphLaunch(exec, stream);
  const cudaError_t status = cudaStreamSynchronize(stream);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(g);
  return status;
}

// Uploads `host`, runs `op(in, out)`, downloads `out_bytes`; false (and a
// message) if CUDA, the communicator or the bytes disagree with `expected`.
template <typename Op>
bool check_op(tpcoll::Communicator& comm, cudaStream_t stream, const std::vector<std::byte>& host,
              const std::vector<std::byte>& expected, bool graph, const char* what, Op&& op) {
  void *in = nullptr, *out = nullptr;
  cudaMalloc(&in, host.size());
  cudaMalloc(&out, expected.size());
  cudaMemcpy(in, host.data(), host.size(), cudaMemcpyHostToDevice);
  cudaDeviceSynchronize();
  const cudaError_t status = run_on(stream, graph, [&] { op(in, out); });
  std::vector<std::byte> got(expected.size());
  cudaMemcpy(got.data(), out, got.size(), cudaMemcpyDeviceToHost);
  cudaFree(in);
  cudaFree(out);
  tpcoll_result_t async = TPCOLL_SUCCESS;
  tpcoll::check(tpcoll_comm_get_async_error(comm.native(), &async));
  const bool ok = status == cudaSuccess && async == TPCOLL_SUCCESS && got == expected;
  if (!ok)
    std::fprintf(stderr, "rank %d: %s (graph %d): FAILED (%s, async %s)\n", comm.rank(), what, graph,
                 cudaGetErrorString(status), tpcoll_result_string(async));
  return ok;
}

bool check_all_reduce(tpcoll::Communicator& comm, cudaStream_t stream, DType dtype, std::size_t count,
                      tpcoll::Algo algo, bool graph) {
  const std::size_t elem = dtype == DType::kFloat32 ? 4 : 2;
  std::vector<std::byte> host(count * elem), expected(count * elem), lane(elem);
  for (std::size_t i = 0; i < count; ++i) {
    store(dtype, host, i, input(comm.rank(), i, 17));
    // The contract: rank 0's rounded value, plus ranks 1..n-1 in order, one rounding.
    store(dtype, lane, 0, input(0, i, 17));
    float acc = load(dtype, lane, 0);
    for (int r = 1; r < comm.world_size(); ++r) {
      store(dtype, lane, 0, input(r, i, 17));
      acc += load(dtype, lane, 0);
    }
    store(dtype, expected, i, acc);
  }
  comm.force_algo(algo);
  char what[96];
  std::snprintf(what, sizeof what, "all_reduce dtype %d count %zu algo %d", static_cast<int>(dtype), count,
                static_cast<int>(algo));
  const bool ok = check_op(comm, stream, host, expected, graph, what,
                           [&](void* in, void* out) { comm.all_reduce(in, out, count, dtype, stream); });
  comm.force_algo(std::nullopt);
  return ok;
}

// This rank's share of the all-reduce's contract, through IPC buffers:
// low-latency and staged, whole vectors and element-wide.
bool check_reduce_scatter(tpcoll::Communicator& comm, cudaStream_t stream, DType dtype, std::size_t per_rank,
                          bool graph) {
  const std::size_t elem = dtype == DType::kFloat32 ? 4 : 2, count = per_rank * comm.world_size();
  const std::size_t first = per_rank * comm.rank();
  std::vector<std::byte> host(count * elem), expected(per_rank * elem), lane(elem);
  for (std::size_t i = 0; i < count; ++i) store(dtype, host, i, input(comm.rank(), i, 23));
  for (std::size_t i = 0; i < per_rank; ++i) {
    store(dtype, lane, 0, input(0, first + i, 23));
    float acc = load(dtype, lane, 0);
    for (int r = 1; r < comm.world_size(); ++r) {
      store(dtype, lane, 0, input(r, first + i, 23));
      acc += load(dtype, lane, 0);
    }
    store(dtype, expected, i, acc);
  }
  char what[96];
  std::snprintf(what, sizeof what, "reduce_scatter dtype %d share %zu", static_cast<int>(dtype), per_rank);
  return check_op(comm, stream, host, expected, graph, what,
                  [&](void* in, void* out) { comm.reduce_scatter(in, out, count, dtype, stream); });
}

// [rows, cols] int8 per rank along dim 1: row o of the output holds every
// rank's row o in rank order.
bool check_all_gather(tpcoll::Communicator& comm, cudaStream_t stream, std::int64_t rows, std::int64_t cols,
                      bool graph) {
  const int world = comm.world_size();
  const auto byte_of = [](int r, std::size_t i) { return static_cast<std::byte>((i * 131 + r * 7 + 3) & 0xff); };
  const auto n = static_cast<std::size_t>(rows * cols), c = static_cast<std::size_t>(cols);
  std::vector<std::byte> host(n), expected(n * world);
  for (std::size_t i = 0; i < n; ++i) host[i] = byte_of(comm.rank(), i);
  for (std::size_t o = 0; o < static_cast<std::size_t>(rows); ++o)
    for (int r = 0; r < world; ++r)
      for (std::size_t j = 0; j < c; ++j) expected[(o * world + r) * c + j] = byte_of(r, o * c + j);
  char what[64];
  std::snprintf(what, sizeof what, "all_gather [%lld, %lld] dim 1", static_cast<long long>(rows),
                static_cast<long long>(cols));
  return check_op(comm, stream, host, expected, graph, what, [&](void* in, void* out) {
    comm.all_gather(in, out, DType::kInt8, std::array<std::int64_t, 2>{rows, cols}, 1, stream);
  });
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  try {
    tpcoll::Communicator comm(tpcoll::Config::from_env());
    cudaStream_t stream;
    cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
    bool ok = true;
    for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16})
      for (std::size_t count : {std::size_t{1}, std::size_t{999}, std::size_t{1} << 16, (std::size_t{5} << 20) + 7})
        for (auto algo : {tpcoll::Algo::kOneShot, tpcoll::Algo::kTwoShot})
          for (bool graph : {false, true}) ok = check_all_reduce(comm, stream, dtype, count, algo, graph) && ok;
    for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16})
      for (std::size_t per_rank : {std::size_t{1}, std::size_t{1000}, std::size_t{1} << 16, (std::size_t{1} << 20) + 5})
        for (bool graph : {false, true}) ok = check_reduce_scatter(comm, stream, dtype, per_rank, graph) && ok;
    for (bool graph : {false, true}) {
      ok = check_all_gather(comm, stream, 3, 1000, graph) && ok;         // low-latency
      ok = check_all_gather(comm, stream, 300, 50001, graph) && ok;      // staged, 1-byte words, chunked
    }
    cudaStreamDestroy(stream);
    std::printf("rank %d: %s\n", comm.rank(), ok ? "all checks ok" : "FAILED");
    return ok ? 0 : 1;
  } catch (const tpcoll::Error& e) {
    std::fprintf(stderr, "tpcoll error: %s\n", e.what());
    return 1;
  }
}
