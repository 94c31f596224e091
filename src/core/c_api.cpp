// The C boundary: every entry point catches everything, so no exception
// crosses it, and leaves its message in the thread's last-error slot.
#include <tpcoll/tpcoll.h>

#include "bootstrap/bootstrap.hpp"
#include "core/communicator.hpp"
#include "core/config.hpp"
#include "core/dtype.hpp"
#include "cuda/capture_guard.hpp"
#include "cuda/cuda_backend.hpp"
#include "core/error.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <new>
#include <string>
#include <thread>
#include <vector>

struct tpcoll_comm {
  tpcoll::core::Communicator impl;
};

namespace {

thread_local std::string t_last_error;

template <typename Fn>
tpcoll_result_t guarded(Fn&& fn) {
  try {
    fn();
    return TPCOLL_SUCCESS;
  } catch (const tpcoll::Error& e) {
    t_last_error = e.what();
    return e.code();
  } catch (const std::bad_alloc&) {
    t_last_error = "out of host memory";
    return TPCOLL_SYSTEM_ERROR;
  } catch (const std::exception& e) {
    t_last_error = std::string("internal error: ") + e.what();
    return TPCOLL_INTERNAL_ERROR;
  } catch (...) {
    t_last_error = "internal error: unknown exception";
    return TPCOLL_INTERNAL_ERROR;
  }
}

tpcoll::core::Communicator& comm_of(tpcoll_comm_t comm) {
  if (comm == nullptr) tpcoll::fail(TPCOLL_INVALID_ARGUMENT, "comm is NULL");
  return comm->impl;
}

template <std::size_t N>
void copy_text(char (&dst)[N], const std::string& src) {
  const std::size_t n = std::min(N - 1, src.size());
  std::memcpy(dst, src.data(), n);
  dst[n] = '\0';
}

}  // namespace

extern "C" {

const char* tpcoll_result_string(tpcoll_result_t result) {
  switch (result) {
    case TPCOLL_SUCCESS: return "success";
    case TPCOLL_INVALID_ARGUMENT: return "invalid argument";
    case TPCOLL_UNSUPPORTED: return "unsupported";
    case TPCOLL_TIMEOUT: return "timeout";
    case TPCOLL_MISMATCH: return "ranks mismatch";
    case TPCOLL_BOOTSTRAP_ERROR: return "bootstrap error";
    case TPCOLL_SYSTEM_ERROR: return "system error";
    case TPCOLL_CUDA_ERROR: return "CUDA error";
    case TPCOLL_INTERNAL_ERROR: return "internal error";
    case TPCOLL_ABORTED: return "aborted";
  }
  return "unknown result code";
}

const char* tpcoll_last_error(void) { return t_last_error.c_str(); }

size_t tpcoll_dtype_size(tpcoll_dtype_t dtype) { return tpcoll::dtype_size(dtype); }
const char* tpcoll_dtype_name(tpcoll_dtype_t dtype) { return tpcoll::dtype_name(dtype); }

tpcoll_result_t tpcoll_comm_config_from_env(tpcoll_comm_config_t* config) {
  return guarded([&] {
    if (config == nullptr) tpcoll::fail(TPCOLL_INVALID_ARGUMENT, "config is NULL");
    // The job string must outlive the call: it is the process environment's.
    const char* job = std::getenv(tpcoll::env::kJob.name);
    *config = tpcoll_comm_config_t{};
    const std::int64_t rank = tpcoll::env::kRank.as_int();
    const std::int64_t world = tpcoll::env::kWorldSize.as_int();
    if (world < 1 || world > TPCOLL_MAX_RANKS)
      tpcoll::fail(TPCOLL_INVALID_ARGUMENT, "TPCOLL_WORLD_SIZE={} is outside 1..{}", world, TPCOLL_MAX_RANKS);
    if (rank < 0 || rank >= world)
      tpcoll::fail(TPCOLL_INVALID_ARGUMENT, "TPCOLL_RANK={} is outside 0..{}", rank, world - 1);
    config->rank = static_cast<int>(rank);
    config->world_size = static_cast<int>(world);
    config->device = tpcoll::cuda::device_from_env();
    config->job_id = job ? job : "";
  });
}

tpcoll_result_t tpcoll_comm_create(const tpcoll_comm_config_t* config, tpcoll_comm_t* comm) {
  return guarded([&] {
    if (config == nullptr) tpcoll::fail(TPCOLL_INVALID_ARGUMENT, "config is NULL");
    if (comm == nullptr) tpcoll::fail(TPCOLL_INVALID_ARGUMENT, "comm is NULL");
    *comm = new tpcoll_comm{tpcoll::core::Communicator(*config)};
  });
}

tpcoll_result_t tpcoll_comm_create_local(int world, const int* devices, tpcoll_comm_t* comms) {
  return guarded([&] {
    if (world < 1 || world > TPCOLL_MAX_RANKS)
      tpcoll::fail(TPCOLL_INVALID_ARGUMENT, "world {} is outside 1..{}", world, TPCOLL_MAX_RANKS);
    if (devices == nullptr) tpcoll::fail(TPCOLL_INVALID_ARGUMENT, "devices is NULL");
    if (comms == nullptr) tpcoll::fail(TPCOLL_INVALID_ARGUMENT, "comms is NULL");
    for (int r = 1; r < world; ++r)
      if ((devices[r] == TPCOLL_DEVICE_CPU) != (devices[0] == TPCOLL_DEVICE_CPU))
        tpcoll::fail(TPCOLL_INVALID_ARGUMENT, "devices mixes CPU and GPU ranks (rank 0: {}, rank {}: {})", devices[0],
                     r, devices[r]);
    // The ranks are created by threads of their own, which a capture in
    // thread-local mode does not cover: check in the caller's thread.
    if (devices[0] != TPCOLL_DEVICE_CPU) tpcoll::cuda::refuse_creation_during_capture(devices[0]);
    // Creation is collective, so each rank is created by its own thread.
    tpcoll::LocalBootstraps group =
        tpcoll::make_local_bootstraps(world, tpcoll::env::kBootstrapTimeoutMs.as_int());
    std::vector<tpcoll_comm_t> made(world, nullptr);
    std::vector<std::exception_ptr> errors(world);
    std::atomic<int> first_failure{-1};  // the root cause; the others were aborted by it
    std::vector<std::thread> threads;
    for (int r = 0; r < world; ++r)
      threads.emplace_back([&, r] {
        try {
          tpcoll_comm_config_t config{r, world, devices[r], "local", nullptr, nullptr};
          made[r] = new tpcoll_comm{tpcoll::core::Communicator(config, std::move(group.ranks[r]))};
        } catch (const std::exception& e) {
          errors[r] = std::current_exception();
          int none = -1;
          first_failure.compare_exchange_strong(none, r);
          group.abort(e.what());
        }
      });
    for (auto& t : threads) t.join();
    if (const int failed = first_failure.load(); failed >= 0) {
      for (tpcoll_comm_t c : made) delete c;
      std::rethrow_exception(errors[failed]);
    }
    std::copy(made.begin(), made.end(), comms);
  });
}

tpcoll_result_t tpcoll_comm_destroy(tpcoll_comm_t comm) {
  return guarded([&] { delete comm; });
}

tpcoll_result_t tpcoll_comm_get_async_error(tpcoll_comm_t comm, tpcoll_result_t* result) {
  return guarded([&] {
    if (result == nullptr) tpcoll::fail(TPCOLL_INVALID_ARGUMENT, "result is NULL");
    *result = TPCOLL_SUCCESS;
    try {
      comm_of(comm).raise_async_error();
    } catch (const tpcoll::Error& e) {
      t_last_error = e.what();
      *result = e.code();
    }
  });
}

tpcoll_result_t tpcoll_comm_abort(tpcoll_comm_t comm) {
  return guarded([&] { comm_of(comm).abort(); });
}

tpcoll_result_t tpcoll_comm_rank(tpcoll_comm_t comm, int* rank) {
  return guarded([&] {
    if (rank == nullptr) tpcoll::fail(TPCOLL_INVALID_ARGUMENT, "rank is NULL");
    *rank = comm_of(comm).rank();
  });
}

tpcoll_result_t tpcoll_comm_world_size(tpcoll_comm_t comm, int* world_size) {
  return guarded([&] {
    if (world_size == nullptr) tpcoll::fail(TPCOLL_INVALID_ARGUMENT, "world_size is NULL");
    *world_size = comm_of(comm).world_size();
  });
}

tpcoll_result_t tpcoll_comm_force_algo(tpcoll_comm_t comm, int algo) {
  return guarded([&] {
    if (algo == TPCOLL_ALGO_AUTO) return comm_of(comm).force_algo(std::nullopt);
    if (algo < TPCOLL_ALGO_ONESHOT || algo > TPCOLL_ALGO_FALLBACK)
      tpcoll::fail(TPCOLL_INVALID_ARGUMENT, "algo {} is not a tpcoll_algo_t or TPCOLL_ALGO_AUTO", algo);
    comm_of(comm).force_algo(static_cast<tpcoll_algo_t>(algo));
  });
}

tpcoll_result_t tpcoll_all_reduce(tpcoll_comm_t comm, const void* in, void* out, size_t count, tpcoll_dtype_t dtype,
                                  void* stream) {
  return guarded([&] { comm_of(comm).all_reduce(in, out, count, dtype, stream); });
}

tpcoll_result_t tpcoll_all_gather(tpcoll_comm_t comm, const void* in, void* out, tpcoll_dtype_t dtype, int ndim,
                                  const int64_t* shape, int dim, void* stream) {
  return guarded([&] { comm_of(comm).all_gather(in, out, dtype, ndim, shape, dim, stream); });
}

tpcoll_result_t tpcoll_fused_allreduce_residual_rmsnorm(tpcoll_comm_t comm, const void* x, const void* residual,
                                                        const void* weight, void* out, void* residual_out,
                                                        size_t tokens, size_t hidden, tpcoll_dtype_t dtype, float eps,
                                                        void* stream) {
  return guarded([&] {
    comm_of(comm).fused_allreduce_residual_rmsnorm(tpcoll::Buffers{x, out, residual, weight, residual_out}, tokens,
                                                   hidden, dtype, eps, stream);
  });
}

tpcoll_result_t tpcoll_fused_allreduce_residual_rmsnorm_fp8(tpcoll_comm_t comm, const void* x, const void* residual,
                                                            const void* weight, void* out, void* residual_out,
                                                            void* out_fp8, tpcoll_fp8_scaling_t scaling,
                                                            float static_scale, float* row_scales, size_t tokens,
                                                            size_t hidden, tpcoll_dtype_t dtype, float eps,
                                                            void* stream) {
  return guarded([&] {
    comm_of(comm).fused_allreduce_residual_rmsnorm_fp8(
        tpcoll::Buffers{x, out, residual, weight, residual_out},
        tpcoll::fp8::Fp8Output{out_fp8, row_scales, scaling, static_scale}, tokens, hidden, dtype, eps, stream);
  });
}

tpcoll_result_t tpcoll_reduce_scatter(tpcoll_comm_t comm, const void* in, void* out, size_t count,
                                      tpcoll_dtype_t dtype, void* stream) {
  return guarded([&] { comm_of(comm).reduce_scatter(in, out, count, dtype, stream); });
}

tpcoll_result_t tpcoll_fused_reduce_scatter_residual_rmsnorm(tpcoll_comm_t comm, const void* x, const void* residual,
                                                             const void* weight, void* out, void* residual_out,
                                                             size_t tokens, size_t hidden, tpcoll_dtype_t dtype,
                                                             float eps, void* stream) {
  return guarded([&] {
    comm_of(comm).fused_reduce_scatter_residual_rmsnorm(tpcoll::Buffers{x, out, residual, weight, residual_out},
                                                        tokens, hidden, dtype, eps, stream);
  });
}

tpcoll_result_t tpcoll_add_rmsnorm(tpcoll_comm_t comm, const void* x, const void* residual, const void* weight,
                                   void* out, void* residual_out, size_t tokens, size_t hidden, tpcoll_dtype_t dtype,
                                   float eps, void* stream) {
  return guarded([&] {
    comm_of(comm).add_rmsnorm(tpcoll::Buffers{x, out, residual, weight, residual_out}, tokens, hidden, dtype, eps,
                              stream);
  });
}

tpcoll_result_t tpcoll_plan(tpcoll_comm_t comm, tpcoll_op_t op, tpcoll_dtype_t dtype, int ndim, const int64_t* shape,
                            int dim, tpcoll_plan_info_t* info) {
  return guarded([&] {
    if (info == nullptr) tpcoll::fail(TPCOLL_INVALID_ARGUMENT, "plan is NULL");
    const tpcoll::Plan plan = comm_of(comm).plan(op, dtype, ndim, shape, dim);
    *info = tpcoll_plan_info_t{};
    info->algo = plan.algo;
    copy_text(info->backend, plan.backend);
    copy_text(info->algorithm, tpcoll::algo_name(plan.algo));
    info->chunk_bytes = plan.chunk_bytes;
    info->steps = plan.steps;
    copy_text(info->reason, plan.reason);
  });
}

}  // extern "C"
