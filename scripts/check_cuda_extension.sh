#!/usr/bin/env bash
# Stronger than check_cuda_compile.sh: configure, compile and link the whole extension with
# CUDA (bindings included) on a machine without a GPU, then import it. Needs a CUDA build of
# torch in a separate venv (about 5.5 GB; not run in CI for that reason):
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
PATH="$VENV/bin:$PATH" cmake -S . -B "$build" -G Ninja -DSIRI_CUDA=ON -DSIRI_CUDA_ARCHS="80;90" \
  -DCMAKE_PREFIX_PATH="$prefix" -DPython_EXECUTABLE="$py" -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$out" \
  -DCMAKE_CUDA_COMPILER="$CUDA_HOME/bin/nvcc" -DCUDAToolkit_ROOT="$CUDA_HOME" \
  -DCUDA_TOOLKIT_ROOT_DIR="$CUDA_HOME" ${nvrtc:+-DCUDA_nvrtc_LIBRARY="$nvrtc"} -DCAFFE2_USE_CUDNN=OFF \
  -DSIRI_VERSION="$(sed -n 's/__version__ = "\(.*\)"/\1/p' siri/version.py)" >/dev/null
PATH="$VENV/bin:$PATH" cmake --build "$build" --parallel "${MAX_JOBS:-2}"
# Import the CUDA build: copy the Python sources next to the freshly linked _C.
(cd siri && find . -name "*.py" -exec install -D -m 644 {} "$out/{}" \;)
(cd "$build/out" && "$py" - <<'PYEOF'
import torch
import siri
info = siri.build_info()
print(info)
assert "cuda" in info["backends"], "the build has no CUDA backend"
ops = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("siri::"))
missing = [n for n in ops if not torch._C._dispatch_has_kernel_for_dispatch_key(n, "CUDA")]
assert not missing, f"ops without a CUDA kernel: {missing}"
print(f"{len(ops)} ops, each with CPU and CUDA kernels: {', '.join(ops)}")
PYEOF
)
echo "check_cuda_extension: CUDA extension compiled, linked and imported"
