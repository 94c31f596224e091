#!/usr/bin/env bash
# Tests of `tpcoll run`, the launcher. Usage: launcher_test.sh TPCOLL CASE
#   exit-code    a rank exits 3: the launcher stops the others and exits 3, quickly
#   signal       a rank is killed by SIGKILL: the launcher exits 137, quickly
#   grandchild   as exit-code, but the other ranks are shells whose `sleep` is a
#                child of theirs (the command from the launcher's documentation)
#   prefix       every output line, stdout and stderr, carries "[rank] "
#   environment  every rank gets its TPCOLL_RANK, the world size and one job id
#   no-command   a command that does not exist: exit 127 with a message
#   forward      SIGTERM to the launcher reaches every rank: exit 143, nothing left
#   binding      rank r runs on the (r mod n)-th CPU the launcher may use; --no-bind
#                leaves every rank the launcher's CPUs
# Each case runs the launcher in its own process group, and finally kills
# whatever is left in that group (only processes this script started).
set -u
tpcoll=$1
case_name=$2
fail() { echo "FAILED: $*"; exit 1; }

# Live (non-zombie) processes of process group $1, from /proc (no procps needed).
group_members() {
  local f s
  for f in /proc/[0-9]*/stat; do
    s=$(cat "$f" 2>/dev/null) || continue
    s=${s##*) }  # the fields after "pid (comm) ": state ppid pgrp ...
    set -- $s
    [ "$3" = "$group" ] && [ "$1" != Z ] && echo -n "${f//[^0-9]/} "
  done
  return 0
}

# run_launcher OUT ERR ARGS...: runs `tpcoll ARGS` as its own process group;
# sets rc, ms (its run time) and leftovers (members of its group still alive
# after it exited, which are then killed).
run_launcher() {
  local out=$1 err=$2
  shift 2
  local start=$(date +%s%N)
  set -m
  "$tpcoll" "$@" >"$out" 2>"$err" &
  local pid=$!
  set +m
  wait "$pid"
  rc=$?
  ms=$((($(date +%s%N) - start) / 1000000))
  sleep 0.2
  group=$pid
  leftovers=$(group_members)
  [ -n "$leftovers" ] && kill -KILL -- "-$pid" 2>/dev/null
  return 0
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tpcoll-launcher.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
out=$tmp/out
err=$tmp/err

case $case_name in
  exit-code)
    run_launcher "$out" "$err" run -n 3 -- sh -c 'if [ "$TPCOLL_RANK" = 1 ]; then exit 3; fi; exec sleep 30'
    cat "$out" "$err"
    [ "$rc" = 3 ] || fail "exit code $rc, expected 3"
    [ "$ms" -lt 10000 ] || fail "took $ms ms: the other ranks were not stopped"
    grep -q "rank 1 exited with code 3" "$err" || fail "no message naming rank 1"
    [ -z "$leftovers" ] || fail "processes left running: $leftovers"
    ;;
  signal)
    run_launcher "$out" "$err" run -n 2 -- sh -c 'if [ "$TPCOLL_RANK" = 0 ]; then kill -KILL $$; fi; exec sleep 30'
    cat "$out" "$err"
    [ "$rc" = 137 ] || fail "exit code $rc, expected 137 (128 + SIGKILL)"
    [ "$ms" -lt 10000 ] || fail "took $ms ms"
    [ -z "$leftovers" ] || fail "processes left running: $leftovers"
    ;;
  grandchild)
    run_launcher "$out" "$err" run -n 3 -- sh -c 'if [ "$TPCOLL_RANK" = 1 ]; then exit 3; fi; sleep 30'
    cat "$out" "$err"
    [ "$rc" = 3 ] || fail "exit code $rc, expected 3"
    [ "$ms" -lt 10000 ] || fail "took $ms ms: the other ranks' children were not stopped"
    [ -z "$leftovers" ] || fail "processes left running: $leftovers"
    run_launcher "$out" "$err" run --no-prefix -n 3 -- sh -c 'if [ "$TPCOLL_RANK" = 1 ]; then exit 3; fi; sleep 30'
    [ "$rc" = 3 ] || fail "--no-prefix: exit code $rc, expected 3"
    [ -z "$leftovers" ] || fail "--no-prefix: processes left running: $leftovers"
    ;;
  prefix)
    run_launcher "$out" "$err" run -n 2 -- sh -c 'echo hi; echo "oops $TPCOLL_RANK" >&2; printf "no newline"'
    echo "--- stdout"; cat "$out"; echo "--- stderr"; cat "$err"
    [ "$rc" = 0 ] || fail "exit code $rc"
    for r in 0 1; do
      grep -qx "\[$r\] hi" "$out" || fail "stdout lacks '[$r] hi'"
      grep -qx "\[$r\] no newline" "$out" || fail "stdout lacks '[$r] no newline' (an unterminated last line)"
      grep -qx "\[$r\] oops $r" "$err" || fail "stderr lacks '[$r] oops $r'"
    done
    [ "$(wc -l <"$out")" = 4 ] || fail "stdout has $(wc -l <"$out") lines, expected 4"
    ;;
  environment)
    run_launcher "$out" "$err" run -n 3 -- sh -c 'echo "rank=$TPCOLL_RANK world=$TPCOLL_WORLD_SIZE job=$TPCOLL_JOB"'
    cat "$out" "$err"
    [ "$rc" = 0 ] || fail "exit code $rc"
    for r in 0 1 2; do
      grep -q "^\[$r\] rank=$r world=3 job=." "$out" || fail "rank $r did not get its environment"
    done
    [ "$(sed 's/.*job=//' "$out" | sort -u | wc -l)" = 1 ] || fail "the ranks got different job ids"
    run_launcher "$tmp/out2" "$err" run -n 1 -- sh -c 'echo "job=$TPCOLL_JOB"'
    [ "$(sed 's/.*job=//' "$out" | sort -u)" != "$(sed 's/.*job=//' "$tmp/out2")" ] || fail "two jobs got the same id"
    ;;
  no-command)
    run_launcher "$out" "$err" run -n 2 -- /nonexistent/tpcoll-test-command
    cat "$out" "$err"
    [ "$rc" = 127 ] || fail "exit code $rc, expected 127"
    grep -q "cannot execute" "$err" || fail "no 'cannot execute' message"
    ;;
  forward)
    start=$(date +%s%N)
    set -m
    "$tpcoll" run -n 3 -- sh -c 'echo up; exec sleep 30' >"$out" 2>"$err" &
    pid=$!
    set +m
    for _ in $(seq 100); do [ "$(grep -c up "$out")" = 3 ] && break; sleep 0.05; done
    kill -TERM "$pid"
    wait "$pid"
    rc=$?
    ms=$((($(date +%s%N) - start) / 1000000))
    sleep 0.2
    group=$pid
    leftovers=$(group_members)
    [ -n "$leftovers" ] && kill -KILL -- "-$pid" 2>/dev/null
    cat "$out" "$err"
    [ "$rc" = 143 ] || fail "exit code $rc, expected 143 (128 + SIGTERM)"
    [ "$ms" -lt 10000 ] || fail "took $ms ms"
    [ -z "$leftovers" ] || fail "processes left running: $leftovers"
    ;;
  binding)
    # The CPUs this script may use, in increasing order (the launcher inherits them).
    allowed=$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status)
    cpus=()
    for range in ${allowed//,/ }; do
      for c in $(seq "${range%-*}" "${range#*-}"); do cpus+=("$c"); done
    done
    show='echo "rank=$TPCOLL_RANK cpus=$(sed -n "s/^Cpus_allowed_list:[[:space:]]*//p" /proc/self/status)"'
    run_launcher "$out" "$err" run -n 3 -- sh -c "$show"
    cat "$out" "$err"
    [ "$rc" = 0 ] || fail "exit code $rc"
    for r in 0 1 2; do
      want=${cpus[$((r % ${#cpus[@]}))]}
      grep -qx "\[$r\] rank=$r cpus=$want" "$out" || fail "rank $r is not bound to CPU $want alone (allowed: $allowed)"
    done
    run_launcher "$out" "$err" run --no-bind -n 2 -- sh -c "$show"
    cat "$out" "$err"
    [ "$rc" = 0 ] || fail "--no-bind: exit code $rc"
    for r in 0 1; do
      grep -qx "\[$r\] rank=$r cpus=$allowed" "$out" || fail "--no-bind: rank $r does not have every allowed CPU"
    done
    ;;
  *)
    fail "unknown case $case_name"
    ;;
esac
echo "ok: $case_name"
