"""Loads the compiled extension siri._C, which also registers the torch.ops.siri.* ops."""
import torch  # noqa: F401  (libtorch must be loaded before the extension)

try:
    from siri import _C
except ImportError as exc:  # pragma: no cover - only hit on a broken install
    raise ImportError(
        "siri's compiled extension siri._C could not be imported. Build it with "
        "`pip install --no-build-isolation -e .` (see README, 'Install'). If you run from the "
        "source tree without an editable install, the source directory shadows the installed "
        f"package. Original error: {exc}"
    ) from exc


def build_info() -> dict:
    """What this build of siri contains: version, backends, CUDA archs, compiler, SIMD level."""
    return dict(_C.build_info())


def has_cuda_kernels() -> bool:
    return "cuda" in _C.build_info()["backends"]
