#!/usr/bin/env bash
# install_and_consume: installs the build tree into a fresh prefix, builds the
# consumer project against it with find_package(tpcoll), and runs it.
# Usage: run.sh CMAKE BUILD_DIR CONSUMER_SOURCE_DIR CXX_COMPILER
set -euo pipefail
cmake=$1
build=$2
source=$3
cxx=$4

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tpcoll-consumer.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

echo "== install into $prefix"
"$cmake" --install "$build" --prefix "$prefix"
for f in include/tpcoll/tpcoll.h include/tpcoll/tpcoll.hpp include/tpcoll/error.hpp bin/tpcoll; do
  [ -e "$prefix/$f" ] || { echo "FAILED: $f was not installed"; exit 1; }
done

echo "== configure and build the consumer"
"$cmake" -S "$source" -B "$tmp/build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_BUILD_TYPE=Release
"$cmake" --build "$tmp/build"

echo "== run"
# Nothing of the build tree may be used: the consumer must find the installed library.
# ldd's output is kept first: `ldd | grep -q` fails under pipefail when grep
# exits at its first match before ldd has written everything (SIGPIPE).
libs=$(ldd "$tmp/build/consumer")
grep tpcoll <<<"$libs"
grep -q "$prefix/lib.*/libtpcoll.so" <<<"$libs" ||
  { echo "FAILED: consumer does not load libtpcoll.so from the prefix"; exit 1; }
"$tmp/build/consumer"
if readelf -d "$tmp/build/consumer_static" | grep NEEDED | grep -q libtpcoll; then
  echo "FAILED: consumer_static needs libtpcoll.so"
  exit 1
fi
"$tmp/build/consumer_static"
# The installed launcher runs on its own.
"$prefix/bin/tpcoll" run -n 2 -- "$tmp/build/consumer_static" | grep -c "all_reduce ok" | grep -qx 2 ||
  { echo "FAILED: the installed 'tpcoll run' did not run two ranks"; exit 1; }
echo "ok: install_and_consume"
