"""The ``siri`` command line. ``python -m siri ...`` is the same."""
from __future__ import annotations

import argparse
import sys


def cmd_info(args: argparse.Namespace) -> int:
    """Print what this build contains and which devices are visible."""
    import torch
    from rich.console import Console
    from rich.table import Table

    import siri

    info = siri.build_info()
    table = Table(title=f"siri {info['version']}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    table.add_row("compiled backends", ", ".join(info["backends"]))
    table.add_row("CUDA archs", info["cuda_archs"] or "-")
    table.add_row("CUDA toolkit (build)", info["cuda_version"] or "-")
    table.add_row("compiler", info["compiler"])
    table.add_row("CPU SIMD level", info["simd"])
    table.add_row("torch (build / runtime)", f"{info['torch_version']} / {torch.__version__}")
    cuda_visible = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda_visible else "none visible"
    table.add_row("CUDA device", device)
    usable = "cuda" if cuda_visible and "cuda" in info["backends"] else "cpu"
    table.add_row("kernels in use", usable)
    table.add_row("CPU threads", str(torch.get_num_threads()))
    Console().print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="siri", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="show the build (backends, CUDA archs, SIMD) and devices")
    p_info.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
