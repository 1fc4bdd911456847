"""Shared test fixtures. CUDA variants of every op test are parametrised here and skip
with a stated reason when the build has no CUDA kernels or no device is visible.

The test probes of the kernel headers are the module _siri_probes (bindings/probes), which the
build writes into this directory (on sys.path for the tests: ``import _siri_probes``), or into
SIRI_PROBES_DIR when that is set (the sanitizer build's): that directory is searched first."""
import os
import sys

import pytest
import torch

import siri

if os.environ.get("SIRI_PROBES_DIR"):
    sys.path.insert(0, os.path.abspath(os.environ["SIRI_PROBES_DIR"]))


def _cuda_skip_reason():
    if not siri.has_cuda_kernels():
        return "siri was built without CUDA kernels (CPU-only torch or no nvcc)"
    if not torch.cuda.is_available():
        return "no CUDA device visible"
    return None


CUDA_SKIP_REASON = _cuda_skip_reason()
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.gpu,
                                pytest.mark.skipif(CUDA_SKIP_REASON is not None,
                                                   reason=CUDA_SKIP_REASON or "")]),
]


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture
def gen():
    """A torch.Generator with a fresh seed per test, printed on failure for reproduction."""
    seed = torch.randint(0, 2**31 - 1, ()).item()
    g = torch.Generator().manual_seed(seed)
    print(f"generator seed: {seed}")
    return g


@pytest.fixture(scope="session")
def workspace(tmp_path_factory):
    """A saved tiny model, a jsonl dataset and a 6-step cosine-cap config (training_run.py)."""
    from training_run import make_workspace

    return make_workspace(tmp_path_factory.mktemp("trainer"))


@pytest.fixture(scope="session")
def uninterrupted(workspace):
    """The workspace config trained to the end in one `python -m siri train` process."""
    from training_run import run_cli

    run_dir = workspace / "uninterrupted"
    run_cli(workspace, run_dir)
    return run_dir
