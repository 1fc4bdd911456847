"""Build siri._C with CMake + Ninja (and the test-only module _siri_probes, see below).

Install without build isolation so the build compiles against the torch you already have
(isolation would download a second, CUDA, torch into a temporary environment):

    pip install --no-build-isolation .        # or -e . for development

Environment variables:
    SIRI_CUDA=0|1         force the CUDA kernels off/on (default: on when torch is a CUDA
                          build and nvcc is found)
    SIRI_CUDA_ARCHS="80;90;100"  CUDA architectures to build for (90, 9.0, sm_90, 90a, ...;
                             the newest without an a/f suffix also embeds PTX)
    SIRI_SANITIZE=1       AddressSanitizer + UBSan build of the extension
    MAX_JOBS=N            parallel compile jobs (default: number of CPUs)
    CMAKE_BUILD_TYPE      Release (default) or Debug / RelWithDebInfo
    SIRI_PROBES_DIR=DIR   write the test probes there instead of tests/ (the sanitizer build;
                          tests/conftest.py searches the same variable's directory first)

The same build writes _siri_probes (bindings/probes: host entry points into the shared kernel
headers, for tests only) into tests/, where the tests import it (`import _siri_probes`); it is
not part of the siri package. A source tree without tests/ (an sdist) builds no probes.

cmake and ninja come from the `build` extra (pip install cmake ninja); those installed in
this interpreter's environment are preferred over any on PATH.
"""
import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def read_version() -> str:
    text = (ROOT / "siri" / "version.py").read_text()
    return re.search(r'__version__\s*=\s*"([^"]+)"', text).group(1)


def find_nvcc():
    """Path of nvcc, honouring CUDA_HOME/CUDA_PATH before PATH, or None."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home and (Path(home) / "bin" / "nvcc").exists():
            return str(Path(home) / "bin" / "nvcc")
    if Path("/usr/local/cuda/bin/nvcc").exists():
        return "/usr/local/cuda/bin/nvcc"
    return shutil.which("nvcc")


def find_build_tool(name: str, module: str, bin_dir_attr: str):
    """Path of the `name` executable, or None. Searched in order: the bin directory of the
    pip package `module` (its attribute `bin_dir_attr`), this interpreter's scripts
    directory (a venv's bin, not on PATH when pip runs the build), then PATH."""
    dirs = []
    try:
        dirs.append(str(getattr(importlib.import_module(module), bin_dir_attr)))
    except (ImportError, AttributeError):
        pass
    dirs.append(str(Path(sys.executable).parent))
    dirs.append(os.environ.get("PATH", os.defpath))
    return shutil.which(name, path=os.pathsep.join(dirs))


def find_cmake_and_ninja():
    """(cmake, ninja) paths. Exits with one line naming what is missing and the fix."""
    cmake = find_build_tool("cmake", "cmake", "CMAKE_BIN_DIR")
    ninja = find_build_tool("ninja", "ninja", "BIN_DIR")
    missing = [name for name, path in (("cmake", cmake), ("ninja", ninja)) if path is None]
    if missing:
        sys.exit(f"siri: cannot build the extension: {' and '.join(missing)} not found in "
                 f"{Path(sys.executable).parent} or on PATH; install the build tools with "
                 f"`{sys.executable} -m pip install cmake ninja` (or the [build] extra) and retry")
    return cmake, ninja


def decide_cuda():
    """Return (build_cuda, nvcc_path, reason). Raises if CUDA was forced but is impossible."""
    import torch

    forced = os.environ.get("SIRI_CUDA")
    nvcc = find_nvcc()
    problems = []
    if torch.version.cuda is None:
        problems.append(f"the installed torch {torch.__version__} is a CPU-only build")
    if nvcc is None:
        problems.append("nvcc was not found (set CUDA_HOME or put nvcc on PATH)")
    if forced is not None and forced not in ("0", "1"):
        raise RuntimeError(f"SIRI_CUDA must be 0 or 1, got {forced!r}")
    if forced == "0":
        return False, nvcc, "disabled by SIRI_CUDA=0"
    if forced == "1" and problems:
        raise RuntimeError("SIRI_CUDA=1 asked for the CUDA kernels, but they cannot be built: "
                           + "; ".join(problems))
    if problems:
        return False, nvcc, "; ".join(problems)
    return True, nvcc, f"torch {torch.__version__} (CUDA {torch.version.cuda}), nvcc at {nvcc}"


def probe_args() -> list:
    """CMake arguments for the test probes: built into SIRI_PROBES_DIR, else tests/ when the
    source tree has one (off otherwise)."""
    probes_dir = os.environ.get("SIRI_PROBES_DIR")
    if not probes_dir and (ROOT / "tests").is_dir():
        probes_dir = str(ROOT / "tests")
    if not probes_dir:
        return ["-DSIRI_PROBES=OFF"]
    return ["-DSIRI_PROBES=ON", f"-DSIRI_PROBES_OUTPUT_DIR={Path(probes_dir).resolve()}"]


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: CMakeExtension) -> None:
        import torch

        cmake, ninja = find_cmake_and_ninja()
        ext_path = Path(self.get_ext_fullpath(ext.name)).resolve()
        ext_path.parent.mkdir(parents=True, exist_ok=True)
        build_cuda, nvcc, reason = decide_cuda()
        print(f"siri: CUDA kernels {'ON' if build_cuda else 'OFF'}: {reason}", flush=True)

        prefix_path = [torch.utils.cmake_prefix_path]
        try:
            import pybind11

            prefix_path.append(pybind11.get_cmake_dir())
        except ImportError:
            print("siri: pip package pybind11 not installed; using torch's bundled headers")

        build_type = os.environ.get("CMAKE_BUILD_TYPE", "Release")
        sanitize = os.environ.get("SIRI_SANITIZE", "0") == "1"
        archs = os.environ.get("SIRI_CUDA_ARCHS", "80;90;100").replace(",", ";")
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={ext_path.parent}",
            f"-DCMAKE_PREFIX_PATH={';'.join(prefix_path)}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DCMAKE_BUILD_TYPE={build_type}",
            f"-DSIRI_VERSION={read_version()}",
            f"-DSIRI_CUDA={'ON' if build_cuda else 'OFF'}",
            f"-DSIRI_CUDA_ARCHS={archs}",
            f"-DSIRI_SANITIZE={'ON' if sanitize else 'OFF'}",
            "-DCAFFE2_USE_CUDNN=OFF",
            f"-DCMAKE_MAKE_PROGRAM={ninja}",
            *probe_args(),
        ]
        if build_cuda:
            cuda_home = str(Path(nvcc).resolve().parent.parent)
            args += [f"-DCMAKE_CUDA_COMPILER={nvcc}", f"-DCUDAToolkit_ROOT={cuda_home}",
                     f"-DCUDA_TOOLKIT_ROOT_DIR={cuda_home}"]
        # One build directory per configuration, kept between builds so ninja only
        # recompiles what changed.
        flavour = f"{'cuda' if build_cuda else 'cpu'}{'-asan' if sanitize else ''}-{build_type.lower()}"
        build_dir = ROOT / "build" / f"cmake-py{sys.version_info.major}{sys.version_info.minor}-{flavour}"
        build_dir.mkdir(parents=True, exist_ok=True)

        subprocess.run([cmake, "-S", str(ROOT), "-B", str(build_dir), "-G", "Ninja", *args], check=True)
        jobs = os.environ.get("MAX_JOBS") or str(os.cpu_count() or 1)
        subprocess.run([cmake, "--build", str(build_dir), "--parallel", jobs], check=True)


setup(
    version=read_version(),
    ext_modules=[CMakeExtension("siri._C")],
    cmdclass={"build_ext": CMakeBuild},
)
