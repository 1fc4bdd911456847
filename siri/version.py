"""siri's own version and the oldest torch it runs on (checked when ``siri`` is imported).

setup.py reads ``__version__`` from this file as text, so the assignment stays a plain
string literal."""
import re

__version__ = "0.1.0"

#: The oldest torch siri supports, as in pyproject.toml: the public FSDP2 API
#: (``torch.distributed.fsdp.fully_shard``, ``MixedPrecisionPolicy``) arrived in 2.6, and
#: transformers 5 needs 2.6 too.
MIN_TORCH = (2, 6)


def check_torch(version: str | None = None) -> None:
    """Raise ImportError, in one line naming both versions, when torch is older than
    :data:`MIN_TORCH`.

    Args:
        version: a torch version string such as ``"2.13.0+cpu"`` or ``"2.6.0a0+git1234"``
            (default: the installed ``torch.__version__``). Pre-releases of the minimum count
            as the minimum.
    """
    if version is None:
        import torch

        version = str(torch.__version__)
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise ImportError(f"siri could not read the torch version {version!r}; it needs torch >= "
                          f"{'.'.join(map(str, MIN_TORCH))}")
    if (int(match.group(1)), int(match.group(2))) < MIN_TORCH:
        raise ImportError(f"siri needs torch >= {'.'.join(map(str, MIN_TORCH))}, but torch {version} is installed; "
                          "install a newer torch (then rebuild siri: pip install --no-build-isolation .)")
