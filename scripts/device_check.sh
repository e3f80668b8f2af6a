#!/usr/bin/env bash
# The GPU check of issue 18, in one command on a machine with one GPU (the `device` tool's
# H100/H200: PyTorch 2.11 + CUDA 13, CMake and ninja, none of our Debian libraries).
#   scripts/device_check.sh prepare   here (Debian 12, network): downloads the Debian packages the
#                                      build needs that the GPU image lacks into .devdeps/
#                                      (ignored by git), to be carried with the working tree.
#   scripts/device_check.sh configure  anywhere: unpack and configure only (checks the relocation).
#   scripts/device_check.sh run       there, from the repository root, with .devdeps carried:
#                                      unpacks them under /opt/dstdeps, builds dstrain and the gpu
#                                      tests (DST_WITH_CUDA=ON, ninja), and prints
#     1. ctest -L gpu (NCCL on one rank, staged MPI with CUDA tensors, trainer CUDA == CPU);
#     2. the quickstart model 20 steps on GPU vs CPU: fp32 losses within 1e-5, bf16 within 2e-2;
#        and `generate --device cuda` (3 prompts batched) giving the CPU's greedy ids;
#     3. two ranks sharing the GPU through MPI staged via host memory: ZeRO-3 == DP losses;
#     4. the ~1B LLaMA benchmark (bench/bench-gpu-1b.yaml): tokens/s, MFU, peak memory of ours
#        against PyTorch eager (and torch.compile) of the same model in the same run.
# Everything goes to $OUT/device_check.log when OUT is set. Budget: 8 minutes including the build.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-run}
DEPS_DIR=.devdeps
# Packages the build and the tests need beyond what the GPU image has (compiler, CUDA, NCCL,
# PyTorch, Python, CMake, ninja, zlib, OpenSSL runtime), with the libraries they pull in.
PACKAGES=(libyaml-cpp-dev libyaml-cpp0.7 libhdf5-dev libhdf5-103-1 libhdf5-hl-100 libhdf5-cpp-103-1
  libhdf5-hl-cpp-100 hdf5-helpers libsz2 libaec0 libaec-dev libcurl4 nlohmann-json3-dev
  libcli11-dev libeigen3-dev libssl-dev libssl3 libpcre2-dev libpcre2-8-0 libpcre2-16-0
  libpcre2-32-0 libpcre2-posix3 catch2 libopenmpi-dev libopenmpi3 openmpi-bin openmpi-common
  libpmix2 libpmix-dev libhwloc15 libhwloc-dev libhwloc-plugins libevent-2.1-7
  libevent-core-2.1-7 libevent-pthreads-2.1-7 libevent-extra-2.1-7 libevent-openssl-2.1-7
  libevent-dev libfabric1 libucx0 libibverbs1 libibverbs-dev ibverbs-providers librdmacm1
  libnl-3-200 libnl-route-3-200 libpsm2-2 libpsm-infinipath1 libmunge2 libltdl7 libxnvctrl0
  libnuma1 libpciaccess0 libjpeg62-turbo libxml2 libicu72 libx11-6 libxext6 libxcb1 libxau6
  libxdmcp6 libx11-data ocl-icd-libopencl1 libgfortran5 pkgconf pkgconf-bin libpkgconf3
  pkg-config)

prepare() {
  mkdir -p "$DEPS_DIR"
  grep -qx "/$DEPS_DIR/" .git/info/exclude 2> /dev/null || echo "/$DEPS_DIR/" >> .git/info/exclude
  (cd "$DEPS_DIR" && apt-get download "${PACKAGES[@]}") || { echo "apt-get download failed" >&2; exit 1; }
  du -sh "$DEPS_DIR"
  echo "carry $DEPS_DIR; on the GPU machine run: bash scripts/device_check.sh run"
}

# Unpacks the carried packages and points compilers, CMake, pkg-config and OpenMPI at them. The
# Debian alternatives (mpicc, mpirun) are links dpkg would make: made here. LD_LIBRARY_PATH is set
# for our programs only (DEPS_LD); Python runs with the image's own libraries.
use_deps() {
  local root=/opt/dstdeps
  mkdir -p "$root"
  for deb in "$DEPS_DIR"/*.deb; do dpkg-deb -x "$deb" "$root"; done
  local lib=$root/usr/lib/x86_64-linux-gnu bin=$root/usr/bin
  ln -sf opal_wrapper "$bin/mpicc"
  ln -sf orterun "$bin/mpirun"
  ln -sf orterun "$bin/mpiexec"
  export PATH=$bin:$PATH
  DEPS_LD=$lib:$lib/openmpi/lib:$lib/hdf5/serial
  export CPATH=$root/usr/include:$root/usr/include/x86_64-linux-gnu:$lib/openmpi/include:$root/usr/include/hdf5/serial
  export LIBRARY_PATH=$lib:$lib/hdf5/serial
  export PKG_CONFIG_SYSROOT_DIR=$root PKG_CONFIG_PATH=$lib/pkgconfig:$root/usr/share/pkgconfig
  export OPAL_PREFIX=$root/usr PMIX_INSTALL_PREFIX=$lib/pmix2 OMPI_MCA_plm_rsh_agent=false
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
  # NCCL: the torch wheel's (the library that loads at run time), headers and libnccl.so.2.
  NCCL_HOME=$(python3 -c 'import os, nvidia.nccl as n; print(os.path.dirname(n.__file__) if n.__file__ else list(n.__path__)[0])' 2> /dev/null) &&
    export NCCL_HOME
  DEPS_PREFIX=$root/usr
  DEPS_LIB=$lib
}

# Our programs with the carried libraries.
with_deps() { LD_LIBRARY_PATH=$DEPS_LD:${LD_LIBRARY_PATH:-} "$@"; }

configure() {
  local torch_prefix
  torch_prefix=$(python3 -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
  with_deps cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDST_WITH_CUDA=ON \
    "-DCMAKE_PREFIX_PATH=$torch_prefix;$DEPS_PREFIX" -DMPI_C_COMPILER="$DEPS_PREFIX/bin/mpicc" \
    -DHDF5_C_COMPILER_EXECUTABLE=HDF5_C_COMPILER_EXECUTABLE-NOTFOUND \
    -DHDF5_C_INCLUDE_DIR="$DEPS_PREFIX/include/hdf5/serial" \
    -DHDF5_C_LIBRARY_hdf5="$DEPS_LIB/hdf5/serial/libhdf5.so" \
    -DOPENSSL_ROOT_DIR="$DEPS_PREFIX" > "$BUILD.configure.log" 2>&1 ||
    { tail -30 "$BUILD.configure.log"; return 1; }
  grep -E "CUDA/NCCL parts" "$BUILD.configure.log"
}

build() {
  configure || return 1
  with_deps cmake --build "$BUILD" -j "$(nproc)" --target dstrain dst_gpu_tests 2>&1 | tail -5
}

# Final loss of a run's metrics.jsonl.
losses() { python3 -c 'import json,sys; print(" ".join(str(json.loads(l)["loss"]) for l in open(sys.argv[1]) if "\"loss\"" in l))' "$1"; }
compare() {  # compare NAME TOLERANCE A_METRICS B_METRICS
  python3 - "$@" << 'PY'
import json, sys
name, tol, a, b = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
la = [json.loads(l)["loss"] for l in open(a) if '"loss"' in l]
lb = [json.loads(l)["loss"] for l in open(b) if '"loss"' in l]
worst = max(abs(x - y) / abs(y) for x, y in zip(la, lb)) if la and len(la) == len(lb) else float("inf")
print(f"{name}: {len(la)} steps, worst relative loss difference {worst:.2e} (tolerance {tol:g}):",
      "PASS" if worst <= tol else "FAIL")
PY
}

run_checks() {
  BUILD=/tmp/dstbuild
  use_deps
  nvidia-smi -L
  echo "== build"; time build || return 1
  local dstrain=$BUILD/dstrain work=/tmp/dstcheck repo=$PWD
  mkdir -p $work/data && cp configs/quickstart.yaml $work/ && cd $work || return 1
  with_deps "$dstrain" --version
  with_deps "$dstrain" synth data/quickstart.txt --docs 20000 --seed 1 > /dev/null
  echo "== 1. gpu tests"; (cd "$BUILD" && with_deps ctest -L gpu --output-on-failure)
  echo "== 2. quickstart, GPU vs CPU"
  for dtype in fp32 bf16; do
    for device in cpu cuda; do
      with_deps "$dstrain" train quickstart.yaml train.steps=20 train.device=$device train.eval_every=0 \
        precision.param_dtype=$dtype train.output_dir=runs/q-$device-$dtype > q-$device-$dtype.log 2>&1 ||
        tail -3 q-$device-$dtype.log
    done
  done
  compare "quickstart fp32 GPU vs CPU" 1e-5 runs/q-cuda-fp32/metrics.jsonl runs/q-cpu-fp32/metrics.jsonl
  compare "quickstart bf16 GPU vs CPU" 2e-2 runs/q-cuda-bf16/metrics.jsonl runs/q-cpu-bf16/metrics.jsonl
  echo "== 2b. generate on the GPU vs the CPU (greedy ids, 3 prompts decoded together)"
  printf '10 20 30\n40 50 60 70 80\n90\n' > prompts.txt
  for device in cpu cuda; do
    with_deps "$dstrain" generate --model runs/q-cpu-fp32/checkpoints/step-20 --ids prompts.txt \
      --greedy --print-ids --max-new-tokens 16 --batch-size 3 --device $device \
      > gen-$device.txt 2> gen-$device.log || tail -3 gen-$device.log
  done
  cmp -s gen-cpu.txt gen-cuda.txt && echo "generate: GPU ids equal CPU ids: PASS" ||
    echo "generate: GPU ids differ from CPU ids: FAIL"
  echo "== 3. two ranks on one GPU (MPI staged): ZeRO-3 vs DP"
  for stage in 0 3; do
    with_deps mpirun -np 2 --bind-to none -x LD_LIBRARY_PATH "$dstrain" train quickstart.yaml parallel.dp=2 comm.backend=mpi \
      parallel.zero_stage=$stage train.device=cuda train.steps=10 train.eval_every=0 \
      train.output_dir=runs/z$stage > z$stage.log 2>&1 || tail -3 z$stage.log
  done
  compare "dp2 on one GPU, ZeRO-3 vs DP" 1e-5 runs/z3/metrics.jsonl runs/z0/metrics.jsonl
  echo "== 4. GPU benchmark (~1B LLaMA, bf16)"
  with_deps "$dstrain" synth data/bench.txt --docs 6000 --seed 5 > /dev/null
  cp "$repo/bench/bench-gpu-1b.yaml" .
  with_deps "$dstrain" train bench-gpu-1b.yaml > ours.log 2>&1 || tail -5 ours.log
  grep -E "MFU denominator|memory plan|planned" ours.log | head -3
  python3 - runs/bench-gpu-1b/metrics.jsonl << 'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"tokens_per_s"' in l][2:]
print("ours_gpu %.1f %.3f %.0f planned_peak_mb %.0f" % (statistics.median(r["tokens_per_s"] for r in rows),
      statistics.median(r.get("mfu", 0) for r in rows), rows[-1].get("peak_device_allocated_mb", 0),
      rows[-1].get("planned_peak_rss_mb", 0)))
PY
  (cd "$repo/bench" && env -u CPATH -u LIBRARY_PATH python3 torch_reference_gpu.py 10)
  (cd "$repo/bench" && env -u CPATH -u LIBRARY_PATH timeout 180 python3 torch_reference_gpu.py 10 --compile) || echo "torch.compile: not measured"
}

case "$MODE" in
  prepare) prepare ;;
  # The relocation alone (any machine with the packages carried): configure, print what was found.
  configure) BUILD=/tmp/dstbuild-configure && use_deps && configure &&
    grep -E "MPI_C_LIBRARIES|HDF5_C_LIBRARY_hdf5|OPENSSL_CRYPTO_LIBRARY|PCRE2_LINK_LIBRARIES|NCCL_LIBRARY" \
      "$BUILD/CMakeCache.txt" ;;
  run)
    if [ -n "${OUT:-}" ]; then run_checks 2>&1 | tee "$OUT/device_check.log"; else run_checks; fi ;;
  *) echo "usage: scripts/device_check.sh prepare|run" >&2; exit 2 ;;
esac
