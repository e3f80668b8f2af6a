#!/usr/bin/env bash
# Installs the Debian 12 packages deepseek_train needs to build, test and run. Idempotent.
set -euo pipefail

PACKAGES=(
  build-essential cmake ccache pkg-config git python3
  python3-venv libopenblas0-openmp
  libopenmpi-dev openmpi-bin
  libyaml-cpp-dev libhdf5-dev nlohmann-json3-dev libcli11-dev libeigen3-dev libfmt-dev libssl-dev libpcre2-dev
  catch2 clang-format
  python3-matplotlib  # scripts/plot_metrics.py
  slurm-wlm munge  # the Slurm end-to-end test (a private single-node cluster)
  clang libclang-rt-14-dev  # libFuzzer targets (scripts/fuzz.sh; the runtime is only recommended)
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "[deps] installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "[deps] all packages present"
fi

# Debian's reference BLAS is ~70x slower than OpenBLAS for libtorch's matmuls: make sure the
# OpenBLAS (OpenMP) implementation is the selected libblas/liblapack.
arch_dir=/usr/lib/x86_64-linux-gnu
if [ -e "$arch_dir/openblas-openmp/libblas.so.3" ]; then
  $SUDO update-alternatives --set "libblas.so.3-x86_64-linux-gnu" "$arch_dir/openblas-openmp/libblas.so.3" >/dev/null 2>&1 || true
  $SUDO update-alternatives --set "liblapack.so.3-x86_64-linux-gnu" "$arch_dir/openblas-openmp/liblapack.so.3" >/dev/null 2>&1 || true
fi

# libtorch: PyPI's torch (scripts/requirements.txt) in a virtual environment outside the clone,
# keyed by the requirements file's hash, so a fresh clone on the same machine (CI) reuses it
# instead of downloading several GB again; `.venv` in the source tree links to it.
cd "$(dirname "$0")/.."
REQUIREMENTS=scripts/requirements.txt
KEY=$(sha256sum "$REQUIREMENTS" | cut -c1-16)
CACHE_ROOT=/var/cache/deepseek_train
mkdir -p "$CACHE_ROOT" 2> /dev/null && [ -w "$CACHE_ROOT" ] || CACHE_ROOT=$HOME/.cache/deepseek_train
VENV=${DST_VENV:-$CACHE_ROOT/venv-$KEY}
if [ ! -f "$VENV/.complete" ]; then
  echo "[deps] creating $VENV (pip install -r $REQUIREMENTS)"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  # A requirements change usually adds or bumps a few packages: start from the newest complete
  # environment of an earlier file (torch alone is several GB) and let pip change what differs.
  seed=$(ls -dt "$CACHE_ROOT"/venv-*/.complete 2> /dev/null | head -1 || true)
  if [ -n "$seed" ] && [ -z "${DST_VENV:-}" ]; then
    echo "[deps] seeding from $(dirname "$seed")"
    cp -a "$(dirname "$seed")" "$VENV"
    rm -f "$VENV/.complete"
  else
    /usr/bin/python3 -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQUIREMENTS"
  touch "$VENV/.complete"
else
  echo "[deps] libtorch: $VENV"
fi
ln -sfn "$VENV" .venv
