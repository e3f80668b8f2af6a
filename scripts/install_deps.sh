#!/usr/bin/env bash
# Installs the Debian 12 packages deepseek_train needs to build, test and run. Idempotent.
set -euo pipefail

PACKAGES=(
  build-essential cmake ccache pkg-config git python3
  libtorch-dev libopenblas0-openmp
  libdnnl-dev  # oneDNN sgemm behind the fused CPU kernels (kernels/cpu_gemm.h)
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
