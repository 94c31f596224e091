#!/usr/bin/env bash
# The GPU check: builds (unless BUILD_DIR already holds a build), runs the GPU
# tests and the benches with ranks as streams of one process, then starts the
# MPS daemon (ranks in different processes sharing a GPU need it; in-process
# streams would pay its hop too, so their figures are taken without it), runs
# the multi-process tests and bench, the torch tests and the TP decoder
# example (when PyTorch sees the GPU), stops MPS, and prints a summary last.
# Usage: scripts/gpu-check.sh [BUILD_DIR]   (default: build)
# GPU_CHECK_PARTS="native python" (the default) selects the parts: native
# (the C++ tests, benches and processes) and python (the torch tests and the
# example), so that a device session's time limit can take them in turn.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=${OUT:-/tmp}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

if [ ! -x "$build/tpcoll" ]; then
  cmake -S . -B "$build" && cmake --build "$build" -j "$(nproc)" || { echo "gpu-check: build failed"; exit 1; }
fi

parts=${GPU_CHECK_PARTS:-native python}
part() { [[ " $parts " == *" $1 "* ]]; }

declare -a summary
run_step() {  # name, command...
  local name=$1
  shift
  local start=$SECONDS
  if "$@"; then summary+=("PASS  $name ($((SECONDS - start)) s)"); else summary+=("FAIL  $name ($((SECONDS - start)) s)"); fi
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$build/tpcoll" check -n 2

# --- ranks as streams of one process ---
if part native; then
  # The test binaries are run directly: ctest files hold the build machine's paths.
  for t in "$build"/tests/gpu/tpcoll_gpu_*_test; do
    [ -x "$t" ] && run_step "$(basename "$t")" "$t"
  done
  # Issue 18, item 4: a consumer launched early after each of 100,000 ops never
  # reads a stale or partial output, with tpcoll's early launch on and off.
  for early in 1 0; do
    run_step "consumer after each op (programmatic dependent launch), TPCOLL_CUDA_EARLY_LAUNCH=$early" \
      env TPCOLL_CUDA_EARLY_LAUNCH=$early "$build/tests/gpu/tpcoll_gpu_early_launch"
  done
  run_step "all-reduce tests without programmatic dependent launch" env TPCOLL_CUDA_EARLY_LAUNCH=0 \
    "$build/tests/gpu/tpcoll_gpu_all_reduce_test" --gtest_filter='CudaAllReduce.Every*:CudaAllReduce.Graph*'
  run_step "bench (all-reduce bf16 and all-gather, 1K-256M, logits, 2 ranks as streams)" \
    "$build/tpcoll" bench --backend cuda -np 2 -b 1K -e 256M -f 4 --dtype bf16 --op all_reduce --op all_gather \
    --json "$out/gpu-bench-bf16.json"
  run_step "bench (fp32 and fp16, 1K-256M, 2 ranks as streams)" \
    "$build/tpcoll" bench --backend cuda -np 2 -b 1K -e 256M -f 16 --op all_reduce --dtype fp32 --dtype fp16 \
    --json "$out/gpu-bench-fp32-fp16.json"
  for n in 1 2; do
    run_step "bench (fused, bf16, $n rank(s) as streams)" \
      "$build/tpcoll" bench --backend cuda -np "$n" --op fused --dtype bf16 --tokens 1 8 32 128 512 2048 \
      --hidden 2880 4096 5120 7168 8192 -e 64M --json "$out/gpu-bench-fused-x$n.json"
    # The FP8 output (static and per-token rows), each beside the same-run fused
    # op without it: the target is speedup >= 0.952 (at most 5% slower).
    run_step "bench (fused with FP8 output, bf16, $n rank(s) as streams)" \
      "$build/tpcoll" bench --backend cuda -np "$n" --op fused_ar_rmsnorm_fp8 --dtype bf16 \
      --tokens 1 8 32 128 512 2048 --hidden 2880 4096 5120 7168 8192 -e 64M --json "$out/gpu-bench-fused-fp8-x$n.json"
  done
  # Reduce-scatter against our all-reduce of the same input, timed in the same
  # run (base(us) column; target: speedup >= 1 at every size), and the fused
  # reduce-scatter against our full fused op.
  for n in 2 4 8; do
    run_step "bench (reduce_scatter bf16, 1K-256M, $n ranks as streams; baseline: our all-reduce)" \
      "$build/tpcoll" bench --backend cuda -np "$n" -b 1K -e 256M -f 4 --dtype bf16 --op reduce_scatter \
      --json "$out/gpu-bench-reduce-scatter-x$n.json"
  done
  run_step "bench (reduce_scatter fp32 and fp16, 1K-256M, 2 ranks as streams)" \
    "$build/tpcoll" bench --backend cuda -np 2 -b 1K -e 256M -f 16 --op reduce_scatter --dtype fp32 --dtype fp16 \
    --json "$out/gpu-bench-reduce-scatter-fp32-fp16.json"
  run_step "bench (fused_rs_rmsnorm, bf16, 2 ranks as streams; baseline: our full fused op)" \
    "$build/tpcoll" bench --backend cuda -np 2 --op fused_rs_rmsnorm --dtype bf16 --tokens 2 8 32 128 512 2048 \
    --hidden 2880 4096 5120 7168 8192 -e 64M --json "$out/gpu-bench-fused-rs-x2.json"
  # Issue 14's acceptance: every candidate forced beside the dispatched one,
  # over the bench sweep and tune's fused grid; the summary counts the rows
  # whose dispatched time is within 1.03x of the best candidate's.
  for n in 2 4; do
    run_step "acceptance (bench --all-algos, $n ranks as streams, medians within +-0.5%)" \
      "$build/tpcoll" bench --backend cuda -np "$n" --all-algos -e 64M --max-noise 0.5 --max-ms 1000 \
      --json "$out/gpu-acceptance-x$n.json"
    accepted=$(python3 -c "import json,sys; r=[r['dispatched_over_best'] for r in json.load(open(sys.argv[1]))['rows'] if len(r.get('candidates_us',{}))>1]; print(f'acceptance, {sys.argv[2]} ranks: {sum(x<=1.03 for x in r)} of {len(r)} rows within 1.03x, worst {max(r):.3f}')" \
      "$out/gpu-acceptance-x$n.json" "$n" 2>/dev/null) && summary+=("INFO  $accepted")
  done
  # Issue 18, item 6: creation time at world 8 on one GPU (the bench's init row;
  # target under 0.5 s), read from the JSON into the summary.
  run_step "init time, 8 ranks as streams of one GPU (bench init row)" \
    "$build/tpcoll" bench --backend cuda -np 8 -b 1K -e 1K --op all_reduce --dtype bf16 --json "$out/gpu-bench-init-x8.json"
  init_line=$(python3 -c "import json,sys; r=[r for r in json.load(open(sys.argv[1]))['rows'] if r['op']=='init'][0]; print(f\"init: {r['world']} ranks as streams, {r['init_ms']:.1f} ms\")" \
    "$out/gpu-bench-init-x8.json" 2>/dev/null) && summary+=("INFO  $init_line")
  if python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
    run_step "PyTorch add + rms_norm baseline (eager, torch.compile)" \
      python3 scripts/torch_add_rmsnorm.py --json "$out/torch-add-rmsnorm.json"
  fi
fi

# --- ranks as processes sharing the GPU, under MPS ---
mps_started=0
if command -v nvidia-cuda-mps-control >/dev/null 2>&1 || [ -x /usr/local/nvidia/bin/nvidia-cuda-mps-control ]; then
  export PATH=$PATH:/usr/local/nvidia/bin
  export CUDA_MPS_PIPE_DIRECTORY=${CUDA_MPS_PIPE_DIRECTORY:-/tmp/tpcoll-mps} CUDA_MPS_LOG_DIRECTORY=${CUDA_MPS_LOG_DIRECTORY:-/tmp/tpcoll-mps-log}
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  nvidia-cuda-mps-control -d && mps_started=1
fi
stop_mps() { [ "$mps_started" = 1 ] && echo quit | nvidia-cuda-mps-control; }
trap stop_mps EXIT
if part native; then
  for n in 2 3 4 8; do
    run_step "all-reduce, reduce-scatter and all-gather, $n processes sharing the GPU (MPS: $mps_started)" \
      env TPCOLL_DEVICE=0 TPCOLL_TIMEOUT_MS=20000 "$build/tpcoll" run -n "$n" -- "$build/tests/gpu/tpcoll_gpu_processes"
  done
  # ipc_fault and cycles: issue 18, items 7 and 5.
  for mode in kill mismatch abort many ipc_fault cycles; do
    run_step "reliability: $mode, 3 processes sharing the GPU (MPS: $mps_started)" \
      "$build/tests/gpu/tpcoll_gpu_reliability" "$mode" 3
  done
  # --max-noise: the processes agree on every replay batch through the job's own all-gather.
  run_step "bench (all-reduce bf16 and all-gather, 1K-1M, 2 ranks as processes, MPS: $mps_started)" \
    env TPCOLL_DEVICE=0 "$build/tpcoll" bench --placement processes -np 2 -b 1K -e 1M -f 4 --dtype bf16 \
    --op all_reduce --op all_gather --max-noise 1 --max-ms 500 --json "$out/gpu-bench-bf16-processes.json"
fi
# The Python package's torch layer and the example, where the build made the
# package (nanobind found) and PyTorch sees the GPU: ranks are processes here.
if ! part python; then
  summary+=("SKIP  torch tests and TP decoder example (GPU_CHECK_PARTS=\"$parts\")")
elif [ -d "$build/python/tpcoll" ] && python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  run_step "torch tests (custom ops, torch.compile, CUDA graphs; processes sharing the GPU, MPS: $mps_started)" \
    env PYTHONPATH="$PWD/$build/python" python3 -m pytest -q -p no:cacheprovider python/tests/test_torch.py
  run_step "TP decoder example, TP=1/2/4, tpcoll, eager and CUDA graphs (MPS: $mps_started)" \
    env BUILD_DIR="$build" scripts/tp-decoder.sh
else
  summary+=("SKIP  torch tests and TP decoder example (no Python package in $build, or no CUDA PyTorch)")
fi

echo
echo "gpu-check summary:"
printf '  %s\n' "${summary[@]}"
! printf '%s\n' "${summary[@]}" | grep -q '^FAIL'
