#!/usr/bin/env bash
# Create (or reuse) the local virtualenv .venv and install siri into it, editable, with the
# C++ extension built against the torch in that venv. Safe to re-run: a second run only
# rebuilds what changed. Every package but torch is installed at the release constraints.txt
# names (pip -c), so a fresh venv holds what CI tested.
#   TORCH_SPEC   torch to install when the venv has none (default torch==2.13.0, the CPU wheel
#                CI tests with; on a GPU machine install your CUDA torch first)
#   VENV         venv directory (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
PYTHON="${PYTHON:-python3}"
PIP_QUIET=(-q --disable-pip-version-check)

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[setup] creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
py="$VENV/bin/python"
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "[setup] siri needs Python >= 3.11 (transformers 5.24 does); $VENV has $("$py" -V 2>&1)." \
       "Remove $VENV and run again with PYTHON=python3.11 (or newer)" >&2
  exit 1
fi

if ! "$py" -c "import torch" 2>/dev/null; then
  echo "[setup] installing $TORCH_SPEC"
  "$py" -m pip install "${PIP_QUIET[@]}" "$TORCH_SPEC"
fi
# Build tools and runtime/test dependencies first, so the --no-build-isolation build finds
# them and pip never resolves a second torch. The build tools (the [build] extra) get a pip
# call of their own: in the call that builds siri they would arrive only after the build.
constraints=(-c constraints.txt)
stamp="$VENV/.siri-deps-$(cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)"
if [[ ! -f "$stamp" ]]; then
  echo "[setup] installing build tools"
  reqs="$("$py" -c '
import tomllib
with open("pyproject.toml", "rb") as f:
    print(*tomllib.load(f)["project"]["optional-dependencies"]["build"], sep="\n")
')"
  mapfile -t build_reqs <<<"$reqs"
  "$py" -m pip install "${PIP_QUIET[@]}" "${constraints[@]}" "setuptools>=77" wheel "${build_reqs[@]}"
  echo "[setup] installing runtime and test dependencies, building siri"
  "$py" -m pip install "${PIP_QUIET[@]}" "${constraints[@]}" --no-build-isolation -e ".[build,test,trl]"
  touch "$stamp"
else
  echo "[setup] dependencies up to date; rebuilding the extension if sources changed"
  "$py" -m pip install "${PIP_QUIET[@]}" --no-build-isolation --no-deps -e .
fi
"$py" -c "import siri; info = siri.build_info(); print('[setup] siri', info['version'], 'backends:', ', '.join(info['backends']))"
