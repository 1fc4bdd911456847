#!/usr/bin/env bash
# Stronger than check_cuda_compile.sh: configure, compile and link the whole extension with
# CUDA (bindings included) on a machine without a GPU, then import it; then, against the same
# CUDA torch, a CPU-only build with no CUDA toolkit visible. Needs a CUDA build of torch in a
# separate venv (about 5.5 GB; `make cuda-ext-check` makes .venv-cuda, CI runs it):
#   python3 -m venv /tmp/cudavenv && /tmp/cudavenv/bin/pip install torch==2.14.1 ninja cmake pybind11==3.0.4 numpy
# Usage: scripts/check_cuda_extension.sh [VENV]   (default /tmp/cudavenv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="$(realpath -m "${1:-/tmp/cudavenv}")"
py="$VENV/bin/python"
CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
site="$("$py" -c 'import site; print(site.getsitepackages()[0])')"
nvrtc="$(ls "$site"/nvidia/cu*/lib/libnvrtc.so.* 2>/dev/null | head -n1 || true)"
build="$(realpath -m "${BUILD_DIR:-build/cuda-ext-check}")"
out="$build/out/siri"
mkdir -p "$out"
prefix="$("$py" -c 'import torch, pybind11; print(torch.utils.cmake_prefix_path + ";" + pybind11.get_cmake_dir())')"
# the spellings users write (90a is Hopper's arch-specific target); 100 is the newest portable
# arch, so its PTX must be embedded
ARCHS="${SIRI_CUDA_ARCHS:-80;sm_90a;10.0}"
PATH="$VENV/bin:$PATH" cmake -S . -B "$build" -G Ninja -DSIRI_CUDA=ON -DSIRI_CUDA_ARCHS="$ARCHS" \
  -DCMAKE_PREFIX_PATH="$prefix" -DPython_EXECUTABLE="$py" -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$out" \
  -DCMAKE_CUDA_COMPILER="$CUDA_HOME/bin/nvcc" -DCUDAToolkit_ROOT="$CUDA_HOME" \
  -DCUDA_TOOLKIT_ROOT_DIR="$CUDA_HOME" ${nvrtc:+-DCUDA_nvrtc_LIBRARY="$nvrtc"} -DCAFFE2_USE_CUDNN=OFF \
  -DSIRI_VERSION="$(sed -n 's/__version__ = "\(.*\)"/\1/p' siri/version.py)" >/dev/null
PATH="$VENV/bin:$PATH" cmake --build "$build" --parallel "${MAX_JOBS:-2}"
# Every architecture's SASS is in the library, and the newest portable one's PTX too: without it
# a GPU newer than the list (B200 from an 80;90 build, RTX 50) fails with "no kernel image".
so="$(ls "$out"/_C*.so | head -n1)"
# cuobjdump: the toolkit's, else one on PATH, else the copy triton ships in the CUDA torch venv
cuobjdump=""
for candidate in "$CUDA_HOME/bin/cuobjdump" "$(command -v cuobjdump || true)" \
                 "$site/triton/backends/nvidia/bin/cuobjdump"; do
  if [[ -n "$candidate" && -x "$candidate" ]]; then cuobjdump="$candidate"; break; fi
done
[[ -n "$cuobjdump" ]] || { echo "check_cuda_extension: cuobjdump not found (CUDA_HOME/bin, PATH, triton)" >&2; exit 1; }
elves="$("$cuobjdump" --list-elf "$so")"
ptx="$("$cuobjdump" --list-ptx "$so")"
for sm in sm_80 sm_90a sm_100; do
  grep -q "\.${sm}\." <<<"$elves" || { echo "check_cuda_extension: no ${sm} SASS in $so" >&2; exit 1; }
done
grep -q "sm_100" <<<"$ptx" || { echo "check_cuda_extension: no compute_100 PTX in $so" >&2; exit 1; }
echo "check_cuda_extension: SASS for $(grep -o 'sm_[0-9]*a\?' <<<"$elves" | sort -u | tr '\n' ' ')and PTX for $(grep -o 'sm_[0-9]*a\?' <<<"$ptx" | sort -u | tr '\n' ' ')"
# A build is imported from its output directory, with siri's Python sources copied next to _C.
copy_python_sources() { (cd siri && find . -name "*.py" -exec install -D -m 644 {} "$1/{}" \;); }
copy_python_sources "$out"
(cd "$build/out" && SIRI_PROBES="$build/probes" "$py" - <<'PYEOF'
import os
import sys
import torch
import siri
info = siri.build_info()
print(info)
assert "cuda" in info["backends"], "the build has no CUDA backend"
test_only = [n for n in dir(siri._C) if n.startswith("_") and not n.startswith("__")]
assert not test_only, f"siri._C exposes test-only entries: {test_only}"
sys.path.insert(0, os.environ["SIRI_PROBES"])
import _siri_probes  # the test probes: a module of their own, built by the same CMake project
assert _siri_probes.__file__.startswith(os.environ["SIRI_PROBES"]), _siri_probes.__file__
ops = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("siri::"))
missing = [n for n in ops if not torch._C._dispatch_has_kernel_for_dispatch_key(n, "CUDA")]
assert not missing, f"ops without a CUDA kernel: {missing}"
print(f"{len(ops)} ops, each with CPU and CUDA kernels: {', '.join(ops)}")
PYEOF
)
echo "check_cuda_extension: CUDA extension compiled, linked and imported"

# The same CUDA torch, a CPU-only build, with no CUDA toolkit in sight (no CUDA_HOME, no nvcc on
# PATH): the case of `pip install torch` on a Linux machine without CUDA. torch's CMake package
# refuses it ("uses CUDA but I cannot find the CUDA libraries"), so cmake/siri_torch.cmake finds
# torch by path; this build must configure, link and import with the CPU backend alone.
cpu_build="$build-cpu-only"
cpu_out="$cpu_build/out/siri"
mkdir -p "$cpu_out"
no_cuda=(env -u CUDA_HOME -u CUDA_PATH -u CUDAToolkit_ROOT PATH="$VENV/bin:/usr/bin:/bin")
configured="$("${no_cuda[@]}" cmake -S . -B "$cpu_build" -G Ninja -DSIRI_CUDA=OFF -DPython_EXECUTABLE="$py" \
  -DCMAKE_PREFIX_PATH="$("$py" -c 'import pybind11; print(pybind11.get_cmake_dir())')" \
  -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$cpu_out")"
# /usr/local/cuda may still be found by CMake's default search: the check is that torch came by path
grep -q "siri: CPU-only build against torch in .* (by path" <<<"$configured" || {
  echo "check_cuda_extension: the CPU-only build did not take torch by path (cmake/siri_torch.cmake)" >&2; exit 1; }
"${no_cuda[@]}" cmake --build "$cpu_build" --parallel "${MAX_JOBS:-2}" >/dev/null
copy_python_sources "$cpu_out"
(cd "$cpu_build/out" && "$py" -c '
import torch, siri
info = siri.build_info()
assert info["backends"] == ["cpu"], info
assert torch.version.cuda, "the venv torch is meant to be a CUDA build"
print(f"check_cuda_extension: CPU-only build against torch {torch.__version__} imported: {info}")
')
