#!/usr/bin/env bash
# Runs `tpcoll bench` with the given flags and records its JSON in
# bench/results/NAME.json, stamped with the commit (device and date come from
# the bench itself). Usage: scripts/bench-record.sh NAME [bench flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1
shift
commit=$(git rev-parse --short HEAD)
if ! git diff --quiet HEAD -- src include tools; then commit="$commit-dirty"; fi
mkdir -p bench/results
TPCOLL_COMMIT=$commit build/tpcoll bench --json "bench/results/$name.json" "$@" | tee "bench/results/$name.txt"
