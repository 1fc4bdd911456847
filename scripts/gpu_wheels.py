"""Fill .whl/ with the wheels the GPU machine needs and cannot download (it has no network).

The GPU machine's image has torch, tokenizers, safetensors, numpy, pyyaml, rich, matplotlib,
pytest, hypothesis, cmake, ninja and pybind11, but not siri's exact pins: transformers (the
image has another release), math-verify and what math-verify pins in turn. This script
downloads every exact (``==``) pin of siri's runtime dependencies in pyproject.toml, then the
exact pins those wheels declare, recursively, for CPython 3.12 on manylinux x86-64 (the GPU
machine's Python). ``--baselines`` adds the kernel libraries the benchmarks compare with
when they fit the transfer limit (liger-kernel; flashinfer's wheels are over 100 MB).

    python scripts/gpu_wheels.py              # about 15 MB into .whl/
    python scripts/gpu_wheels.py --baselines  # and liger-kernel
    python scripts/gpu_wheels.py --list       # print the requirements, download nothing
    python scripts/gpu_wheels.py --check      # on the GPU machine: are siri's pins installed?

benchmarks/gpu_suite.sh installs whatever .whl/ holds (``--no-index --no-deps``) before it
builds siri. .whl/ is git-ignored, so a device run must name it in ``carry``.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import zipfile

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the TOML reader pip vendors
    from pip._vendor import tomli as tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The GPU machine: CPython 3.12 on x86-64 Linux (glibc 2.28 or newer).
TARGET = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:",
          "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
          "--platform", "manylinux2014_x86_64"]
#: Optional baselines that fit the device tool's 64 MiB working-tree limit.
BASELINES = ["liger-kernel"]
#: A requirement pinned to one release, with no environment marker: "name==version".
EXACT_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9.+!-]+)\s*$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def exact_pins(requirements: list[str]) -> dict[str, str]:
    """``{canonical name: version}`` of the requirements pinned with ``==`` (no markers, extras
    or ranges: those the image's own packages are trusted to satisfy)."""
    pins = {}
    for requirement in requirements:
        match = EXACT_PIN.match(requirement)
        if match:
            pins[canonical(match[1])] = match[2]
    return pins


def project_pins(pyproject: Path = REPO / "pyproject.toml") -> dict[str, str]:
    return exact_pins(tomllib.loads(pyproject.read_text())["project"]["dependencies"])


def wheel_requirements(wheel: Path) -> list[str]:
    """The ``Requires-Dist`` lines of a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        text = archive.read(metadata).decode()
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def downloaded(dest: Path) -> dict[str, list[Path]]:
    """``{canonical name: its wheels}`` in ``dest`` (more than one: several releases)."""
    wheels: dict[str, list[Path]] = {}
    for wheel in sorted(dest.glob("*.whl")):
        wheels.setdefault(canonical(wheel.name.split("-")[0]), []).append(wheel)
    return wheels


def download(requirements: list[str], dest: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", *TARGET, "-d", str(dest), *requirements]
    if subprocess.run(cmd).returncode != 0:
        sys.exit(f"gpu_wheels.py: pip could not download {' '.join(requirements)} for the GPU machine "
                 "(CPython 3.12, manylinux x86-64); is a package index reachable?")


def fetch(pins: dict[str, str], extra: list[str], dest: Path) -> list[Path]:
    """Downloads the pins, the extra requirements and, recursively, the exact pins the
    downloaded wheels declare; returns the wheels, one per package."""
    dest.mkdir(parents=True, exist_ok=True)
    wanted, queue = dict(pins), [f"{name}=={version}" for name, version in pins.items()] + extra
    while queue:
        download(queue, dest)
        queue = []
        for wheel in (w for releases in downloaded(dest).values() for w in releases):
            for name, version in exact_pins(wheel_requirements(wheel)).items():
                if name not in wanted:
                    wanted[name] = version
                    queue.append(f"{name}=={version}")
    have = downloaded(dest)
    stale = [w for name, releases in have.items() for w in releases
             if len(releases) > 1 or (name in wanted and f"-{wanted[name]}-" not in w.name)]
    if stale:
        sys.exit(f"gpu_wheels.py: {dest} holds other releases of the packages it fetches "
                 f"({', '.join(w.name for w in stale)}); remove them: the suite installs every wheel there, "
                 "and two releases of one package stop the install")
    return [releases[0] for _, releases in sorted(have.items())]


def check_installed(pins: dict[str, str]) -> list[str]:
    """One line per pin whose installed version differs (or that is not installed)."""
    from importlib import metadata

    problems = []
    for name, version in pins.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            problems.append(f"{name}: siri pins {version}, installed {installed or 'nothing'}")
    return problems


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dest", type=Path, default=REPO / ".whl", help="where the wheels go (default: .whl/)")
    p.add_argument("--baselines", action="store_true", help=f"also download {', '.join(BASELINES)}")
    p.add_argument("--list", action="store_true", help="print siri's exact pins and download nothing")
    p.add_argument("--check", action="store_true",
                   help="check that this Python has siri's exact pins installed (exit 1 if not)")
    args = p.parse_args()
    pins, extra = project_pins(), BASELINES if args.baselines else []
    if args.check:
        problems = check_installed(pins)
        for problem in problems:
            print(problem)
        if problems:
            sys.exit("gpu_wheels.py: siri's pinned dependencies are not what is installed; on the development "
                     "machine run `make gpu-wheels` and carry .whl/ with the run")
        print(f"siri's {len(pins)} exact pins are installed: {', '.join(f'{n}=={v}' for n, v in pins.items())}")
        return
    if args.list:
        for requirement in [f"{name}=={version}" for name, version in pins.items()] + extra:
            print(requirement)
        print("(and the exact pins these wheels declare)")
        return
    wheels = fetch(pins, extra, args.dest)
    total = sum(w.stat().st_size for w in wheels)
    for wheel in wheels:
        print(f"  {wheel.stat().st_size / 2**20:6.1f} MiB  {wheel.name}")
    print(f"{len(wheels)} wheels, {total / 2**20:.1f} MiB in {args.dest}; a device run carries it with carry=['.whl']")
    if total > 60 * 2**20:
        print("warning: over 60 MiB; the device tool moves at most 64 MiB of working tree per call", file=sys.stderr)


if __name__ == "__main__":
    main()
