# Quickstart targets. Each one creates or reuses .venv and installs what it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup test coverage lint demo bench sanitize cuda-check cuda-ext-check gpu-suite gpu-wheels clean

setup:
	bash scripts/setup_venv.sh

## the main job: SIRI vs a fixed-cap baseline in miniature (offline, CPU or GPU), in siri-demo/
demo: setup
	$(VENV)/bin/siri demo --out siri-demo

## the test suite (CPU; CUDA tests run too when the build has CUDA and a GPU is visible), under
## coverage.py with subprocesses measured too; `make coverage` then reports and gates
test: setup
	rm -rf build/coverage && mkdir -p build/coverage
	$(PY) -m coverage run -m pytest -q tests

## the siri/ lines `make test` never executed, per file, and the gate: >= 95% executed, at most
## 100 lines marked GPU-only (`# gpu-only: <test>`), every marker naming an existing test
coverage:
	$(PY) -m coverage combine -q --keep
	$(PY) scripts/coverage_gate.py --data build/coverage/.coverage --min 95 --max-gpu-only 100

## static checks: ruff (pyflakes + bugbear, [tool.ruff] in pyproject.toml) and mypy (the files in
## [tool.mypy]). Installs nothing heavy: only ruff and mypy, when `make setup` has not already
lint:
	test -x $(VENV)/bin/ruff -a -x $(VENV)/bin/mypy || { test -x $(PY) || python3 -m venv $(VENV); \
		$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt "ruff~=0.17.6" "mypy~=2.4.1"; }
	$(VENV)/bin/ruff check siri tests benchmarks scripts
	$(VENV)/bin/mypy

## every kernel benchmark, CPU, in one process each
bench: setup
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

## AddressSanitizer + UBSan build of the CPU extension, op tests against it (build/sanitize-pkg)
sanitize: setup
	bash scripts/check_sanitizers.sh $(abspath $(PY))

## nvcc compile check of every CUDA kernel file for sm_80, sm_90a, sm_100 (+ PTX), then the
## ptxas registers/spills table for sm_90 with its budget check (no GPU needed)
cuda-check:
	bash scripts/check_cuda_compile.sh "80;90a;100"
	python3 scripts/cuda_resource_usage.py --arch sm_90

## on a GPU machine: CUDA build + all tests + benchmarks, results in bench_results/
gpu-suite:
	bash scripts/gpu_suite.sh

## here, before a GPU run: .whl/ gets the pinned wheels the GPU machine lacks (about 14 MiB)
gpu-wheels: setup
	$(PY) scripts/gpu_wheels.py --baselines

clean:
	rm -rf build *.egg-info siri/_C*.so tests/_siri_probes*.so

## compile + link + import the whole extension with CUDA (bindings too) on a CPU-only
## machine, against a CUDA torch in .venv-cuda (about 5.5 GB, installed on first use)
cuda-ext-check:
	test -x .venv-cuda/bin/python || python3 -m venv .venv-cuda
	.venv-cuda/bin/python -c "import torch, pybind11, yaml, rich" 2>/dev/null || .venv-cuda/bin/pip install -q torch==2.14.1 ninja cmake pybind11==3.0.4 numpy pyyaml rich
	bash scripts/check_cuda_extension.sh .venv-cuda
