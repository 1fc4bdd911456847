"""Fill .whl/ with the wheels the GPU machine needs and cannot download (it has no network).

The GPU machine's image has torch, tokenizers, safetensors, numpy, pyyaml, rich, matplotlib,
pytest, hypothesis, cmake, ninja and pybind11, but not the tested releases of the packages in
:data:`CARRIED`: transformers (the image has another release), math-verify and the antlr
runtime. This script downloads those at the releases constraints.txt names (the versions CI
tests), then the exact (``==``) pins those wheels declare, recursively, for CPython 3.12 on
manylinux x86-64 (the GPU machine's Python). ``--baselines`` adds the kernel libraries the
benchmarks compare with when they fit the transfer limit (liger-kernel; flashinfer's wheels
are over 100 MB).

    python scripts/gpu_wheels.py              # 13 MiB into .whl/
    python scripts/gpu_wheels.py --baselines  # and liger-kernel
    python scripts/gpu_wheels.py --list       # print the requirements, download nothing
    python scripts/gpu_wheels.py --check      # on the GPU machine: are those releases installed?

scripts/gpu_suite.sh installs whatever .whl/ holds (``--no-index --no-deps``) before it
builds siri. .whl/ is git-ignored: copy it to the GPU machine with the source tree.
"""
from __future__ import annotations

import argparse
import email.parser
import subprocess
import sys
import zipfile

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name, parse_wheel_filename
    from packaging.version import Version
except ModuleNotFoundError:  # packaging comes with transformers; pip vendors it too
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename
    from pip._vendor.packaging.version import Version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The tested release of every dependency (pip's constraints format).
CONSTRAINTS = REPO / "constraints.txt"
#: siri's runtime dependencies whose tested release the GPU machine's image lacks.
CARRIED = ["transformers", "math-verify", "antlr4-python3-runtime"]
#: The GPU machine: CPython 3.12 on x86-64 Linux (glibc 2.28 or newer).
TARGET = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:",
          "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
          "--platform", "manylinux2014_x86_64"]
#: Optional baselines that fit a 64 MiB transfer: liger-kernel for the loss benchmark, TRL (and its
#: accelerate) for bench_vs_trl.py.
BASELINES = ["liger-kernel", "trl", "accelerate"]
#: The GPU machine's environment markers (requirements whose markers exclude it are not followed).
TARGET_MARKERS = {"python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
                  "platform_python_implementation": "CPython", "os_name": "posix", "sys_platform": "linux",
                  "platform_system": "Linux", "platform_machine": "x86_64"}


def exact_pins(requirements: list[str], markers: dict | None = None) -> dict[str, str]:
    """``{canonical name: version}`` of the requirements pinned to one release (``==``, no
    wildcard) that apply under ``markers`` (default: the GPU machine's; ``{}``: this Python's;
    never an extra's); ranges are left to the image's own packages and checked by
    :func:`check_installed` there."""
    pins = {}
    for text in requirements:
        requirement = Requirement(text)
        environment = {**(TARGET_MARKERS if markers is None else markers), "extra": ""}
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        specs = list(requirement.specifier)
        if len(specs) == 1 and specs[0].operator == "==" and not specs[0].version.endswith("*"):
            pins[canonicalize_name(requirement.name)] = specs[0].version
    return pins


def constraint_pins(path: Path = CONSTRAINTS) -> dict[str, str]:
    """``{canonical name: version}`` of a constraints file's ``==`` lines (comments and blank
    lines skipped)."""
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return exact_pins([line for line in lines if line])


def project_pins(path: Path = CONSTRAINTS) -> dict[str, str]:
    """The releases to carry: :data:`CARRIED` at the versions ``path`` pins."""
    pins = constraint_pins(path)
    missing = [name for name in CARRIED if canonicalize_name(name) not in pins]
    if missing:
        sys.exit(f"gpu_wheels.py: {path.name} pins no release of {', '.join(missing)}; add `name==version` lines")
    return {canonicalize_name(name): pins[canonicalize_name(name)] for name in CARRIED}


def wheel_requirements(wheel: Path) -> list[str]:
    """The ``Requires-Dist`` headers of a wheel's METADATA (not lines of its description)."""
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        text = archive.read(metadata).decode()
    return email.parser.Parser().parsestr(text, headersonly=True).get_all("Requires-Dist") or []


def downloaded(dest: Path) -> dict[str, list[tuple[Version, Path]]]:
    """``{canonical name: [(version, wheel)]}`` in ``dest`` (more than one: several releases)."""
    wheels: dict[str, list[tuple[Version, Path]]] = {}
    for wheel in sorted(dest.glob("*.whl")):
        name, version, _, _ = parse_wheel_filename(wheel.name)
        wheels.setdefault(name, []).append((version, wheel))
    return wheels


def download(requirements: list[str], dest: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", *TARGET, "-d", str(dest), *requirements]
    if subprocess.run(cmd).returncode != 0:
        sys.exit(f"gpu_wheels.py: pip could not download {' '.join(requirements)} for the GPU machine "
                 "(CPython 3.12, manylinux x86-64); is a package index reachable?")


def fetch(pins: dict[str, str], extra: list[str], dest: Path) -> list[Path]:
    """Downloads the pins, the extra requirements and, recursively, the exact pins that the
    wheels of those packages declare; returns the wheels, one per package. Other wheels
    already in ``dest`` are kept but not followed."""
    dest.mkdir(parents=True, exist_ok=True)
    wanted = dict(pins)
    followed = set(pins) | {canonicalize_name(Requirement(r).name) for r in extra}
    queue = [f"{name}=={version}" for name, version in pins.items()] + extra
    read: set[Path] = set()
    while queue:
        download(queue, dest)
        queue = []
        for name, releases in downloaded(dest).items():
            if name not in followed:
                continue
            for _, wheel in releases:
                if wheel in read:
                    continue
                read.add(wheel)
                for pin, version in exact_pins(wheel_requirements(wheel)).items():
                    if pin in wanted and Version(wanted[pin]) != Version(version):
                        sys.exit(f"gpu_wheels.py: {wheel.name} pins {pin}=={version}, but {pin}=={wanted[pin]} "
                                 "is pinned too; the two cannot be installed together")
                    if pin not in wanted:
                        wanted[pin] = version
                        followed.add(pin)
                        queue.append(f"{pin}=={version}")
    have = downloaded(dest)
    stale = [wheel for name, releases in have.items() for version, wheel in releases
             if len(releases) > 1 or (name in wanted and version != Version(wanted[name]))]
    if stale:
        sys.exit(f"gpu_wheels.py: {dest} holds other releases of the packages it fetches "
                 f"({', '.join(w.name for w in stale)}); remove them: the suite installs every wheel there, "
                 "and two releases of one package stop the install")
    return [releases[0][1] for _, releases in sorted(have.items())]


def check_installed(pins: dict[str, str]) -> list[str]:
    """One line per problem with this Python's packages: a pin not installed at its release,
    or a requirement of a pinned package (its own pins followed too) that what is installed
    does not meet, e.g. transformers 5.24.0 over the image's older huggingface-hub."""
    from importlib import metadata

    def installed(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    problems, queue, seen = [], dict(pins), set()
    while queue:
        name, version = queue.popitem()
        seen.add(name)
        have = installed(name)
        if have is None or Version(have) != Version(version):
            problems.append(f"{name}: siri pins {version}, installed {have or 'nothing'}")
            continue
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            pinned = exact_pins([text], markers={})
            dependency = canonicalize_name(requirement.name)
            if pinned and dependency not in seen:
                queue.update(pinned)
                continue
            have = installed(requirement.name)
            if have is None or not requirement.specifier.contains(have, prereleases=True):
                problems.append(f"{dependency}: {name} {version} needs {requirement.name}{requirement.specifier}, "
                                f"installed {have or 'nothing'}")
    return sorted(problems)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dest", type=Path, default=REPO / ".whl", help="where the wheels go (default: .whl/)")
    p.add_argument("--baselines", action="store_true", help=f"also download {', '.join(BASELINES)}")
    p.add_argument("--list", action="store_true", help="print the releases to carry and download nothing")
    p.add_argument("--check", action="store_true",
                   help="check that this Python has the tested releases of the carried packages (exit 1 if not)")
    args = p.parse_args()
    pins, extra = project_pins(), BASELINES if args.baselines else []
    if args.check:
        problems = check_installed(pins)
        for problem in problems:
            print(problem)
        if problems:
            sys.exit("gpu_wheels.py: the tested releases (constraints.txt) are not what is installed; on the development "
                     "machine run `make gpu-wheels` and carry .whl/ with the run")
        print(f"the {len(pins)} tested releases are installed: {', '.join(f'{n}=={v}' for n, v in pins.items())}")
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
    print(f"{len(wheels)} wheels, {total / 2**20:.1f} MiB in {args.dest}; copy it to the GPU machine beside the sources "
          "(scripts/gpu_suite.sh installs what it holds)")
    if total > 60 * 2**20:
        print("warning: over 60 MiB of wheels; keep .whl/ small where the sources reach the GPU machine through a "
              "size-limited transfer", file=sys.stderr)


if __name__ == "__main__":
    main()
