#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer run of the op tests.
#
# Builds the CPU extension with SIRI_SANITIZE=1 into build/sanitize-pkg/siri (next to a copy of
# the Python package, so the normal build in siri/ is untouched) and the test probes into
# build/sanitize-pkg/probes (SIRI_PROBES_DIR: the tests' conftest imports them from there, not
# the normal build's tests/_siri_probes), then runs the op test files against them with libasan
# preloaded (python itself is not instrumented). Any ASan report or UBSan finding aborts the run
# with a non-zero status. The build keeps -march=native, so the
# SIMD paths it checks (AVX-512, the AVX512-BF16 attention) are the ones the normal build runs.
#   usage: scripts/check_sanitizers.sh [python] [test files...]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
py="${1:-$root/.venv/bin/python}"
shift || true
tests=("$@")
if [[ ${#tests[@]} -eq 0 ]]; then
  tests=(tests/test_group_advantages.py tests/test_logprobs.py tests/test_grpo_loss.py tests/test_sampling.py
         tests/test_paged_attention.py tests/test_paged_attention_run.py tests/test_rotary.py
         tests/test_header_math.py tests/test_cuda_kernel_math.py)
  [[ -f tests/test_properties.py ]] && tests+=(tests/test_properties.py)
fi
pkg="$root/build/sanitize-pkg"
rm -rf "$pkg"
mkdir -p "$pkg"
echo "[sanitize] building the extension with -fsanitize=address,undefined"
export SIRI_PROBES_DIR="$pkg/probes"
SIRI_SANITIZE=1 SIRI_CUDA=0 "$py" setup.py -q build_ext --build-lib "$pkg" > "$root/build/sanitize-build.log" 2>&1 ||
  { tail -50 "$root/build/sanitize-build.log"; exit 1; }
(cd siri && find . -name '*.py' -o -name '*.yaml' | while read -r f; do
  mkdir -p "$pkg/siri/$(dirname "$f")"; cp -L "$f" "$pkg/siri/$f"; done)
# libstdc++ is preloaded too: ASan's __cxa_throw interceptor needs it present at start-up
# (python does not link it), else the first C++ exception aborts in the interceptor
export LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libstdc++.so)"
# leaks: CPython and torch keep allocations alive at exit by design
# Reports go to files: pytest captures stderr, and an abort would lose them.
logs="$root/build/sanitize-logs"
rm -rf "$logs"; mkdir -p "$logs"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:detect_odr_violation=0:log_path=$logs/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$logs/ubsan"
export OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE
cd "$pkg"   # sys.path[0] is the cwd: `import siri` must find the sanitized copy
"$py" -c "import siri, sys; assert siri.__file__.startswith('$pkg'), siri.__file__; print('[sanitize] testing', siri.__file__)"
"$py" -c "import sys; sys.path.insert(0, '$SIRI_PROBES_DIR'); import _siri_probes as p; assert p.__file__.startswith('$pkg'), p.__file__"
status=0
"$py" -m pytest -q -p no:cacheprovider --rootdir "$root" "${tests[@]/#/$root/}" || status=$?
if compgen -G "$logs/*" > /dev/null; then
  echo "[sanitize] sanitizer reports:"; cat "$logs"/*; exit 1
fi
[[ $status -eq 0 ]] || { echo "[sanitize] tests failed (status $status)"; exit "$status"; }
echo "[sanitize] no ASan/UBSan findings"
