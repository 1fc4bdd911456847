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
    """A wheel whose METADATA declares `requires`, and whose description mentions a pin that is
    not a requirement."""
    wheel = dest / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    metadata = "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{name.replace('-', '_')}-{version}.dist-info/METADATA",
                         f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{metadata}\n"
                         "Requires-Dist: described==1.0\n")
    return wheel


def test_pins_are_single_exact_releases_that_apply_on_the_gpu_machine():
    pins = gpu_wheels.exact_pins(["transformers==5.24.0", "numpy>=1.17", "torch", "old ==1.2 ; python_version<'3.5'",
                                  "new==3.1; python_version>='3.8' and sys_platform=='linux'",
                                  "windows==1.0; sys_platform=='win32'", "tests==1.0; extra=='test'",
                                  "Latex2Sympy2_Extended==1.11.0", "bar[extra]==2.0", "legacy (==0.4)",
                                  "wild==1.*", "baz<3,>=1"])
    assert pins == {"transformers": "5.24.0", "new": "3.1", "latex2sympy2-extended": "1.11.0", "bar": "2.0",
                    "legacy": "0.4"}


def test_the_carried_releases_are_the_constraints():
    pins = gpu_wheels.project_pins()
    assert list(pins) == ["transformers", "math-verify", "antlr4-python3-runtime"]
    lines = (REPO / "constraints.txt").read_text().splitlines()
    assert {f"{name}=={version}" for name, version in pins.items()} <= {line.strip().lower() for line in lines}


def test_constraint_lines_skip_comments_and_a_missing_carried_release_is_named(tmp_path):
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("# tested\n\nTransformers==5.24.0  # runtime\nnumpy>=1\nmath_verify==0.9.0\n")
    assert gpu_wheels.constraint_pins(constraints) == {"transformers": "5.24.0", "math-verify": "0.9.0"}
    with pytest.raises(SystemExit, match="constraints.txt pins no release of antlr4-python3-runtime"):
        gpu_wheels.project_pins(constraints)


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
        "no-such-package-for-siri: siri pins 1.0, installed nothing",
        f"pytest: siri pins 0.0.1, installed {pytest_version}"]


def test_check_passes_where_the_pins_are_installed():
    out = subprocess.run([sys.executable, "scripts/gpu_wheels.py", "--check"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "tested releases are installed: transformers==" in out.stdout


def test_fetch_accepts_equal_versions_and_follows_only_what_it_fetches(tmp_path, monkeypatch):
    make_wheel(tmp_path, "unrelated", "1.0", ["stray==2.0"])  # kept, not followed
    index = FakeIndex({"math-verify": ["latex2sympy2_extended==1.11"]})
    monkeypatch.setattr(gpu_wheels, "download", lambda requirements, dest: index(
        [r.replace("1.11", "1.11.0") for r in requirements], dest))  # the index names it 1.11.0
    wheels = gpu_wheels.fetch({"math-verify": "0.9.0"}, [], tmp_path)
    assert [w.name for w in wheels] == ["latex2sympy2_extended-1.11.0-py3-none-any.whl",
                                        "math_verify-0.9.0-py3-none-any.whl", "unrelated-1.0-py3-none-any.whl"]
    assert index.calls == [["math-verify==0.9.0"], ["latex2sympy2-extended==1.11.0"]]


def test_fetch_refuses_conflicting_pins(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_wheels, "download", FakeIndex({"math-verify": ["transformers==5.0.0"]}))
    with pytest.raises(SystemExit, match="pins transformers==5.0.0, but transformers==5.24.0 is pinned too"):
        gpu_wheels.fetch({"transformers": "5.24.0", "math-verify": "0.9.0"}, [], tmp_path)


def test_check_follows_the_requirements_of_pinned_packages(tmp_path, monkeypatch):
    from importlib import metadata

    pytest_version = metadata.version("pytest")
    for name, requires in {"pinned-top": [f"pytest=={pytest_version}", "pluggy>=0.1", "hypothesis>=999",
                                          "never-installed>=1; python_version<'3'", "missing-dep"],
                           "pinned-sub": []}.items():
        info = tmp_path / f"{name.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        lines = "".join(f"Requires-Dist: {r}\n" for r in requires)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n{lines}")
    monkeypatch.syspath_prepend(str(tmp_path))
    hypothesis_version = metadata.version("hypothesis")
    assert gpu_wheels.check_installed({"pinned-top": "1.0", "pinned-sub": "1.0"}) == [
        f"hypothesis: pinned-top 1.0 needs hypothesis>=999, installed {hypothesis_version}",
        "missing-dep: pinned-top 1.0 needs missing-dep, installed nothing"]
