#include "cuda/cuda_backend.hpp"

#include "bootstrap/bootstrap.hpp"
#include "core/dtype.hpp"
#include "core/config.hpp"
#include "core/log.hpp"
#include "core/signature.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/launch.hpp"

#include <fmt/ranges.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <random>

namespace tpcoll::cuda {
namespace {

// What each rank tells the others about its buffer.
struct PeerRecord {
  std::uint64_t process;  // process_token(): equal only within one process
  std::int32_t device;
  char uuid[16];
  std::uint64_t pointer;
  std::uint64_t bytes;
  cudaIpcMemHandle_t handle;
};

// What each rank tells the others after opening their buffers.
struct IpcOpenFailure {
  std::int32_t peer = -1;  // the first peer whose buffer this rank could not open; -1: none
  char error[60] = {};
};

// A random token per process: pids can repeat across containers.
std::uint64_t process_token() {
  static const std::uint64_t token = [] {
    std::random_device rd;
    return (std::uint64_t{rd()} << 32) ^ rd() ^ static_cast<std::uint64_t>(::getpid());
  }();
  return token;
}


std::string uuid_text(const char (&uuid)[16]) {
  std::string s;
  for (char c : uuid) s += fmt::format("{:02x}", static_cast<unsigned char>(c));
  return s;
}

// Threads for a block with `items` items of one per thread: whole warps, at
// most kThreads (the kernels loop past that).
int threads_for(std::size_t items) {
  return static_cast<int>(std::clamp<std::size_t>((items + 31) / 32 * 32, 32, kThreads));
}

// The kernel variant and launch shape, for the call tag: ranks whose kernels
// would pair blocks differently meet as a mismatch instead of one waiting for
// a block that never comes.
std::uint64_t launch_variant(std::uint64_t variant, int blocks, int threads) {
  return variant | static_cast<std::uint64_t>(blocks) << 8 | static_cast<std::uint64_t>(threads) << 24;
}

// Both buffers start on a multiple of `width` bytes.
bool aligned_to(std::size_t width, const void* in, const void* out) {
  return reinterpret_cast<std::uintptr_t>(in) % width == 0 && reinterpret_cast<std::uintptr_t>(out) % width == 0;
}

// CUDA_MPS_ACTIVE_THREAD_PERCENTAGE: the share of the GPU's SMs an MPS
// client may use (all of them when unset).
bool mps_share_limited() { return std::getenv("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE") != nullptr; }

}  // namespace

bool mps_running() {
  // The MPS control daemon listens in its pipe directory.
  const char* dir = std::getenv("CUDA_MPS_PIPE_DIRECTORY");
  return std::filesystem::exists(std::filesystem::path(dir ? dir : "/tmp/nvidia-mps") / "control");
}

int device_from_env() {
  const std::string value = env::kDevice.value();
  if (value.empty() || value == "cpu") return TPCOLL_DEVICE_CPU;
  if (value != "auto") {
    const std::int64_t device = env::kDevice.as_int();
    if (device < 0 || device > std::numeric_limits<int>::max())
      fail(TPCOLL_INVALID_ARGUMENT, "TPCOLL_DEVICE={} is not a device ordinal", device);
    return static_cast<int>(device);
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    cudaGetLastError();
    fail(TPCOLL_UNSUPPORTED, "TPCOLL_DEVICE=auto, but this machine has no usable CUDA device");
  }
  return static_cast<int>(env::kLocalRank.as_int() % devices);
}

int CudaBackend::blocks_for(std::size_t chunk_bytes, int world) {
  constexpr std::size_t kBytesPerBlock = 8 * 1024;
  const int fit = std::min(kMaxBlocks, 128 / world);  // all ranks on one 132-SM GPU
  const auto wanted = static_cast<int>(std::min<std::size_t>((chunk_bytes + kBytesPerBlock - 1) / kBytesPerBlock, fit));
  return std::max(1, wanted);
}

int CudaBackend::low_latency_blocks(std::size_t bytes, int world) {
  // Measured on an H100 (2 ranks sharing it, bf16, 1-64 KiB, 2026-11-24):
  // 64 units of 16 bytes per block were within noise of 32 or 128 and up to
  // 0.2 us faster than 256; past 32 blocks the launch costs more than the
  // smaller blocks save.
  constexpr std::size_t kBytesPerBlock = 1024;
  const int fit = std::min(32, 128 / world);
  const std::size_t wanted = (2 * bytes + kBytesPerBlock - 1) / kBytesPerBlock;
  return static_cast<int>(std::clamp<std::size_t>(wanted, 1, static_cast<std::size_t>(fit)));
}

CudaBackend::CudaBackend(Bootstrap& bootstrap, int device, std::size_t chunk_bytes, std::int64_t timeout_ms)
    : rank_(bootstrap.rank()),
      world_(bootstrap.world()),
      device_(device),
      layout_{chunk_bytes, bootstrap.world()},
      timeout_ns_(static_cast<std::uint64_t>(timeout_ms) * 1000000u),
      low_latency_bytes_(static_cast<std::size_t>(
          std::clamp<std::int64_t>(env::kCudaLowLatencyBytes.as_int(), 0, static_cast<std::int64_t>(kLowLatencyBytes)))) {
  if (world_ > kMaxRanks)
    fail(TPCOLL_UNSUPPORTED, "world size {} exceeds the {} ranks the CUDA kernels serve", world_, kMaxRanks);
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || device_ >= devices) {
    cudaGetLastError();
    fail(TPCOLL_UNSUPPORTED, "device {}: this machine has {} usable CUDA device(s)", device_, devices);
  }
  check_cuda(cudaSetDevice(device_), "cudaSetDevice");
  early_launch_ = early_launch_enabled(device_);
  check_cuda(cudaMalloc(&buffer_, layout_.total()), "allocating the staging buffer");
  check_cuda(cudaMemset(buffer_, 0, layout_.total()), "clearing the staging buffer");
  check_cuda(cudaHostAlloc(&failure_host_, sizeof(FailureReport), cudaHostAllocMapped), "allocating the error report");
  *failure_host_ = FailureReport{};
  check_cuda(cudaHostGetDevicePointer(&failure_device_, failure_host_, 0), "mapping the error report");
  check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");

  cudaDeviceProp prop{};
  check_cuda(cudaGetDeviceProperties(&prop, device_), "cudaGetDeviceProperties");
  PeerRecord mine{};
  mine.process = process_token();
  mine.device = device_;
  std::memcpy(mine.uuid, prop.uuid.bytes, sizeof mine.uuid);
  mine.pointer = reinterpret_cast<std::uint64_t>(buffer_);
  mine.bytes = layout_.total();
  check_cuda(cudaIpcGetMemHandle(&mine.handle, buffer_), "cudaIpcGetMemHandle");
  std::vector<PeerRecord> all(world_);
  bootstrap.all_gather(&mine, all.data(), sizeof mine);

  peers_.assign(world_, nullptr);
  const std::vector<std::pair<int, int>> faults = env::ipc_open_faults();
  IpcOpenFailure mine_failed{};
  std::map<std::string, std::vector<int>> by_gpu;
  bool processes_share_gpu = false;
  for (int r = 0; r < world_; ++r) {
    const PeerRecord& peer = all[r];
    if (peer.bytes != mine.bytes)
      fail(TPCOLL_MISMATCH, "rank {} has a {} B staging buffer, rank {} {} B: TPCOLL_CUDA_BUFFER_BYTES differs", r,
           peer.bytes, rank_, mine.bytes);
    const std::string gpu = uuid_text(peer.uuid);
    by_gpu[gpu].push_back(r);
    const bool same_gpu = gpu == uuid_text(mine.uuid);
    if (same_gpu && peer.process != mine.process) processes_share_gpu = true;
    if (r == rank_) {
      peers_[r] = buffer_;
    } else if (peer.process == mine.process) {
      if (peer.device != device_) {
        int can = 0;
        check_cuda(cudaDeviceCanAccessPeer(&can, device_, peer.device), "cudaDeviceCanAccessPeer");
        if (!can) fail(TPCOLL_UNSUPPORTED, "GPU {} cannot access GPU {} (no peer access)", device_, peer.device);
        const cudaError_t e = cudaDeviceEnablePeerAccess(peer.device, 0);
        if (e == cudaErrorPeerAccessAlreadyEnabled)
          cudaGetLastError();
        else
          check_cuda(e, "cudaDeviceEnablePeerAccess");
      }
      peers_[r] = reinterpret_cast<std::byte*>(peer.pointer);
    } else if (mine_failed.peer < 0) {  // after a failure the others are moot
      const bool injected = std::find(faults.begin(), faults.end(), std::pair{rank_, r}) != faults.end();
      void* mapped = nullptr;
      const cudaError_t e =
          injected ? cudaErrorInvalidDevice : cudaIpcOpenMemHandle(&mapped, peer.handle, cudaIpcMemLazyEnablePeerAccess);
      if (e == cudaSuccess) {
        opened_.push_back(mapped);
        peers_[r] = static_cast<std::byte*>(mapped);
      } else {
        cudaGetLastError();
        mine_failed.peer = r;
        const std::string why = injected ? std::string("injected by TPCOLL_FAULT_IPC_OPEN") : cudaGetErrorName(e);
        std::snprintf(mine_failed.error, sizeof mine_failed.error, "%s", why.c_str());
      }
    }
  }
  one_gpu_ = by_gpu.size() == 1;
  for (const auto& [gpu, ranks] : by_gpu) shares_gpu_ = shares_gpu_ || ranks.size() > 1;
  // cudaDeviceCanAccessPeer may say yes and the open still fail
  // (TRT-LLM#16899): every rank learns of any failure, so that all decide
  // alike and none waits for a peer that gave up.
  std::vector<IpcOpenFailure> failures(world_);
  bootstrap.all_gather(&mine_failed, failures.data(), sizeof mine_failed);
  for (int r = 0; r < world_ && ipc_unavailable_.empty(); ++r)
    if (failures[r].peer >= 0)
      ipc_unavailable_ = fmt::format("rank {} could not open rank {}'s buffer through CUDA IPC ({})", r,
                                     failures[r].peer, failures[r].error);
  if (!ipc_unavailable_.empty()) {
    for (void* p : opened_) cudaIpcCloseMemHandle(p);
    opened_.clear();
    return;
  }
  std::string placement;  // "ranks 0,1 on GPU 80294d83"
  for (const auto& [gpu, ranks] : by_gpu)
    placement += fmt::format("{}rank{} {} on GPU {}", placement.empty() ? "" : "; ", ranks.size() > 1 ? "s" : "",
                              fmt::join(ranks, ","), gpu.substr(0, 8));
  if (processes_share_gpu && !mps_running())
    log(LogLevel::kWarn, "init",
        "rank {}: ranks in different processes share a GPU but the MPS daemon is not running: each wait "
        "will take milliseconds. Start it with `nvidia-cuda-mps-control -d`",
        rank_);
  // Seen on an H100 under MPS (the decoder example at TP=4, 128 tokens):
  // one process's GEMM did not run while the other ranks' collectives, which
  // waited for it, held the SMs, until they timed out; with each process
  // limited to a quarter of the SMs every check passed.
  if (processes_share_gpu && !mps_share_limited())
    log(LogLevel::kWarn, "init",
        "rank {}: ranks in different processes share a GPU with no CUDA_MPS_ACTIVE_THREAD_PERCENTAGE: a peer's "
        "collective waiting for this process can hold the SMs its other kernels need (a GEMM), until the "
        "timeout. Give each process its share, e.g. CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=100/(ranks per GPU)",
        rank_);
  log(LogLevel::kInfo, "init", "rank {}: cuda backend on device {} ({}), {}", rank_, device_, prop.name, placement);
  bootstrap.barrier();  // every mapping is open before anyone launches
}

CudaBackend::~CudaBackend() {
  cudaSetDevice(device_);
  for (void* p : opened_) cudaIpcCloseMemHandle(p);
  cudaFree(buffer_);
  cudaFreeHost(failure_host_);
}

void CudaBackend::raise_async_error() const {
  const std::uint32_t failure = *reinterpret_cast<volatile std::uint32_t*>(&failure_host_->code);
  if (failure == 0) return;
  const int peer = static_cast<int>(failure & 0xffffu);
  if ((failure & ~0xffffu) == kFailAborted)
    fail(TPCOLL_ABORTED,
         "rank {}: rank {} aborted the communicator (tpcoll_comm_abort) while this rank's kernel waited", rank_,
         peer);
  if ((failure & ~0xffffu) != kFailMismatch)
    fail(TPCOLL_TIMEOUT, "rank {}: peer {} timed out: it did not arrive within {} ms", rank_, peer,
         timeout_ns_ / 1000000u);
  const CallSignature mine = failure_host_->mine, theirs = failure_host_->theirs;
  if (theirs.step == 0 || theirs.step > mine.step)
    fail(TPCOLL_MISMATCH, "ranks disagree: rank {} called {} but peer {} ran another call at that step", rank_,
         describe(mine), peer);
  if (mine.same_call(theirs))
    fail(TPCOLL_MISMATCH,
         "ranks disagree: rank {} and peer {} called {} but chose different kernels: buffers 16-byte aligned on "
         "one of them only, or a launch shape that differs",
         rank_, peer, describe(mine));
  fail_mismatch(rank_, mine, peer, theirs);
}

void CudaBackend::abort() {
  // From a stream of our own that waits for nothing, so that the writes do
  // not queue behind the kernels they stop (ours included).
  check_cuda(cudaSetDevice(device_), "cudaSetDevice");
  cudaStream_t stream = nullptr;
  check_cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  const std::uint64_t by = static_cast<std::uint64_t>(rank_) + 1;
  cudaError_t e = cudaSuccess;
  for (std::byte* peer : peers_)
    if (e == cudaSuccess)
      e = cudaMemcpyAsync(peer + BufferLayout::kSignals + offsetof(Signals, aborted_by), &by, sizeof by,
                          cudaMemcpyHostToDevice, stream);
  if (e == cudaSuccess) e = cudaStreamSynchronize(stream);
  cudaStreamDestroy(stream);
  check_cuda(e, "writing the abort into every rank's buffer");
}

cudaError_t load_kernels() {
  std::vector<const void*> kernels;
  list_all_reduce_kernels(kernels);
  list_reduce_scatter_kernels(kernels);
  list_all_gather_kernels(kernels);
  list_add_rmsnorm_kernels(kernels);
  list_fused_kernels(kernels);
  list_quantise_kernels(kernels);
  for (const void* kernel : kernels) {
    cudaFuncAttributes attributes{};
    if (const cudaError_t e = cudaFuncGetAttributes(&attributes, kernel); e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

void load_kernels_on(int device) {
  check_cuda(cudaSetDevice(device), "cudaSetDevice");
  check_cuda(load_kernels(), "loading tpcoll's kernels");
}

void check_device_pointer(const void* p, const char* name, int device) {
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    cudaGetLastError();
    fail(TPCOLL_INVALID_ARGUMENT, "{} ({}) is not memory CUDA knows", name, p);
  }
  if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
    fail(TPCOLL_INVALID_ARGUMENT, "{} ({}) is host memory; a CUDA communicator needs device memory", name, p);
  if (attr.device != device)
    fail(TPCOLL_INVALID_ARGUMENT, "{} ({}) is on device {}, but this rank's device is {}", name, p, attr.device,
         device);
}

void check_fp8_pointers(const fp8::Fp8Output& fp8, int device) {
  if (fp8.out_fp8 == nullptr) return;
  check_device_pointer(fp8.out_fp8, "out_fp8", device);
  if (fp8.scaling == TPCOLL_FP8_PER_TOKEN) check_device_pointer(fp8.row_scales, "row_scales", device);
}

bool early_launch_enabled(int device) {
  int major = 0;
  check_cuda(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute");
  return env::kCudaEarlyLaunch.as_bool() && major >= 9;  // programmatic dependent launch is sm_90's
}

NormLaunch norm_launch_on(int device) {
  int sms = 0;
  check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  // Two blocks of the held-row kernel fit on an SM at 8192 elements a row.
  return NormLaunch{early_launch_enabled(device), 2 * static_cast<std::size_t>(sms)};
}

void add_rmsnorm(int device, const NormLaunch& launch, tpcoll_dtype_t dtype, const RmsNormRows& args, void* stream,
                 bool x_is_scratch) {
  if (!x_is_scratch) check_device_pointer(args.x, "x", device);
  check_device_pointer(args.weight, "weight", device);
  if (args.out != nullptr || args.fp8.out_fp8 == nullptr) check_device_pointer(args.out, "out", device);
  if (args.residual != nullptr) {
    check_device_pointer(args.residual, "residual", device);
    check_device_pointer(args.residual_out, "residual_out", device);
  }
  check_fp8_pointers(args.fp8, device);
  check_cuda(cudaSetDevice(device), "cudaSetDevice");
  check_cuda(launch_add_rmsnorm(dtype, args, launch, static_cast<cudaStream_t>(stream)),
             "launching the add + RMSNorm kernel");
}

void quantise_fp8(int device, const NormLaunch& launch, tpcoll_dtype_t dtype, const void* out, std::size_t rows,
                  std::size_t hidden, const fp8::Fp8Output& fp8, void* stream) {
  check_fp8_pointers(fp8, device);
  check_cuda(cudaSetDevice(device), "cudaSetDevice");
  check_cuda(launch_quantise_fp8(dtype, QuantiseRows{out, rows, hidden, fp8}, launch.early_launch,
                                 static_cast<cudaStream_t>(stream)),
             "launching the FP8 quantisation kernel");
}

ScratchRows::ScratchRows(const DeviceBlock& block, std::size_t bytes, void* stream) : stream_(stream) {
  if (bytes == 0) return;
  if (bytes <= block.bytes()) {
    data_ = block.data();
    return;
  }
  check_cuda(cudaSetDevice(block.device()), "cudaSetDevice");
  check_cuda(cudaMallocAsync(&data_, bytes, static_cast<cudaStream_t>(stream)), "cudaMallocAsync (out of an FP8 call)");
  allocated_ = true;
}

ScratchRows::~ScratchRows() {
  if (allocated_) static_cast<void>(cudaFreeAsync(data_, static_cast<cudaStream_t>(stream_)));
}

void CudaBackend::run(const Call& call, const Plan& plan, const Buffers& buffers) {
  // A fused call comes here only when fused_fits (the communicator runs the
  // others unfused).
  raise_async_error();
  check_device_pointer(buffers.in, "in", device_);
  if (!buffers.out_is_scratch && (buffers.out != nullptr || buffers.fp8.out_fp8 == nullptr))
    check_device_pointer(buffers.out, "out", device_);
  check_cuda(cudaSetDevice(device_), "cudaSetDevice");
  if (call.op == TPCOLL_OP_ALL_REDUCE)
    all_reduce(call, plan, buffers);
  else if (call.op == TPCOLL_OP_ALL_GATHER)
    all_gather(call, plan, buffers);
  else if (call.op == TPCOLL_OP_REDUCE_SCATTER)
    reduce_scatter(call, plan, buffers);
  else
    fused(call, plan, buffers);
}

std::size_t CudaBackend::fused_low_latency_bytes(const Call& call) {
  const std::size_t group_bytes = 8 * dtype_size(call.dtype);
  return call.rows() * kHeldThreads * kFusedGroupsPerThread * group_bytes;
}

int CudaBackend::fused_low_latency_blocks(std::size_t rows, int world) {
  // As the low-latency all-reduce's blocks: every rank's fit on the GPU at
  // once, with room to spare for ranks sharing it.
  const int fit = std::min(32, 128 / world);
  return static_cast<int>(std::clamp<std::size_t>(rows, 1, static_cast<std::size_t>(fit)));
}

bool CudaBackend::fused_fits(const Call& call, tpcoll_algo_t algo, const Buffers& b) const {
  const bool aligned = aligned_to(16, b.in, b.out) && aligned_to(16, b.weight, b.weight) &&
                       (!call.has_residual || aligned_to(16, b.residual, b.residual_out));
  const bool rows = world_ > 1 && call.hidden() % 8 == 0 && call.hidden() * dtype_size(call.dtype) <= kMaxNormRowBytes;
  if (algo == TPCOLL_ALGO_ONESHOT)
    return aligned && rows && call.hidden() <= kFusedMaxHidden && fused_low_latency_bytes(call) <= low_latency_bytes_ &&
           aligned_to(8, b.fp8.out_fp8, b.fp8.out_fp8);  // the FP8 epilogue's group stores
  // (The two-shot has no FP8 epilogue: the communicator never passes it one.)
  return algo == TPCOLL_ALGO_TWOSHOT && aligned && rows && call.rows() >= static_cast<std::size_t>(world_);
}

void CudaBackend::fused(const Call& call, const Plan& plan, const Buffers& buffers) const {
  check_device_pointer(buffers.weight, "weight", device_);
  if (call.has_residual) {
    check_device_pointer(buffers.residual, "residual", device_);
    check_device_pointer(buffers.residual_out, "residual_out", device_);
  }
  check_fp8_pointers(buffers.fp8, device_);
  if (buffers.fp8.out_fp8 != nullptr && plan.algo != TPCOLL_ALGO_ONESHOT)
    fail(TPCOLL_INTERNAL_ERROR, "the fused {} kernel was given an FP8 epilogue; only the one-shot has one",
         algo_name(plan.algo));
  FusedChoice choice{};
  choice.two_shot = plan.algo == TPCOLL_ALGO_TWOSHOT;
  choice.one_gpu = one_gpu_;
  choice.early_launch = early_launch_;
  FusedArgs args{};
  args.step_rows = plan.chunk_bytes / call.inner_bytes;
  if (choice.two_shot) {
    // A block per row of a rank's share of a step, as many as fit, with the
    // row in shared memory.
    const std::size_t share = (args.step_rows + world_ - 1) / world_;
    choice.blocks = static_cast<int>(std::min<std::size_t>(share, static_cast<std::size_t>(blocks_for(plan.chunk_bytes, world_))));
    choice.threads = threads_for(call.hidden() / 8);
    choice.shared_bytes = call.hidden() * dtype_size(call.dtype);
  } else {
    choice.blocks = fused_low_latency_blocks(call.rows(), world_);
  }
  fill_peer_args(args, call, plan, launch_variant(choice.two_shot ? 8u : 4u, choice.blocks, choice.threads));
  args.norm = RmsNormRows{buffers.in, buffers.residual, buffers.weight, buffers.out, buffers.residual_out,
                          call.rows(), call.hidden(), call.eps, buffers.fp8};
  check_cuda(launch_fused(call.dtype, choice, args, static_cast<cudaStream_t>(buffers.stream)),
             "launching the fused kernel");
}

void CudaBackend::fill_peer_args(PeerArgs& args, const Call& call, const Plan& plan, std::uint64_t variant) const {
  std::copy(peers_.begin(), peers_.end(), args.buffers);
  args.layout = layout_;
  args.rank = rank_;
  args.world = world_;
  args.timeout_ns = timeout_ns_;
  args.failure = failure_device_;
  // The kernel variant depends on this rank's buffer alignment, so it is part
  // of the tag: ranks whose variants differ would split the data differently,
  // and are reported as a mismatch instead.
  args.call = make_signature(call, plan.algo, 0);
  const std::uint64_t hash = args.call.call_hash() ^ (variant * 0x9e3779b97f4a7c15ull);
  args.call_tag = static_cast<std::uint32_t>(hash & ((1u << kCallBits) - 1));
}

void CudaBackend::size_low_latency(std::size_t bytes, int& blocks, int& threads) const {
  blocks = low_latency_blocks(bytes, world_);
  const std::size_t units_per_block = ((bytes + 7) / 8 + blocks - 1) / blocks;
  threads = threads_for(units_per_block);
}

KernelChoice CudaBackend::reduction_choice(const Call& call, const Plan& plan, bool vectorized,
                                           std::size_t low_latency_bytes) const {
  KernelChoice choice{plan.algo, call.dtype, vectorized, one_gpu_, false, blocks_for(plan.chunk_bytes, world_)};
  choice.low_latency = vectorized && low_latency_bytes <= low_latency_bytes_;
  if (choice.low_latency) size_low_latency(low_latency_bytes, choice.blocks, choice.threads);
  choice.early_launch = early_launch_;
  return choice;
}

std::uint64_t CudaBackend::reduction_variant(const KernelChoice& choice) {
  return launch_variant((choice.by_input_unit ? 4u : 0u) | (choice.low_latency ? 2u : 0u) | (choice.vectorized ? 1u : 0u),
                        choice.blocks, choice.threads);
}

void CudaBackend::all_reduce(const Call& call, const Plan& plan, const Buffers& buffers) const {
  // Chunks are whole 16-byte vectors (plan.chunk_bytes is a multiple of 64),
  // so 16-byte alignment of the buffers carries over to every chunk.
  const bool vectorized = aligned_to(16, buffers.in, buffers.out);
  const KernelChoice choice =
      reduction_choice(call, plan, vectorized, plan.algo == TPCOLL_ALGO_ONESHOT ? call.bytes : kNoLowLatency);

  AllReduceArgs args{};
  fill_peer_args(args, call, plan, reduction_variant(choice));
  args.in = buffers.in;
  args.out = buffers.out;
  args.count = call.count;
  args.chunk_count = plan.chunk_bytes / dtype_size(call.dtype);
  check_cuda(launch_all_reduce(choice, args, static_cast<cudaStream_t>(buffers.stream)),
             "launching the all-reduce kernel");
}

void CudaBackend::reduce_scatter(const Call& call, const Plan& plan, const Buffers& buffers) const {
  const std::size_t elem = dtype_size(call.dtype);
  const std::size_t share = call.count / static_cast<std::size_t>(world_);
  // Every share starts 16-byte aligned when the input does and a share is
  // whole vectors; pieces are 64-byte multiples (plan.chunk_bytes / world).
  const bool vectorized = aligned_to(16, buffers.in, buffers.out) && share * elem % 16 == 0;
  // A rank's low-latency area takes a share of up to kLowLatencyBytes from
  // each peer. Where the all-reduce's grid for the whole input has a thread
  // per unit, the low-latency kernel runs it (reduce_scatter.cuh says why).
  KernelChoice choice = reduction_choice(call, plan, vectorized, share * elem);
  if (choice.low_latency) {
    int blocks = 0, threads = 0;
    size_low_latency(call.bytes, blocks, threads);
    choice.by_input_unit = call.bytes / 8 <= static_cast<std::size_t>(blocks) * static_cast<std::size_t>(threads);
    if (choice.by_input_unit) {
      choice.blocks = blocks;
      choice.threads = threads;
    }
  }

  ReduceScatterArgs args{};
  fill_peer_args(args, call, plan, reduction_variant(choice));
  args.in = buffers.in;
  args.out = buffers.out;
  args.share = share;
  args.piece_count = plan.chunk_bytes / elem / static_cast<std::size_t>(world_);
  check_cuda(launch_reduce_scatter(choice, args, static_cast<cudaStream_t>(buffers.stream)),
             "launching the reduce-scatter kernel");
}

void CudaBackend::all_gather(const Call& call, const Plan& plan, const Buffers& buffers) const {
  const auto fits = [&](std::size_t width) {
    return aligned_to(width, buffers.in, buffers.out) && call.inner_bytes % width == 0;
  };
  GatherChoice choice{};
  choice.width = fits(16) ? 16 : fits(4) ? 4 : 1;
  choice.one_gpu = one_gpu_;
  choice.low_latency = fits(8) && call.bytes <= low_latency_bytes_;
  choice.blocks = blocks_for(plan.chunk_bytes, world_);
  choice.threads = kThreads;
  if (choice.low_latency) size_low_latency(call.bytes, choice.blocks, choice.threads);
  choice.early_launch = early_launch_;

  AllGatherArgs args{};
  fill_peer_args(args, call, plan,
                 launch_variant((choice.low_latency ? 32u : 0u) | static_cast<unsigned>(choice.width), choice.blocks,
                                choice.threads));
  args.in = buffers.in;
  args.out = buffers.out;
  args.bytes = call.bytes;
  args.inner = call.inner_bytes;
  args.chunk_bytes = plan.chunk_bytes;
  check_cuda(launch_all_gather(choice, args, static_cast<cudaStream_t>(buffers.stream)),
             "launching the all-gather kernel");
}

}  // namespace tpcoll::cuda
