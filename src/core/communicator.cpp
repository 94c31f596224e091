#include "core/communicator.hpp"

#include "core/config.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/tune_load.hpp"
#include "core/validate.hpp"
#include "cpu/fallback_backend.hpp"
#include "cpu/kernels.hpp"
#include "cpu/shm_backend.hpp"
#include "cuda/capture_guard.hpp"
#include "cuda/cuda_backend.hpp"
#include "cuda/tune_key.hpp"
#include "cuda/stream_order.hpp"
#include "nccl/nccl_backend.hpp"

#include <algorithm>
#include <array>
#include <exception>
#include <map>
#include <mutex>
#include <vector>

namespace tpcoll::core {
namespace {

// Communicators of one job are told apart by creation order, which is the
// same on every rank (creation is collective).
std::string rendezvous_key(const std::string& job) {
  static std::mutex mutex;
  static std::map<std::string, int> created;
  std::lock_guard lock(mutex);
  return job + "#" + std::to_string(created[job]++);
}

// What must be equal on every rank for plans, and the CUDA kernels' launch
// shapes, to agree: a launch shape is a function of the op, its shape, the
// plan and these alone (flashinfer#3408: ranks that sized one kernel
// differently hung).
struct Settings {
  std::uint64_t staging_bytes;
  std::int64_t low_latency_bytes;  // TPCOLL_CUDA_LOW_LATENCY_BYTES: which kernel, how many blocks
  std::int32_t disabled;
  std::int32_t forced;  // -1 for none
  bool operator==(const Settings&) const = default;
};

}  // namespace

Communicator::Communicator(const tpcoll_comm_config_t& config, std::unique_ptr<Bootstrap> bootstrap)
    : rank_(config.rank), world_(config.world_size), device_(config.device) {
  refresh_log_level();
  if (world_ < 1 || world_ > TPCOLL_MAX_RANKS)
    fail(TPCOLL_INVALID_ARGUMENT, "world_size {} is outside 1..{}", world_, TPCOLL_MAX_RANKS);
  if (rank_ < 0 || rank_ >= world_) fail(TPCOLL_INVALID_ARGUMENT, "rank {} is outside 0..{}", rank_, world_ - 1);
  if (device_ < TPCOLL_DEVICE_CPU) fail(TPCOLL_INVALID_ARGUMENT, "device {} is neither a CUDA ordinal nor CPU", device_);
  const std::string job = config.job_id ? config.job_id : "";
  if (!bootstrap && config.allgather == nullptr && job.empty() && world_ > 1)
    fail(TPCOLL_INVALID_ARGUMENT, "job_id is empty: ranks need a shared job id (tpcoll run sets TPCOLL_JOB) "
                                  "or an allgather callback to find each other");

  timeout_ms_ = env::kTimeoutMs.as_int();
  if (timeout_ms_ <= 0) fail(TPCOLL_INVALID_ARGUMENT, "TPCOLL_TIMEOUT_MS={} must be positive", timeout_ms_);
  const EnvParam& staging_param = on_gpu() ? env::kCudaBufferBytes : env::kCpuBufferBytes;
  const std::int64_t staging = staging_param.as_int();
  if (staging < 4096 || staging % 64 != 0)
    fail(TPCOLL_INVALID_ARGUMENT, "{}={} must be a multiple of 64 and at least 4096", staging_param.name, staging);
  context_.world = world_;
  context_.staging_bytes = static_cast<std::size_t>(staging);
  context_.disabled = env::kDisable.as_bool();
  env_forced_ = env::forced_algo();
  context_.forced = env_forced_;

  // Before meeting the peers: a rank that cannot create leaves at once.
  if (on_gpu()) cuda::refuse_creation_during_capture(device_);
  if (bootstrap)
    bootstrap_ = std::move(bootstrap);
  else if (config.allgather)
    bootstrap_ = make_callback_bootstrap(rank_, world_, config.allgather, config.allgather_user_data);
  else
    bootstrap_ = connect_socket_bootstrap(rank_, world_, rendezvous_key(job), env::kBootstrapTimeoutMs.as_int());
  bootstrap_->set_timeout_ms(timeout_ms_);
  agree_on_settings();
  if (on_gpu())
    create_cuda_backend();
  else
    create_cpu_backends();
  choose_table();  // after the backend, which refuses a device that is not there
  log(LogLevel::kInfo, "init", "rank {}/{}: backend {}, staging {} B per rank, table {} ({}), timeout {} ms{}{}",
      rank_, world_, context_.fast_backend, context_.staging_bytes, context_.table->name, context_.table->source,
      timeout_ms_, context_.disabled ? ", TPCOLL_DISABLE=1" : "",
      context_.forced ? std::string(", forced ") + algo_name(*context_.forced) : std::string());
}

void Communicator::create_cpu_backends() {
  fallback_ = std::make_unique<cpu::FallbackBackend>(*bootstrap_);
  try {
    fast_ = std::make_unique<cpu::ShmBackend>(*bootstrap_, context_.staging_bytes, timeout_ms_);
  } catch (const Error& e) {
    if (e.code() != TPCOLL_SYSTEM_ERROR) throw;
    context_.fast_available = false;
    context_.fast_unavailable_reason = std::string("shared memory unavailable: ") + e.what();
    log(LogLevel::kWarn, "init", "rank {}: {}; every op takes the fallback path", rank_, e.what());
  }
}

// Our kernels, and NCCL where they cannot serve or are switched off. Both
// decisions rest on what every rank knows alike (world size, settings agreed
// above), so every rank builds the same engines.
void Communicator::create_cuda_backend() {
  context_.fast_backend = kCudaBackend;
  context_.fallback_backend = kNcclBackend;
  context_.fused_max_hidden = cuda::CudaBackend::kFusedMaxHidden;
  if (world_ > cuda::kMaxRanks) {
    context_.fast_available = false;
    context_.fast_unavailable_reason =
        fmt::format("{} ranks: tpcoll's kernels serve at most {}, NCCL serves the rest", world_, cuda::kMaxRanks);
  } else {
    auto backend = std::make_unique<cuda::CudaBackend>(*bootstrap_, device_, context_.staging_bytes, timeout_ms_);
    if (const std::string& why = backend->ipc_unavailable(); !why.empty()) {
      if (backend->ranks_share_gpu())
        fail(TPCOLL_UNSUPPORTED, "rank {}: {}; ranks share a GPU, so NCCL cannot serve this communicator either",
             rank_, why);
      log(LogLevel::kWarn, "init", "rank {}: {}: this communicator takes the NCCL path", rank_, why);
      context_.fast_available = false;
      context_.fast_unavailable_reason = why + ": NCCL serves every op";
    } else {
      cuda_ = backend.get();
      fast_ = std::move(backend);
    }
  }
  if (!context_.fast_available || context_.disabled || env_forced_ == TPCOLL_ALGO_FALLBACK)
    fallback_ = std::make_unique<nccl::NcclBackend>(*bootstrap_, device_, context_.staging_bytes, timeout_ms_);
  cuda::load_kernels_on(device_);  // the add + RMSNorm kernel serves NCCL-only communicators too
  cuda_norm_launch_ = cuda::norm_launch_on(device_);
  stream_order_ = std::make_unique<cuda::StreamOrder>(rank_, device_);
  // As large as a staging chunk (TPCOLL_CUDA_BUFFER_BYTES, 8 MiB by
  // default): a call of up to that many bytes needs no allocation, and above
  // it the op takes long enough (about 90 us at 16 MiB, 2 ranks on an H100)
  // that a graph's allocation nodes cost it under 3%. It is a fraction of
  // the staging buffer (two slots per rank) that the backend holds anyway.
  fp8_scratch_ = std::make_unique<cuda::DeviceBlock>(device_, world_ > 1 ? context_.staging_bytes : 0,
                                                      "allocating the FP8 scratch block");
}

Communicator::~Communicator() = default;

void Communicator::agree_on_settings() {
  const Settings mine{context_.staging_bytes, env::kCudaLowLatencyBytes.as_int(), context_.disabled,
                      context_.forced ? *context_.forced : -1};
  std::vector<Settings> all(world_);
  bootstrap_->all_gather(&mine, all.data(), sizeof mine);
  for (int r = 0; r < world_; ++r)
    if (!(all[r] == all[0]))
      fail(TPCOLL_MISMATCH,
           "ranks 0 and {} were started with different settings ({} {} vs {}, TPCOLL_CUDA_LOW_LATENCY_BYTES {} "
           "vs {}, TPCOLL_DISABLE {} vs {}, TPCOLL_ALGO {} vs {}): plans would diverge",
           r, on_gpu() ? env::kCudaBufferBytes.name : env::kCpuBufferBytes.name, all[0].staging_bytes,
           all[r].staging_bytes, all[0].low_latency_bytes, all[r].low_latency_bytes, all[0].disabled,
           all[r].disabled, all[0].forced, all[r].forced);
}

// Rank 0 reads the measured table of this machine, backend and placement
// where there is one (`tpcoll tune` writes it); every rank takes the bytes it
// accepted.
void Communicator::choose_table() {
  const bool share_gpu = on_gpu() && ranks_share_one_gpu();  // collective: every rank takes part
  TuneFileText found;
  // Rank 0's GPU model picks every rank's built-in rows.
  std::int32_t model = static_cast<std::int32_t>(GpuModel::kH100);
  if (rank_ == 0) {
    const TuneKey key = on_gpu() ? cuda::tune_key(device_, world_, share_gpu) : cpu_tune_key(world_);
    if (on_gpu()) model = static_cast<std::int32_t>(gpu_model(key.device));
    found = read_tune_file(tune_file_path(key), key);
    log(found.warn ? LogLevel::kWarn : LogLevel::kInfo, "tune", "{}", found.why);
  }
  if (on_gpu()) {
    std::vector<std::int32_t> models(world_);
    bootstrap_->all_gather(&model, models.data(), sizeof model);
    context_.table = &builtin_cuda_table(static_cast<GpuModel>(models[0]));
  } else {
    context_.table = &builtin_cpu_table();
  }
  const std::string text = broadcast_from_rank0(found.text);
  if (text.empty()) return;
  tuned_ = std::make_unique<LoadedTable>(parse_tune_table(text));
  tuned_view_ = tuned_->view();
  context_.defaults = context_.table;
  context_.table = &tuned_view_;
}

bool Communicator::ranks_share_one_gpu() {
  const auto mine = cuda::device_uuid(device_);
  std::vector<std::array<unsigned char, 16>> all(world_);
  bootstrap_->all_gather(&mine, all.data(), sizeof mine);
  return std::all_of(all.begin(), all.end(), [&](const auto& u) { return u == all[0]; });
}

std::string Communicator::broadcast_from_rank0(const std::string& text) {
  const std::uint64_t mine = text.size();
  std::vector<std::uint64_t> sizes(world_);
  bootstrap_->all_gather(&mine, sizes.data(), sizeof mine);
  const std::size_t size = sizes[0];
  if (size == 0) return {};
  std::string sent = rank_ == 0 ? text : std::string(size, '\0');
  std::vector<char> all(size * world_);
  bootstrap_->all_gather(sent.data(), all.data(), size);
  return std::string(all.data(), size);
}

Communicator::OpGuard::OpGuard(Communicator& comm) : in_op_(comm.in_op_) {
  if (in_op_.exchange(true, std::memory_order_acquire))
    fail(TPCOLL_INVALID_ARGUMENT,
         "rank {}: another thread is inside an op on this communicator; a communicator serves one thread at a "
         "time (only tpcoll_comm_abort may come from another)",
         comm.rank_);
}

Communicator::OpGuard::~OpGuard() { in_op_.store(false, std::memory_order_release); }

void Communicator::require_usable(void* stream) const {
  if (aborted_.load(std::memory_order_acquire))
    fail(TPCOLL_ABORTED, "rank {}: the communicator was aborted on this rank (tpcoll_comm_abort)", rank_);
  if (!broken_.empty())
    fail(TPCOLL_SYSTEM_ERROR, "communicator is unusable after an earlier failure: {}", broken_);
  if (stream != nullptr && !on_gpu())
    fail(TPCOLL_INVALID_ARGUMENT, "stream is not NULL, but this is a CPU communicator");
}

Plan Communicator::plan_call(const Call& call, std::optional<tpcoll_algo_t> as) {
  const std::optional<tpcoll_algo_t> forced = as ? as : context_.forced;
  if (!log_enabled(LogLevel::kTrace)) return plans_.plan(call, context_, forced);
  PlanContext context = context_;
  context.forced = forced;
  Plan plan = make_plan(call, context, /*explain=*/true);
  log(LogLevel::kTrace, "op", "rank {}: {} by {} in {} step(s): {}", rank_, describe(call), algo_name(plan.algo),
      plan.steps, plan.reason);
  return plan;
}

// A one-shot or two-shot plan that no fused kernel serves still moves the
// data that way (the tuner timed that candidate so); an unfused plan leaves
// the all-reduce to its own table.
Plan Communicator::plan_leading_all_reduce(const Call& reduce, const Plan& fused) {
  const bool moves = fused.algo == TPCOLL_ALGO_ONESHOT || fused.algo == TPCOLL_ALGO_TWOSHOT;
  return plan_call(reduce, moves ? std::optional(fused.algo) : std::nullopt);
}

void Communicator::run(const Call& call, const Plan& plan, const Buffers& buffers) {
  if (plan.algo == TPCOLL_ALGO_FALLBACK && !fallback_)
    fail(TPCOLL_UNSUPPORTED,
         "{} was forced to the fallback, but this communicator did not start NCCL: set TPCOLL_ALGO=fallback "
         "or TPCOLL_DISABLE=1 before creating it",
         describe(call));
  Backend& backend = plan.algo == TPCOLL_ALGO_FALLBACK ? *fallback_ : *fast_;
  if (stream_order_) stream_order_->before_op(buffers.stream);
  try {
    backend.run(call, plan, buffers);
  } catch (const Error& e) {
    // A refused argument touched nothing, and a disagreement is seen by every
    // rank at the same step, which all then complete; a timeout or a failed
    // transport leaves peers at unknown steps.
    if (aborted_.load(std::memory_order_acquire) && e.code() != TPCOLL_ABORTED) {
      // This rank aborted while the op ran: whatever the transport then said,
      // the cause is the abort.
      broken_ = fmt::format("rank {} aborted the communicator", rank_);
      fail(TPCOLL_ABORTED, "rank {}: {} stopped by tpcoll_comm_abort ({})", rank_, describe(call), e.what());
    }
    const tpcoll_result_t code = e.code();
    if (code != TPCOLL_MISMATCH && code != TPCOLL_INVALID_ARGUMENT && code != TPCOLL_UNSUPPORTED) broken_ = e.what();
    throw;
  }
}

void Communicator::all_reduce(const void* in, void* out, std::size_t count, tpcoll_dtype_t dtype, void* stream) {
  const OpGuard guard(*this);
  require_usable(stream);
  const Call call = validate_all_reduce(in, out, count, dtype);
  run(call, plan_call(call), Buffers{in, out, nullptr, nullptr, nullptr, stream});
}

void Communicator::all_gather(const void* in, void* out, tpcoll_dtype_t dtype, int ndim, const std::int64_t* shape,
                              int dim, void* stream) {
  const OpGuard guard(*this);
  require_usable(stream);
  const Call call = validate_all_gather(in, out, dtype, ndim, shape, dim);
  run(call, plan_call(call), Buffers{in, out, nullptr, nullptr, nullptr, stream});
}

void Communicator::fused_allreduce_residual_rmsnorm(const Buffers& b, std::size_t tokens, std::size_t hidden,
                                                    tpcoll_dtype_t dtype, float eps, void* stream) {
  const OpGuard guard(*this);
  require_usable(stream);
  const Call call = validate_rmsnorm(TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM,
                                     RmsNormBuffers{b.in, b.residual, b.weight, b.out, b.residual_out}, tokens, hidden,
                                     dtype, eps);
  Buffers with_stream = b;
  with_stream.stream = stream;
  run_fused(call, with_stream);
}

void Communicator::run_fused(const Call& call, const Buffers& b) {
  const Plan plan = plan_call(call);
  if (!on_gpu() || (cuda_ != nullptr && cuda_->fused_fits(call, plan.algo, b))) {
    run(call, plan, b);
    return;
  }
  // On the GPU without a fused kernel for this call: the all-reduce (ours, or
  // NCCL's as the fallback; none at one rank), then our add + RMSNorm on its
  // result, which gives the same bits.
  const void* x = b.in;
  if (world_ > 1) {
    Call reduce = call;
    reduce.op = TPCOLL_OP_ALL_REDUCE;
    run(reduce, plan_leading_all_reduce(reduce, plan), Buffers{b.in, b.out, nullptr, nullptr, nullptr, b.stream});
    x = b.out;
  }
  cuda::add_rmsnorm(device_, cuda_norm_launch_, call.dtype,
                    RmsNormRows{x, b.residual, b.weight, b.out, b.residual_out, call.rows(), call.hidden(), call.eps},
                    b.stream);
}

// On the GPU the kernel that ends the fused op quantises the rows it holds
// (the one-shot fused kernel, or the add + RMSNorm kernel after our
// all-reduce); only the fused two-shot is followed by the quantisation
// kernel. Where out is NULL, only a path that stages the reduced rows (our
// all-reduce, the two-shot) takes scratch rows for them (cuda::ScratchRows:
// the communicator's block, or for calls too large for it an allocation).
void Communicator::run_fused_fp8_on_gpu(const Call& call, const Buffers& b) {
  const Plan plan = plan_call(call);
  const std::size_t scratch_bytes = b.out == nullptr ? call.bytes : 0;
  if (cuda_ != nullptr && cuda_->fused_fits(call, plan.algo, b)) {
    if (plan.algo == TPCOLL_ALGO_ONESHOT) return run(call, plan, b);
    cuda::ScratchRows scratch(*fp8_scratch_, scratch_bytes, b.stream);
    Buffers unquantised = b;
    unquantised.fp8 = {};
    if (b.out == nullptr) {
      unquantised.out = scratch.data();
      unquantised.out_is_scratch = true;
    }
    run(call, plan, unquantised);
    cuda::quantise_fp8(device_, cuda_norm_launch_, call.dtype, unquantised.out, call.rows(), call.hidden(), b.fp8,
                       b.stream);
    return;
  }
  const void* x = b.in;
  cuda::ScratchRows scratch(*fp8_scratch_, world_ > 1 ? scratch_bytes : 0, b.stream);
  if (world_ > 1) {
    Call reduce = call;
    reduce.op = TPCOLL_OP_ALL_REDUCE;
    Buffers reduced{b.in, b.out, nullptr, nullptr, nullptr, b.stream};
    if (b.out == nullptr) {
      reduced.out = scratch.data();
      reduced.out_is_scratch = true;
    }
    run(reduce, plan_leading_all_reduce(reduce, plan), reduced);
    x = reduced.out;
  }
  cuda::add_rmsnorm(device_, cuda_norm_launch_, call.dtype,
                    RmsNormRows{x, b.residual, b.weight, b.out, b.residual_out, call.rows(), call.hidden(), call.eps,
                                b.fp8},
                    b.stream, /*x_is_scratch=*/world_ > 1 && b.out == nullptr);
}

// On the CPU: the fused op into out (or a scratch block when the caller
// wants none), then the quantisation of what it wrote. Either way the result
// is by construction the fused op followed by the quantisation; the backends
// see the fused op itself, so every algorithm serves the FP8 op and the ranks
// check the same signature.
void Communicator::fused_allreduce_residual_rmsnorm_fp8(const Buffers& b, const fp8::Fp8Output& fp8,
                                                        std::size_t tokens, std::size_t hidden, tpcoll_dtype_t dtype,
                                                        float eps, void* stream) {
  const OpGuard guard(*this);
  require_usable(stream);
  Call call = validate_rmsnorm(TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM_FP8,
                               RmsNormBuffers{b.in, b.residual, b.weight, b.out, b.residual_out}, tokens, hidden,
                               dtype, eps);
  validate_fp8_output(fp8);
  call.op = TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM;
  Buffers with_out = b;
  with_out.stream = stream;
  if (on_gpu()) {
    with_out.fp8 = fp8;
    return run_fused_fp8_on_gpu(call, with_out);
  }
  if (b.out == nullptr) {
    fp8_out_scratch_.resize(call.bytes);
    with_out.out = fp8_out_scratch_.data();
  }
  run_fused(call, with_out);
  cpu::quantise_fp8(dtype, with_out.out, tokens, hidden, fp8);
}

void Communicator::reduce_scatter(const void* in, void* out, std::size_t count, tpcoll_dtype_t dtype, void* stream) {
  const OpGuard guard(*this);
  require_usable(stream);
  const Call call = validate_reduce_scatter(in, out, count, dtype);
  require_equal_shares(call, world_);
  require_share_placement(call, in, out, world_, rank_);
  run(call, plan_call(call), Buffers{in, out, nullptr, nullptr, nullptr, stream});
}

void Communicator::fused_reduce_scatter_residual_rmsnorm(const Buffers& b, std::size_t tokens, std::size_t hidden,
                                                         tpcoll_dtype_t dtype, float eps, void* stream) {
  const OpGuard guard(*this);
  require_usable(stream);
  const Call call = validate_rmsnorm(TPCOLL_OP_FUSED_REDUCE_SCATTER_RMSNORM,
                                     RmsNormBuffers{b.in, b.residual, b.weight, b.out, b.residual_out}, tokens, hidden,
                                     dtype, eps);
  require_equal_shares(call, world_);
  require_share_placement(call, b.in, b.out, world_, rank_);
  Buffers with_stream = b;
  with_stream.stream = stream;
  if (!on_gpu()) {
    run(call, plan_call(call), with_stream);
    return;
  }
  // On the GPU: the reduce-scatter (ours, or NCCL's as the fallback), then
  // our add + RMSNorm on the share, which gives the full fused op's bits.
  Call reduce = call;
  reduce.op = TPCOLL_OP_REDUCE_SCATTER;
  reduce.has_residual = false;
  reduce.eps = 0.0f;
  run(reduce, plan_call(reduce), Buffers{b.in, b.out, nullptr, nullptr, nullptr, stream});
  cuda::add_rmsnorm(device_, cuda_norm_launch_, dtype,
                    RmsNormRows{b.out, b.residual, b.weight, b.out, b.residual_out, tokens / world_, hidden, eps}, stream);
}

void Communicator::add_rmsnorm(const Buffers& b, std::size_t tokens, std::size_t hidden, tpcoll_dtype_t dtype,
                               float eps, void* stream) {
  require_usable(stream);
  validate_rmsnorm(TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM, RmsNormBuffers{b.in, b.residual, b.weight, b.out, b.residual_out},
                   tokens, hidden, dtype, eps);
  if (on_gpu())
    cuda::add_rmsnorm(device_, cuda_norm_launch_, dtype,
                      RmsNormRows{b.in, b.residual, b.weight, b.out, b.residual_out, tokens, hidden, eps}, stream);
  else
    cpu::add_rmsnorm(dtype, RmsNormRows{b.in, b.residual, b.weight, b.out, b.residual_out, tokens, hidden, eps});
}

Plan Communicator::plan(tpcoll_op_t op, tpcoll_dtype_t dtype, int ndim, const std::int64_t* shape, int dim) const {
  const Call call = validate_plan_request(op, dtype, ndim, shape, dim);
  if (is_scatter(op)) require_equal_shares(call, world_);
  return make_plan(call, context_, /*explain=*/true);
}

void Communicator::raise_async_error() const {
  // Both engines of a CUDA communicator enqueue work whose errors come late
  // (NCCL's through ncclCommGetAsyncError).
  if (fast_) fast_->raise_async_error();
  if (fallback_) fallback_->raise_async_error();
}

void Communicator::abort() {
  aborted_.store(true, std::memory_order_release);
  log(LogLevel::kWarn, "abort", "rank {}: aborting the communicator", rank_);
  // Both engines even if the first fails: a CUDA error must not leave NCCL's
  // work waiting.
  std::exception_ptr first;
  for (Backend* backend : {fast_.get(), fallback_.get()}) {
    if (backend == nullptr) continue;
    try {
      backend->abort();
    } catch (const Error&) {
      if (!first) first = std::current_exception();
    }
  }
  if (first) std::rethrow_exception(first);
}

void Communicator::force_algo(std::optional<tpcoll_algo_t> algo) { context_.forced = algo ? algo : env_forced_; }

}  // namespace tpcoll::core
