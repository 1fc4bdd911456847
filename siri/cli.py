"""The ``siri`` command line. ``python -m siri ...`` is the same."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


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


def cmd_train(args: argparse.Namespace) -> int:
    """Train with a YAML config plus dotted overrides; --dry-run only validates and prints."""
    from siri.config import ConfigError, load_config

    overrides = list(args.overrides)
    if args.run_dir:
        overrides.append(f"trainer.run_dir={args.run_dir}")
    try:
        cfg = load_config(args.config, overrides)
    except (ConfigError, FileNotFoundError) as e:
        print(f"siri train: invalid config: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        _print_dry_run(cfg)
        return 0
    from siri.trainer import Trainer

    result = Trainer(cfg).fit()
    print(f"done: {cfg.trainer.steps} steps; run directory {cfg.trainer.run_dir}; "
          f"newest checkpoint {result.get('checkpoint')}")
    return 0


def _print_dry_run(cfg) -> None:
    """The resolved config, then the schedule's caps at its key steps."""
    import yaml
    from rich.console import Console
    from rich.table import Table

    from siri.config import config_to_dict
    from siri.model_loading import local_model_config

    console = Console()
    console.print("[bold]resolved config[/bold]")
    console.print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), markup=False, highlight=False)
    schedule, steps = cfg.length_schedule(), cfg.trainer.steps
    peaks, troughs = schedule.peaks(steps), schedule.troughs(steps)
    key_steps = sorted({0, steps - 1, *peaks, *troughs} | {s for p in peaks for s in (p + 1,) if s < steps})
    table = Table(title=f"length schedule: {schedule.kind}, {steps} steps")
    for column in ("step", "cap", "phase", "note"):
        table.add_column(column)
    for t in key_steps:
        note = ", ".join(n for n, hit in (("start", t == 0), ("peak (SIRI-high ckpt)", t in peaks),
                                          ("trough (SIRI-low ckpt)", t in troughs), ("last", t == steps - 1)) if hit)
        table.add_row(str(t), str(schedule(t)), schedule.phase(t), note)
    console.print(table)
    model_config = local_model_config(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
    where = (f"found locally (max_position_embeddings {getattr(model_config, 'max_position_embeddings', '?')})"
             if model_config is not None else "not on this machine: transformers downloads it when training starts")
    console.print(f"model {cfg.model.path}: {where}")
    data = cfg.data.path or cfg.data.train
    console.print(f"data {cfg.data.train}" + (f" from {cfg.data.path}" if cfg.data.path else "")
                  + ("" if cfg.data.path or Path(data).exists() else ": loaded with datasets.load_dataset at train time"))
    console.print("dry run: config is valid; nothing was loaded or trained")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="siri", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="show the build (backends, CUDA archs, SIMD) and devices")
    p_info.set_defaults(func=cmd_info)
    p_train = sub.add_parser("train", help="train with a YAML config and key=value overrides")
    p_train.add_argument("config", help="YAML config file (see configs/)")
    p_train.add_argument("overrides", nargs="*", help="dotted overrides, e.g. trainer.steps=100 schedule.l_min=4096")
    p_train.add_argument("--dry-run", action="store_true",
                         help="validate, print the resolved config and the schedule's caps at key steps, and exit")
    p_train.add_argument("--run-dir", help="same as trainer.run_dir=DIR")
    p_train.set_defaults(func=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
