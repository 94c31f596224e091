#!/usr/bin/env bash
# Installs the Debian packages tpcoll builds and benchmarks with. Safe to re-run:
# packages already present are not fetched again.
set -euo pipefail

packages=(
  cmake g++ make            # build
  libcli11-dev              # tpcoll command line
  nlohmann-json3-dev        # bench JSON output
  libfmt-dev                # logging and tables
  libgtest-dev              # tests
  libopenmpi-dev openmpi-bin  # the MPI baseline of `tpcoll bench --baseline mpi`
  clang libclang-rt-dev     # the libFuzzer targets (tests/fuzz), with ASan and UBSan
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
