"""Packaging: the license, dependency ranges in pyproject.toml with one tested release of each
in constraints.txt, and the torch version check at ``import siri``."""
import hashlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import siri.version

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
#: md5 of the Apache License 2.0 text as apache.org publishes it (LICENSE-2.0.txt).
APACHE_2_0_MD5 = "3b83ef96387f14655fc854ddc3c6bd57"
#: Dependencies whose exact release is a technical requirement, not a tested point.
EXACT_ON_PURPOSE = {"antlr4-python3-runtime"}


def constraints() -> dict[str, Version]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", f"constraints.txt: {line!r} is not one exact release"
            pins[canonicalize_name(requirement.name)] = Version(spec.version)
    return pins


def requirements() -> list[Requirement]:
    project = PYPROJECT["project"]
    texts = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return [Requirement(text) for text in texts]


def test_the_license_is_apache_2_0_with_the_copyright_filled_in():
    text = (REPO / "LICENSE").read_text()
    assert "Copyright 2026 The siri authors" in text and "[yyyy]" not in text
    standard = text.replace("Copyright 2026 The siri authors", "Copyright [yyyy] [name of copyright owner]")
    assert hashlib.md5(standard.encode()).hexdigest() == APACHE_2_0_MD5
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]


def test_runtime_dependencies_are_ranges_and_constraints_pin_a_release_inside_each():
    pins = constraints()
    runtime = [Requirement(text) for text in PYPROJECT["project"]["dependencies"]]
    for requirement in runtime:
        name = canonicalize_name(requirement.name)
        exact = [s for s in requirement.specifier if s.operator == "=="]
        assert not exact or name in EXACT_ON_PURPOSE, f"{requirement}: a range, please (the tested release goes in " \
                                                      "constraints.txt)"
    bounds = {canonicalize_name(r.name): r.specifier for r in runtime}
    assert bounds["transformers"].contains("5.24.0") and not bounds["transformers"].contains("6.0.0")
    assert not bounds["transformers"].contains("5.23.0")
    assert bounds["math-verify"].contains("0.9.0") and not bounds["math-verify"].contains("1.0.0")
    for requirement in requirements():
        name = canonicalize_name(requirement.name)
        if name in pins:
            assert requirement.specifier.contains(pins[name], prereleases=True), \
                f"constraints.txt pins {name}=={pins[name]}, outside pyproject's {requirement}"
    for name in ("transformers", "math-verify", "antlr4-python3-runtime", "pybind11"):
        assert name in pins, f"constraints.txt has no tested release of {name}"
    assert "torch" not in pins  # chosen per machine: CPU or CUDA build


def test_the_minimum_torch_is_the_one_pyproject_states():
    (torch_requirement,) = [r for r in map(Requirement, PYPROJECT["project"]["dependencies"]) if r.name == "torch"]
    (spec,) = torch_requirement.specifier
    assert spec.operator == ">=" and Version(spec.version).release[:2] == siri.version.MIN_TORCH
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"  # transformers 5.24's own floor


def test_setup_and_ci_install_with_the_constraints():
    setup = (REPO / "scripts" / "setup_venv.sh").read_text()
    assert "constraints=(-c constraints.txt)" in setup
    assert setup.count('"${constraints[@]}"') == 2
    assert "cat pyproject.toml constraints.txt | sha1sum" in setup  # a new constraint reinstalls


@pytest.mark.parametrize("version", ["2.6.0", "2.6.0a0+git1234", "2.13.0+cpu", "2.14.1+cu130", "3.0.0", "10.1"])
def test_torch_new_enough_passes(version):
    siri.version.check_torch(version)


@pytest.mark.parametrize("version", ["2.5.1", "2.4.0+cu121", "1.13.1", "2.5.0rc1"])
def test_torch_too_old_fails_in_one_line_naming_both_versions(version):
    with pytest.raises(ImportError) as error:
        siri.version.check_torch(version)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"siri needs torch >= 2.6, but torch {version} is installed")


def test_an_unreadable_torch_version_is_named():
    with pytest.raises(ImportError, match="could not read the torch version 'nightly'; it needs torch >= 2.6"):
        siri.version.check_torch("nightly")


def test_the_check_reads_the_installed_torch(monkeypatch):
    siri.version.check_torch()
    monkeypatch.setattr(torch, "__version__", "2.5.1+cpu")
    with pytest.raises(ImportError, match=r"but torch 2\.5\.1\+cpu is installed"):
        siri.version.check_torch()


def test_import_siri_stops_before_the_extension_with_an_old_torch():
    code = ("import sys, torch\ntorch.__version__ = '2.5.1'\ntry:\n    import siri\nexcept ImportError as e:\n"
            "    print(e)\nprint('extension loaded:', 'siri._C' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "siri needs torch >= 2.6, but torch 2.5.1 is installed; install a newer torch "
        "(then rebuild siri: pip install --no-build-isolation .)", "extension loaded: False"]
