/*
 * tpcoll: custom collectives for tensor-parallel inference on one host.
 *
 * The C API. Every function returns a tpcoll_result_t; on failure the calling
 * thread's tpcoll_last_error() holds a message naming the problem. No call
 * that fails touches the caller's output buffers.
 *
 * Threading: a communicator is used by one thread at a time (only
 * tpcoll_comm_abort may come from another thread); an operation called while
 * another thread is inside one on the same communicator fails with
 * TPCOLL_INVALID_ARGUMENT. Every rank of a communicator must issue the same
 * operations, with the same arguments apart from the buffers, in the same
 * order (as with NCCL).
 *
 * Streams: a CUDA communicator's operations may come on any number of
 * streams; each rank's run in the order it issued them (an operation on
 * another stream than the previous one waits for that stream's work), and the
 * stream of the previous operation must still exist. Under CUDA graph capture
 * the same holds within one capture; captured operations run when their
 * graph is replayed, which the caller orders like any captured work. An eager
 * operation issued while the previous operation's stream is being captured
 * fails with TPCOLL_INVALID_ARGUMENT (CUDA cannot order the two). Creating a
 * communicator during capture fails with TPCOLL_INVALID_ARGUMENT; one created
 * before may have its very first operation captured.
 *
 * Programmatic dependent launch (sm_90 and newer): tpcoll's kernels let the
 * next kernel of their stream start launching before they end, once each of
 * their blocks has its peers' data and has written its part of the output.
 * A kernel launched with cudaLaunchAttributeProgrammaticStreamSerialization
 * after an operation must call cudaGridDependencySynchronize() (griddepcontrol.wait) before it
 * reads the operation's outputs: that call returns once the operation's
 * kernels have completed and their writes are visible, so it never sees a
 * stale or partial output. Reads before that call, or ordered only by a
 * programmatic event (cudaLaunchAttributeProgrammaticEvent), may. tpcoll's
 * own kernels wait so whether or not TPCOLL_CUDA_EARLY_LAUNCH launches them
 * early.
 */
#ifndef TPCOLL_TPCOLL_H
#define TPCOLL_TPCOLL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define TPCOLL_API __attribute__((visibility("default")))
#else
#define TPCOLL_API
#endif

#define TPCOLL_VERSION_MAJOR 0
#define TPCOLL_VERSION_MINOR 1
#define TPCOLL_VERSION_PATCH 0

/* Largest world size of a communicator. */
#define TPCOLL_MAX_RANKS 64

/* Largest tensor rank accepted by tpcoll_all_gather and tpcoll_plan. */
#define TPCOLL_MAX_DIMS 8

/* tpcoll_comm_config_t.device value that selects the CPU shared-memory backend. */
#define TPCOLL_DEVICE_CPU (-1)

typedef enum tpcoll_result {
  TPCOLL_SUCCESS = 0,
  TPCOLL_INVALID_ARGUMENT = 1, /* a bad pointer, count, dtype, dim, shape or alignment */
  TPCOLL_UNSUPPORTED = 2,      /* valid request this build or machine cannot serve */
  TPCOLL_TIMEOUT = 3,          /* a peer did not arrive within the timeout */
  TPCOLL_MISMATCH = 4,         /* ranks called different operations or shapes */
  TPCOLL_BOOTSTRAP_ERROR = 5,  /* rendezvous failed: bad message, wrong job, dead peer */
  TPCOLL_SYSTEM_ERROR = 6,     /* an operating-system call failed */
  TPCOLL_CUDA_ERROR = 7,       /* a CUDA runtime call failed */
  TPCOLL_INTERNAL_ERROR = 8,   /* a bug in tpcoll: please report it */
  TPCOLL_ABORTED = 9           /* tpcoll_comm_abort was called on this or another rank */
} tpcoll_result_t;

typedef enum tpcoll_dtype {
  TPCOLL_FLOAT32 = 0,
  TPCOLL_FLOAT16 = 1,
  TPCOLL_BFLOAT16 = 2,
  TPCOLL_FLOAT64 = 3,
  TPCOLL_FLOAT8_E4M3 = 4,
  TPCOLL_FLOAT8_E5M2 = 5,
  TPCOLL_INT8 = 6,
  TPCOLL_UINT8 = 7,
  TPCOLL_INT32 = 8,
  TPCOLL_INT64 = 9
} tpcoll_dtype_t;

typedef enum tpcoll_op {
  TPCOLL_OP_ALL_REDUCE = 0,
  TPCOLL_OP_ALL_GATHER = 1,
  TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM = 2,
  TPCOLL_OP_REDUCE_SCATTER = 3,
  TPCOLL_OP_FUSED_REDUCE_SCATTER_RMSNORM = 4,
  TPCOLL_OP_FUSED_ALLREDUCE_RMSNORM_FP8 = 5 /* planned as the fused op: same data movement */
} tpcoll_op_t;

/* How tpcoll_fused_allreduce_residual_rmsnorm_fp8 scales its output. */
typedef enum tpcoll_fp8_scaling {
  TPCOLL_FP8_STATIC = 0,   /* one scale for the tensor, given by the caller */
  TPCOLL_FP8_PER_TOKEN = 1 /* one scale per row, max|row| / 448, returned */
} tpcoll_fp8_scaling_t;

typedef enum tpcoll_algo {
  TPCOLL_ALGO_ONESHOT = 0,  /* every rank reads every peer's input and reduces all of it;
                               reduce-scatter: every rank receives its share from every peer */
  TPCOLL_ALGO_TWOSHOT = 1,  /* every rank reduces its share, then the shares are gathered */
  TPCOLL_ALGO_UNFUSED = 2,  /* fused ops only: our all-reduce (reduce-scatter), then our add + RMSNorm */
  TPCOLL_ALGO_FALLBACK = 3  /* the always-available engine (bootstrap exchange on CPU) */
} tpcoll_algo_t;

typedef struct tpcoll_comm* tpcoll_comm_t;

/*
 * A user-supplied all-gather of bytes, for frameworks that already have a
 * process group: gathers bytes_per_rank bytes from every rank into recv in
 * rank order. Returns 0 on success. Called only during tpcoll_comm_create and
 * by the fallback algorithm; every rank calls it the same number of times.
 */
typedef int (*tpcoll_allgather_fn)(const void* send, void* recv, size_t bytes_per_rank,
                                   void* user_data);

typedef struct tpcoll_comm_config {
  int rank;              /* 0 .. world_size-1 */
  int world_size;        /* 1 .. TPCOLL_MAX_RANKS */
  int device;            /* TPCOLL_DEVICE_CPU, or a CUDA device ordinal */
  const char* job_id;    /* rendezvous key shared by the ranks (socket bootstrap) */
  tpcoll_allgather_fn allgather; /* if set, used instead of the socket bootstrap */
  void* allgather_user_data;
} tpcoll_comm_config_t;

/* What tpcoll_plan says about one call. */
typedef struct tpcoll_plan_info {
  tpcoll_algo_t algo;
  char backend[16];    /* "cpu-shm", "cpu-fallback", ... */
  char algorithm[16];  /* "oneshot", "twoshot", "unfused", "fallback" */
  size_t chunk_bytes;  /* per-rank bytes moved per step through the staging buffers */
  size_t steps;        /* number of chunks */
  char reason[256];    /* why this algorithm, in words */
} tpcoll_plan_info_t;

/* ---- errors ---- */
TPCOLL_API const char* tpcoll_result_string(tpcoll_result_t result);
/* Message of the last failed call on this thread ("" if none). */
TPCOLL_API const char* tpcoll_last_error(void);

/* ---- dtypes ---- */
TPCOLL_API size_t tpcoll_dtype_size(tpcoll_dtype_t dtype); /* 0 for an unknown dtype */
TPCOLL_API const char* tpcoll_dtype_name(tpcoll_dtype_t dtype);

/* ---- communicator ---- */
/*
 * Fills config from the environment the launcher sets (TPCOLL_RANK,
 * TPCOLL_WORLD_SIZE, TPCOLL_JOB; absent: rank 0 of 1). The device is
 * TPCOLL_DEVICE: an ordinal, "auto" (TPCOLL_LOCAL_RANK modulo the GPU count),
 * or, when unset, the CPU.
 */
TPCOLL_API tpcoll_result_t tpcoll_comm_config_from_env(tpcoll_comm_config_t* config);
/* Collective over the ranks of config: every rank must call it. A CUDA
 * communicator's streams must be idle (synchronised) when it is destroyed. */
TPCOLL_API tpcoll_result_t tpcoll_comm_create(const tpcoll_comm_config_t* config, tpcoll_comm_t* comm);
/*
 * Creates all `world` ranks of a communicator in this process, rank r on
 * devices[r]: CUDA ordinals, which may repeat (ranks may share a GPU), or all
 * TPCOLL_DEVICE_CPU. Each GPU rank is then driven with its own stream, for
 * example all from one thread. No job id or launcher is needed.
 */
TPCOLL_API tpcoll_result_t tpcoll_comm_create_local(int world, const int* devices, tpcoll_comm_t* comms);
TPCOLL_API tpcoll_result_t tpcoll_comm_destroy(tpcoll_comm_t comm);
/*
 * An error that enqueued GPU work reported after its call returned (a peer
 * timed out or ran a different call; NCCL's own errors on the NCCL path),
 * like ncclCommGetAsyncError: *result is
 * TPCOLL_SUCCESS if none, else the error, whose message tpcoll_last_error()
 * then holds. Such an error also fails every later call on the communicator.
 */
TPCOLL_API tpcoll_result_t tpcoll_comm_get_async_error(tpcoll_comm_t comm, tpcoll_result_t* result);
/*
 * Stops the communicator on every rank, for a rank that gives up (a request
 * cancelled, a watchdog): the one call that may come from another thread
 * while an operation runs. On the CPU backend every rank's operation that
 * waits for a peer, now or later, fails within milliseconds with
 * TPCOLL_ABORTED naming the rank that aborted (an op on the fallback path
 * fails as its connections close); every later call on the communicator
 * fails; only tpcoll_comm_destroy remains, once the in-flight call returned.
 * On a CUDA communicator every rank's tpcoll kernel that waits for a peer,
 * now or later, stops within microseconds and reports TPCOLL_ABORTED through
 * tpcoll_comm_get_async_error. On the NCCL path this rank's NCCL
 * communicator is aborted (ncclCommAbort): its NCCL work stops, an op waiting
 * for NCCL fails with TPCOLL_ABORTED, and tpcoll_comm_get_async_error reports
 * TPCOLL_ABORTED (work enqueued before may not have run); the peers' NCCL
 * work waits until they abort too, as NCCL cannot reach it from here.
 */
TPCOLL_API tpcoll_result_t tpcoll_comm_abort(tpcoll_comm_t comm);
TPCOLL_API tpcoll_result_t tpcoll_comm_rank(tpcoll_comm_t comm, int* rank);
TPCOLL_API tpcoll_result_t tpcoll_comm_world_size(tpcoll_comm_t comm, int* world_size);

/* ---- operations ----
 * stream: a cudaStream_t for a CUDA communicator (NULL = default stream); must
 * be NULL for a CPU communicator, whose operations are synchronous.
 */

/* out[i] = sum over ranks 0..n-1 of in[i], fp32 accumulation; in == out allowed.
 * dtype: float32, float16, bfloat16. */
TPCOLL_API tpcoll_result_t tpcoll_all_reduce(tpcoll_comm_t comm, const void* in, void* out, size_t count,
                                  tpcoll_dtype_t dtype, void* stream);

/* out = concatenation along dim, in rank order, of every rank's contiguous
 * input of the given shape (so out's shape is shape with shape[dim] * n).
 * Every dtype. */
TPCOLL_API tpcoll_result_t tpcoll_all_gather(tpcoll_comm_t comm, const void* in, void* out,
                                  tpcoll_dtype_t dtype, int ndim, const int64_t* shape, int dim,
                                  void* stream);

/*
 * Per row of [tokens, hidden]:
 *   s = allreduce(x) + residual      (rounded to dtype; residual may be NULL)
 *   residual_out = s                 (skipped when residual is NULL)
 *   out = s * rsqrt(mean(s^2) + eps) * weight
 * fp32 accumulation; the result equals, bit for bit, tpcoll_all_reduce
 * followed by tpcoll_add_rmsnorm. residual and weight must be identical on
 * every rank (as in tensor parallelism). residual_out may alias residual, out
 * may alias x.
 */
TPCOLL_API tpcoll_result_t tpcoll_fused_allreduce_residual_rmsnorm(
    tpcoll_comm_t comm, const void* x, const void* residual, const void* weight, void* out,
    void* residual_out, size_t tokens, size_t hidden, tpcoll_dtype_t dtype, float eps,
    void* stream);

/*
 * The fused op above with an FP8 E4M3 (OCP E4M3FN) output for the next GEMM.
 * `out` is what tpcoll_fused_allreduce_residual_rmsnorm writes (rounded to
 * dtype); it is written too unless NULL. Then, per element, in fp32:
 *   TPCOLL_FP8_STATIC:    out_fp8 = e4m3(out / static_scale)
 *   TPCOLL_FP8_PER_TOKEN: row_scales[t] = max|out[t, :]| / 448,
 *                         out_fp8 = e4m3(out / row_scales[t])
 * with a correctly rounded division and e4m3() rounding to nearest even,
 * saturating at +-448 (infinities too), NaN to 0x7f: bit for bit the fused op
 * followed by that quantisation. static_scale is a host float (a kernel
 * argument, so a captured graph keeps the value it was captured with); it
 * must be positive and finite. row_scales: [tokens] fp32 in the
 * communicator's memory (device memory for CUDA), ignored for static
 * scaling. The row maximum ignores NaN; a row whose maximum is 0 gets scale 0
 * and is divided by 1 (its codes are +-0), never by zero. out_fp8 is
 * [tokens, hidden] bytes; it must not alias the other buffers. On CUDA the
 * kernel that ends the op quantises (no extra pass) except after the fused
 * two-shot; with out NULL, a call that reduces through our all-reduce or the
 * two-shot stages its rows in a block the communicator holds from creation
 * (TPCOLL_CUDA_BUFFER_BYTES large), or, for a larger call, allocates them in
 * stream order (cudaMallocAsync, graph-safe).
 */
TPCOLL_API tpcoll_result_t tpcoll_fused_allreduce_residual_rmsnorm_fp8(
    tpcoll_comm_t comm, const void* x, const void* residual, const void* weight, void* out,
    void* residual_out, void* out_fp8, tpcoll_fp8_scaling_t scaling, float static_scale,
    float* row_scales, size_t tokens, size_t hidden, tpcoll_dtype_t dtype, float eps, void* stream);

/*
 * out = this rank's share of the sum over ranks 0..n-1 of in: elements
 * [rank * count / n, (rank + 1) * count / n) of what tpcoll_all_reduce would
 * give, bit for bit (same order, fp32 accumulation, one rounding). count is
 * the element count of the whole input and must be a multiple of n; out holds
 * count / n elements. In place: out == in + rank * count / n; any other
 * overlap of out with in is refused. dtype: float32, float16, bfloat16.
 */
TPCOLL_API tpcoll_result_t tpcoll_reduce_scatter(tpcoll_comm_t comm, const void* in, void* out, size_t count,
                                      tpcoll_dtype_t dtype, void* stream);

/*
 * The fused op on this rank's share of the rows: x is [tokens, hidden] on
 * every rank (tokens a multiple of n); rank r takes rows
 * [r * tokens / n, (r + 1) * tokens / n):
 *   s = reduce_scatter(x) + residual (rounded; residual may be NULL)
 *   residual_out = s                 (skipped when residual is NULL)
 *   out = s * rsqrt(mean(s^2) + eps) * weight
 * residual, residual_out and out are [tokens / n, hidden]; weight is
 * [hidden]. Equal, bit for bit, to those rows of
 * tpcoll_fused_allreduce_residual_rmsnorm. residual_out may alias residual;
 * out may be x's share in place (x + rank * tokens / n rows).
 */
TPCOLL_API tpcoll_result_t tpcoll_fused_reduce_scatter_residual_rmsnorm(
    tpcoll_comm_t comm, const void* x, const void* residual, const void* weight, void* out,
    void* residual_out, size_t tokens, size_t hidden, tpcoll_dtype_t dtype, float eps,
    void* stream);

/* The local, unfused half of the fused op (no communication):
 * s = x + residual -> residual_out; out = rmsnorm(s) * weight. Same rounding. */
TPCOLL_API tpcoll_result_t tpcoll_add_rmsnorm(tpcoll_comm_t comm, const void* x, const void* residual,
                                   const void* weight, void* out, void* residual_out,
                                   size_t tokens, size_t hidden, tpcoll_dtype_t dtype, float eps,
                                   void* stream);

/*
 * Forces one algorithm for every later call that can use it (benchmarks and
 * tests; TPCOLL_ALGO does the same from the environment). Every rank must
 * force the same algorithm: ranks that disagree get an error, not a hang
 * (TPCOLL_MISMATCH where both algorithms share a transport, otherwise
 * TPCOLL_TIMEOUT after TPCOLL_TIMEOUT_MS, and the communicator is unusable).
 * TPCOLL_ALGO_AUTO restores the default: TPCOLL_ALGO if set, else the
 * measured choice.
 */
#define TPCOLL_ALGO_AUTO (-1)
TPCOLL_API tpcoll_result_t tpcoll_comm_force_algo(tpcoll_comm_t comm, int algo);

/*
 * Which algorithm a call would use and why. shape: all-reduce and
 * reduce-scatter [count] (the whole input), all-gather the input shape (with
 * dim), fused ops [tokens, hidden] (the whole x).
 */
TPCOLL_API tpcoll_result_t tpcoll_plan(tpcoll_comm_t comm, tpcoll_op_t op, tpcoll_dtype_t dtype, int ndim,
                            const int64_t* shape, int dim, tpcoll_plan_info_t* plan);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* TPCOLL_TPCOLL_H */
