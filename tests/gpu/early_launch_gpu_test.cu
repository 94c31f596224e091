// Issue 18, item 4 (vllm#45448, vllm#34412: a one-shot kernel signalled
// programmatic-dependent-launch completion before writing its output, and
// the next kernel read NaNs at batch 1). After each tpcoll op a consumer
// kernel is launched with programmatic stream serialization, as a framework's
// next kernel would be; it waits with cudaGridDependencySynchronize (the
// contract in tpcoll.h) and compares the op's output with the expected one.
// 100,000 op + consumer pairs per rank over all-reduce (low-latency and
// staged), all-gather and the fused op at 1 and 64 tokens; each op's input
// alternates between two sets, so a stale output (the previous op of its kind)
// counts as wrong as a partial one does. Two ranks as streams of this process
// on GPU 0. Run it with TPCOLL_CUDA_EARLY_LAUNCH=1 (the default) and =0.
//
// Exit status 0 pass, 1 fail, 77 without a CUDA device. (The C API: nvcc
// compiles this file as C++17.)
#include "cpu/kernels.hpp"

#include <tpcoll/tpcoll.h>

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

constexpr int kWorld = 2;
constexpr int kPairs = 100000;
constexpr int kKinds = 5;
constexpr std::size_t kHidden = 4096;

struct Kind {
  int op;             // 0 all-reduce, 1 all-gather, 2 fused
  std::size_t count;  // elements of this rank's input
  std::size_t rows;   // fused only
};
constexpr Kind kOps[kKinds] = {{0, 16, 0}, {0, 262144, 0}, {1, 1000, 0}, {2, kHidden, 1}, {2, 64 * kHidden, 64}};

std::size_t out_count(const Kind& k) { return k.op == 1 ? k.count * kWorld : k.count; }

float input(int set, int rank, std::size_t i) {
  return static_cast<float>(static_cast<int>((i * 3 + rank * 5 + set * 11) % 64) - 32);
}

void cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

template <typename T>
T* upload(const std::vector<T>& host) {
  T* p = nullptr;
  cuda(cudaMalloc(&p, host.size() * sizeof(T)), "cudaMalloc");
  cuda(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy");
  return p;
}

// The consumer: the next kernel of the stream, launched early when the
// previous kernel allows it; it waits as the contract says, then reads.
__global__ void consume(const float* out, const float* expected, std::size_t n, unsigned* wrong) {
#if __CUDA_ARCH__ >= 900  // before sm_90 no kernel launches early, and the instruction does not exist
  cudaGridDependencySynchronize();
#endif
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    if (__float_as_uint(out[i]) != __float_as_uint(expected[i])) atomicAdd(wrong, 1u);
}

cudaError_t launch_consumer(const float* out, const float* expected, std::size_t n, unsigned* wrong,
                            cudaStream_t stream) {
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(32);
  config.blockDim = dim3(256);
  config.stream = stream;
  config.attrs = &attribute;
  config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, consume, out, expected, n, wrong);
}

struct Buffers {
  float* in[kKinds][2];  // per kind and input set
  float* out[kKinds];
  float* residual_out[kKinds];
};

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  const char* early = std::getenv("TPCOLL_CUDA_EARLY_LAUNCH");
  std::printf("TPCOLL_CUDA_EARLY_LAUNCH=%s\n", early ? early : "(unset: on)");
  const int gpu0[kWorld] = {0, 0};
  tpcoll_comm_t comms[kWorld];
  if (tpcoll_comm_create_local(kWorld, gpu0, comms) != TPCOLL_SUCCESS) {
    std::fprintf(stderr, "creating the communicators: %s\n", tpcoll_last_error());
    return 1;
  }

  // Inputs, expected outputs (from the host: exact sums, the concatenation,
  // the CPU add + RMSNorm), residual and weight.
  std::vector<float> residual(64 * kHidden), weight(kHidden);
  for (std::size_t i = 0; i < residual.size(); ++i) residual[i] = static_cast<float>(static_cast<int>(i % 9) - 4);
  for (std::size_t i = 0; i < weight.size(); ++i) weight[i] = 0.5f + static_cast<float>(i % 5) * 0.25f;
  const float* residual_d = upload(residual);
  const float* weight_d = upload(weight);
  Buffers b[kWorld];
  const float* expected[kKinds][2];
  for (int k = 0; k < kKinds; ++k) {
    const Kind& kind = kOps[k];
    for (int set = 0; set < 2; ++set) {
      std::vector<float> want(out_count(kind));
      for (int r = 0; r < kWorld; ++r) {
        std::vector<float> in(kind.count);
        for (std::size_t i = 0; i < in.size(); ++i) in[i] = input(set, r, i);
        b[r].in[k][set] = upload(in);
        if (kind.op == 1)
          for (std::size_t i = 0; i < in.size(); ++i) want[r * kind.count + i] = in[i];
        else
          for (std::size_t i = 0; i < in.size(); ++i) want[i] += in[i];  // ranks in order, exact
      }
      if (kind.op == 2) {
        std::vector<float> sum = want, res(kind.count);
        tpcoll::cpu::add_rmsnorm(TPCOLL_FLOAT32, tpcoll::RmsNormRows{sum.data(), residual.data(), weight.data(),
                                                                     want.data(), res.data(), kind.rows, kHidden,
                                                                     1e-5f});
      }
      expected[k][set] = upload(want);
    }
    for (int r = 0; r < kWorld; ++r) {
      cuda(cudaMalloc(&b[r].out[k], out_count(kind) * sizeof(float)), "cudaMalloc");
      cuda(cudaMalloc(&b[r].residual_out[k], kind.count * sizeof(float)), "cudaMalloc");
    }
  }
  unsigned* wrong = nullptr;
  cuda(cudaMalloc(&wrong, sizeof(unsigned)), "cudaMalloc");
  cuda(cudaMemset(wrong, 0, sizeof(unsigned)), "cudaMemset");
  cudaStream_t streams[kWorld];
  for (cudaStream_t& s : streams) cuda(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  // Loaded now: under CUDA's lazy loading the consumer's first launch would
  // wait for running kernels, rank 0's first op among them, which waits for
  // rank 1's, which this thread has not launched yet (a 60 s timeout on an
  // H100 before this line).
  cudaFuncAttributes consumer{};
  cuda(cudaFuncGetAttributes(&consumer, consume), "loading the consumer kernel");

  for (int i = 0; i < kPairs; ++i) {
    const int k = i % kKinds, set = (i / kKinds) % 2;
    const Kind& kind = kOps[k];
    for (int r = 0; r < kWorld; ++r) {
      tpcoll_result_t rc;
      if (kind.op == 0) {
        rc = tpcoll_all_reduce(comms[r], b[r].in[k][set], b[r].out[k], kind.count, TPCOLL_FLOAT32, streams[r]);
      } else if (kind.op == 1) {
        const std::int64_t shape[] = {static_cast<std::int64_t>(kind.count)};
        rc = tpcoll_all_gather(comms[r], b[r].in[k][set], b[r].out[k], TPCOLL_FLOAT32, 1, shape, 0, streams[r]);
      } else {
        rc = tpcoll_fused_allreduce_residual_rmsnorm(comms[r], b[r].in[k][set], residual_d, weight_d, b[r].out[k],
                                                     b[r].residual_out[k], kind.rows, kHidden, TPCOLL_FLOAT32, 1e-5f,
                                                     streams[r]);
      }
      if (rc != TPCOLL_SUCCESS) {
        std::fprintf(stderr, "rank %d, pair %d: %s\n", r, i, tpcoll_last_error());
        return 1;
      }
      cuda(launch_consumer(b[r].out[k], expected[k][set], out_count(kind), wrong, streams[r]), "launching the consumer");
    }
    if (i % 1000 == 999) {
      cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
      for (int r = 0; r < kWorld; ++r) {
        tpcoll_result_t async = TPCOLL_SUCCESS;
        tpcoll_comm_get_async_error(comms[r], &async);
        if (async != TPCOLL_SUCCESS) {
          std::fprintf(stderr, "rank %d, by pair %d: %s\n", r, i, tpcoll_last_error());
          return 1;
        }
      }
    }
  }
  cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  unsigned wrong_host = 0;
  cuda(cudaMemcpy(&wrong_host, wrong, sizeof wrong_host, cudaMemcpyDeviceToHost), "cudaMemcpy");
  for (tpcoll_comm_t c : comms) tpcoll_comm_destroy(c);
  std::printf("%d op + consumer pairs per rank, %d ranks: %u wrong elements: %s\n", kPairs, kWorld, wrong_host,
              wrong_host == 0 ? "PASS" : "FAIL");
  return wrong_host == 0 ? 0 : 1;
}
