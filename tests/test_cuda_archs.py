"""SIRI_CUDA_ARCHS as users write it (cmake/siri_cuda_archs.cmake, run in CMake's script mode,
no GPU or CUDA needed): every spelling maps to CMake's and torch's, the newest portable
architecture embeds PTX, and a spelling that is not an architecture fails naming it."""
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CMAKE = shutil.which("cmake")
pytestmark = pytest.mark.skipif(CMAKE is None, reason="cmake is not on PATH (it ships with the build extra)")


def normalize(archs):
    out = subprocess.run([CMAKE, f"-DSIRI_ARCHS={archs}", "-P", str(REPO / "cmake" / "siri_cuda_archs.cmake")],
                         capture_output=True, text=True, timeout=60)
    fields = dict(line.split("=", 1) for line in out.stderr.splitlines() if line.startswith(("cmake=", "torch=")))
    return out.returncode, fields, out.stderr


@pytest.mark.parametrize("spelling", ["90a", "9.0a", "sm_90a", "SM_90A", "compute_90a"])
def test_hopper_arch_specific_spellings(spelling):
    code, fields, err = normalize(f"80;{spelling}")
    assert code == 0, err
    assert fields == {"cmake": "80;90a", "torch": "8.0+PTX;9.0a"}


@pytest.mark.parametrize("archs, cmake, torch", [
    ("80;90;100", "80;90;100", "8.0;9.0;10.0+PTX"),          # the default: PTX for Blackwell and newer
    ("80,sm_90a,10.0", "80;90a;100", "8.0;9.0a;10.0+PTX"),   # what CI builds
    ("sm_100a;9.0", "100a;90", "10.0a;9.0+PTX"),             # arch-specific 100a has no portable PTX
    ("90;9.0;sm_90", "90", "9.0+PTX"),
    ("120", "120", "12.0+PTX"),
    ("100f", "100f", "10.0f"),
])
def test_lists_and_the_ptx_arch(archs, cmake, torch):
    code, fields, err = normalize(archs)
    assert code == 0, err
    assert fields == {"cmake": cmake, "torch": torch}


def test_only_arch_specific_targets_warn_that_no_ptx_is_embedded():
    code, fields, err = normalize("90a")
    assert code == 0 and fields == {"cmake": "90a", "torch": "9.0a"}
    assert "no PTX" in err


@pytest.mark.parametrize("bad", ["9.x", "hopper", "sm_", "0", ""])
def test_a_spelling_that_is_not_an_architecture_fails_naming_it(bad):
    code, _, err = normalize(bad)
    assert code != 0
    assert "SIRI_CUDA_ARCHS" in err and (bad in err or "empty" in err)
