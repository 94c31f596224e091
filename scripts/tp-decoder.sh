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
# Ranks sharing a GPU load every CUDA module at start-up: one loaded lazily
# at its first launch can wait for the other processes' kernels, a peer's
# waiting collective included (see the README).
if [ "$(nvidia-smi -L 2>/dev/null | wc -l)" -lt 4 ]; then export CUDA_MODULE_LOADING=${CUDA_MODULE_LOADING:-EAGER}; fi
status=0
for tp in 1 2 4; do
  "$launcher" run -n "$tp" -- python3 examples/tp_decoder/run.py "$@" || status=1
done
exit $status
