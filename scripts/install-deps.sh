#!/usr/bin/env bash
# Installs the Debian packages tpcoll builds and benchmarks with, and the
# Python packages its Python package builds and tests with (into the python3
# on PATH). Safe to re-run: packages already present are not fetched again.
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
# Debian's own Python needs its headers and pip from Debian; another python3
# first on PATH (pyenv, a virtual environment) brings its own.
python=$(command -v python3 || true)
if [ -z "$python" ] || [ "$python" = /usr/bin/python3 ]; then
  packages+=(python3 python3-dev python3-pip python3-venv)
  python=/usr/bin/python3
fi

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

# The Python package's build and test requirements (pip, as Debian 12 has no
# nanobind), into that interpreter: for Debian's, in the user's site (PEP 668
# marks it externally managed; nothing of Debian's is replaced).
python_packages=(nanobind scikit-build-core numpy pytest)
if ! "$python" -c 'import nanobind, scikit_build_core, numpy, pytest' 2>/dev/null; then
  pip_args=()
  if [ -f "$("$python" -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')/EXTERNALLY-MANAGED" ]; then
    pip_args=(--user --break-system-packages)
  fi
  "$python" -m pip install -q "${pip_args[@]}" "${python_packages[@]}"
fi
