#!/usr/bin/env bash
# Compile every CUDA kernel file (csrc/cuda/*.cu) with nvcc for each target architecture,
# without torch and without a GPU. Kernel files include only CUDA and csrc/include headers,
# so this covers all kernel bodies. Usage: scripts/check_cuda_compile.sh [ARCHS]  (default "80;90;100")
set -euo pipefail
cd "$(dirname "$0")/.."

NVCC="${NVCC:-}"
if [[ -z "$NVCC" ]]; then
  for candidate in "${CUDA_HOME:-}/bin/nvcc" /usr/local/cuda/bin/nvcc "$(command -v nvcc || true)"; do
    if [[ -n "$candidate" && -x "$candidate" ]]; then NVCC="$candidate"; break; fi
  done
fi
if [[ -z "$NVCC" ]]; then
  echo "check_cuda_compile: nvcc not found (set CUDA_HOME or NVCC)" >&2
  exit 2
fi

ARCHS="${1:-${SIRI_CUDA_ARCHS:-80;90;100}}"
# the build's own spelling rules (cmake/siri_cuda_archs.cmake): 90, 9.0, sm_90, 90a, ...; the
# newest portable arch also gets PTX, as in the real build
CMAKE="${CMAKE:-$(command -v cmake || echo .venv/bin/cmake)}"
normalized="$("$CMAKE" -DSIRI_ARCHS="$ARCHS" -P cmake/siri_cuda_archs.cmake 2>&1)" || { echo "$normalized" >&2; exit 2; }
cmake_archs="$(sed -n 's/^cmake=//p' <<<"$normalized")"
torch_archs="$(sed -n 's/^torch=//p' <<<"$normalized")"
gencode=()
ptx_note=""
for arch in ${cmake_archs//;/ }; do gencode+=("-gencode=arch=compute_${arch},code=sm_${arch}"); done
for entry in ${torch_archs//;/ }; do
  if [[ $entry == *+PTX ]]; then
    ptx="${entry%+PTX}"; ptx="${ptx/./}"
    gencode+=("-gencode=arch=compute_${ptx},code=compute_${ptx}")
    ptx_note=" + compute_${ptx} PTX"
  fi
done
ARCHS="$cmake_archs"

out_dir="$(mktemp -d)"
trap 'rm -rf "$out_dir"' EXIT
"$NVCC" --version | tail -n 2
status=0
shopt -s nullglob
files=(csrc/cuda/*.cu)
if (( ${#files[@]} == 0 )); then echo "check_cuda_compile: no .cu files found" >&2; exit 2; fi
for file in "${files[@]}"; do
  start=$(date +%s)
  if "$NVCC" -std=c++17 -O3 -Icsrc/include -Icsrc "${gencode[@]}" \
       -Werror=all-warnings -c "$file" -o "$out_dir/$(basename "$file").o"; then
    echo "PASS  $file  (sm_${ARCHS//[;,]/, sm_}${ptx_note}; $(( $(date +%s) - start ))s)"
  else
    echo "FAIL  $file" >&2
    status=1
  fi
done
if (( status == 0 )); then
  echo "check_cuda_compile: all ${#files[@]} CUDA kernel files compiled for sm_${ARCHS//[;,]/ and sm_}${ptx_note}"
fi
exit $status
