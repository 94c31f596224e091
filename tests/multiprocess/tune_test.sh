#!/usr/bin/env bash
# `tpcoll tune` writes this machine's table under $XDG_CACHE_HOME/tpcoll, and
# the next communicators of that world size plan from it; a truncated table
# is refused with a WARN and the built-in table is used.
set -euo pipefail
tpcoll=$1
cache=$(mktemp -d)
trap 'rm -rf "$cache"' EXIT
export XDG_CACHE_HOME=$cache
unset TPCOLL_TUNE_FILE TPCOLL_ALGO TPCOLL_DISABLE

"$tpcoll" tune --np 2 -b 1K -e 16K -n 3 -w 1 --tokens 2 4 > "$cache/tune.out"
grep -q '^# wins: all_reduce float32:' "$cache/tune.out" || { echo "no wins line"; cat "$cache/tune.out"; exit 1; }
table=$(ls "$cache"/tpcoll/cpu-shm-*-x2-*.json)
echo "table: $table"

TPCOLL_DEBUG=INFO "$tpcoll" bench --np 2 --op all_reduce --dtype fp32 -b 1K -e 1K -n 1 -w 0 > "$cache/bench.out" 2>&1
grep -q "INFO \[tune\] table $table" "$cache/bench.out" || { echo "table not used"; cat "$cache/bench.out"; exit 1; }

head -c 100 "$table" > "$table.cut" && mv "$table.cut" "$table"
TPCOLL_DEBUG=INFO "$tpcoll" bench --np 2 --op all_reduce --dtype fp32 -b 1K -e 1K -n 1 -w 0 > "$cache/bench.out" 2>&1
grep -q "WARN \[tune\] table $table refused: not valid JSON" "$cache/bench.out" ||
  { echo "truncated table not refused"; cat "$cache/bench.out"; exit 1; }
grep -q "table cpu-builtin" "$cache/bench.out" || { echo "built-in table not used"; cat "$cache/bench.out"; exit 1; }
echo "tune test ok"
