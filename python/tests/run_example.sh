#!/usr/bin/env bash
# ctest's run of the TP decoder example on the CPU backend at TP=2 and 4,
# few timed steps (its checks are what counts here); skipped (77) where
# PyTorch is not importable. Usage: run_example.sh LAUNCHER PYTHON RUN_PY
set -euo pipefail
launcher=$1
python=$2
example=$3
"$python" -c "import torch" 2>/dev/null || { echo "PyTorch is not importable: skipped"; exit 77; }
for tp in 2 4; do
  "$launcher" run -n "$tp" -- "$python" "$example" --device cpu --iters 2
done
