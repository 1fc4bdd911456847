"""scripts/gpu_wheels.py without a network: which requirements it pins, the recursion over the
exact pins of downloaded wheels, and its refusal of a .whl/ holding two releases of a package."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import gpu_wheels  # noqa: E402


def make_wheel(dest: Path, name: str, version: str, requires: list[str]) -> Path:
    wheel = dest / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    metadata = "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{name.replace('-', '_')}-{version}.dist-info/METADATA",
                         f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{metadata}")
    return wheel


def test_only_exact_unconditional_pins_count():
    pins = gpu_wheels.exact_pins(["transformers==5.24.0", "numpy>=1.17", "torch", "foo ==1.2 ; python_version<'3.5'",
                                  "Latex2Sympy2_Extended==1.11.0", "bar[extra]==2.0", "baz<3,>=1"])
    assert pins == {"transformers": "5.24.0", "latex2sympy2-extended": "1.11.0"}


def test_the_project_pins_are_pyprojects():
    dependencies = gpu_wheels.tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = gpu_wheels.project_pins()
    assert "transformers" in pins
    assert {f"{name}=={version}" for name, version in pins.items()} == \
        {gpu_wheels.canonical(d.split("==")[0]) + "==" + d.split("==")[1] for d in dependencies if "==" in d}


def test_list_prints_the_pins_and_downloads_nothing(tmp_path):
    out = subprocess.run([sys.executable, "scripts/gpu_wheels.py", "--list", "--baselines", "--dest", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [f"{n}=={v}" for n, v in gpu_wheels.project_pins().items()] + gpu_wheels.BASELINES == lines[:-1]
    assert not list(tmp_path.iterdir())


class FakeIndex:
    """Stands in for pip download: each requirement 'name==version' becomes a wheel that
    declares `requires[name]`."""

    def __init__(self, requires: dict[str, list[str]]):
        self.requires, self.calls = requires, []

    def __call__(self, requirements, dest):
        self.calls.append(list(requirements))
        for requirement in requirements:
            name, _, version = requirement.partition("==")
            make_wheel(dest, name, version or "9.9", self.requires.get(name, []))


def test_fetch_follows_exact_pins_of_downloaded_wheels(tmp_path, monkeypatch):
    index = FakeIndex({"math-verify": ["latex2sympy2_extended==1.11.0"],
                       "latex2sympy2-extended": ["sympy", "antlr4-python3-runtime<=4.13.2,>=4.9.3"],
                       "transformers": ["numpy>=1.17", "tokenizers<0.24.0,>=0.23.1"]})
    monkeypatch.setattr(gpu_wheels, "download", index)
    wheels = gpu_wheels.fetch({"transformers": "5.24.0", "math-verify": "0.9.0"}, ["liger-kernel"], tmp_path)
    assert [w.name.split("-")[0] for w in wheels] == ["latex2sympy2_extended", "liger_kernel", "math_verify",
                                                      "transformers"]
    assert index.calls == [["transformers==5.24.0", "math-verify==0.9.0", "liger-kernel"],
                           ["latex2sympy2-extended==1.11.0"]]


def test_fetch_refuses_two_releases_of_a_pinned_package(tmp_path, monkeypatch):
    make_wheel(tmp_path, "transformers", "5.17.0", [])
    monkeypatch.setattr(gpu_wheels, "download", FakeIndex({}))
    with pytest.raises(SystemExit, match="other releases of the packages it fetches .*transformers-5.17.0"):
        gpu_wheels.fetch({"transformers": "5.24.0"}, [], tmp_path)


def test_check_names_each_pin_that_is_not_installed():
    from importlib import metadata

    pytest_version = metadata.version("pytest")
    assert gpu_wheels.check_installed({"pytest": pytest_version}) == []
    assert gpu_wheels.check_installed({"pytest": "0.0.1", "no-such-package-for-siri": "1.0"}) == [
        f"pytest: siri pins 0.0.1, installed {pytest_version}",
        "no-such-package-for-siri: siri pins 1.0, installed nothing"]


def test_check_passes_where_the_pins_are_installed():
    out = subprocess.run([sys.executable, "scripts/gpu_wheels.py", "--check"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "exact pins are installed: transformers==" in out.stdout
