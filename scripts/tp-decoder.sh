#!/usr/bin/env bash
# Runs the tensor-parallel decoder example at TP=1, 2 and 4, each rank a
# process started by `tpcoll run` (on one GPU the ranks share it: start MPS
# first, as scripts/gpu-check.sh does; on several, one rank per GPU). Extra
# arguments go to examples/tp_decoder/run.py (e.g. --collectives torch).
# Uses the build tree's package and launcher when BUILD_DIR (default: build)
# has them, else the installed ones (`pip install .`).
set -uo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
launcher=tpcoll
if [ -x "$build/tpcoll" ] && [ -d "$build/python/tpcoll" ]; then
  launcher=$build/tpcoll
  export PYTHONPATH=$PWD/$build/python${PYTHONPATH:+:$PYTHONPATH}
fi
# Ranks sharing a GPU as processes (MPS) each get their share of its SMs:
# otherwise the ranks' waiting collectives can hold the SMs that one
# process's GEMM needs, until they time out (see the README).
gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
status=0
for tp in 1 2 4; do
  share=()
  if [ "$gpus" -gt 0 ] && [ "$gpus" -lt "$tp" ] && [ -z "${CUDA_MPS_ACTIVE_THREAD_PERCENTAGE:-}" ]; then
    share=(env CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=$((100 * gpus / tp)))
  fi
  "${share[@]}" "$launcher" run -n "$tp" -- python3 examples/tp_decoder/run.py "$@" || status=1
done
exit $status
