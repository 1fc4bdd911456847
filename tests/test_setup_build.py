"""`scripts/setup_venv.sh` (what `make setup` runs) in a fresh clone, with broken `cmake` and
`ninja` first on PATH: it must build siri with the build tools it installs into the venv, and
a second run must recompile nothing.

SLOW: about 2.5 minutes on 2 CPU cores (a new venv, torch and siri's dependencies installed
into it from pip, the extension compiled from scratch). Marked `slow`; deselect with
`-m "not slow"`. Needs git and the package index pip is configured with; torch is the CPU
wheel torch==2.13.0.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                       reason="needs git and a git checkout of siri to clone"),
]

BROKEN_TOOL = '#!/bin/sh\necho "$0: broken stand-in first on PATH, the build must not use it" >&2\nexit 1\n'


def run_setup(clone: Path, env: dict) -> str:
    """Run scripts/setup_venv.sh in `clone`; its stdout, asserting it succeeded."""
    result = subprocess.run(["bash", "scripts/setup_venv.sh"], cwd=clone, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, f"setup_venv.sh failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def cache_entry(cache: str, name: str) -> Path:
    """The path stored under `name` in `cache`, the text of a CMakeCache.txt."""
    match = re.search(rf"^{re.escape(name)}:\w+=(.*)$", cache, re.MULTILINE)
    assert match, f"{name} not in CMakeCache.txt"
    return Path(match.group(1)).resolve()


def test_setup_venv_uses_venv_build_tools_and_rebuilds_nothing(tmp_path):
    clone = tmp_path / "siri"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    broken_bin = tmp_path / "broken-bin"
    broken_bin.mkdir()
    for tool in ("cmake", "ninja"):
        (broken_bin / tool).write_text(BROKEN_TOOL)
        (broken_bin / tool).chmod(0o755)
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.update(PATH=f"{broken_bin}{os.pathsep}{env['PATH']}", VENV=str(venv),
               PYTHON=sys.executable, TORCH_SPEC="torch==2.13.0")

    out = run_setup(clone, env)
    assert "[setup] siri" in out
    (build_dir,) = (clone / "build").glob("cmake-*")
    cache = (build_dir / "CMakeCache.txt").read_text()
    # The venv's own tools, and pybind11's CMake package found by the first build already
    # (a build that falls back to torch's headers and a later one that finds pybind11
    # compile with different include paths).
    for name in ("CMAKE_COMMAND", "CMAKE_MAKE_PROGRAM", "pybind11_DIR"):
        assert cache_entry(cache, name).is_relative_to(venv.resolve()), name
    # The test probes (a module of their own, not part of siri._C) are built beside the tests.
    assert list((clone / "tests").glob("_siri_probes*.so")), "the build wrote no tests/_siri_probes module"
    objects = {path: path.stat().st_mtime_ns for path in build_dir.rglob("*.o")}
    assert objects, f"no object files under {build_dir}"

    out = run_setup(clone, env)
    assert "[setup] siri" in out
    recompiled = [str(path) for path, mtime in objects.items() if path.stat().st_mtime_ns != mtime]
    assert not recompiled, f"the second run recompiled {recompiled}"
    assert set(build_dir.rglob("*.o")) == set(objects)
