"""The ``siri`` command line. ``python -m siri ...`` is the same."""
from __future__ import annotations

import argparse
import os
import subprocess
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
    from siri.progress import quiet_transformers

    overrides = list(args.overrides)
    if args.run_dir:
        overrides.append(f"trainer.run_dir={args.run_dir}")
    try:
        cfg = load_config(args.config, overrides)
    except (ConfigError, FileNotFoundError) as e:
        print(f"siri train: invalid config: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        return _print_dry_run(cfg, device_memory_gb=args.device_memory_gb, world_size=args.nproc)
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        # the shortcut for one machine: re-run this command under torchrun
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
               "-m", "siri", "train", args.config, *overrides]
        print("siri train: launching", " ".join(cmd), flush=True)
        return subprocess.call(cmd)
    from siri.train.distributed import RankFailure, leave_process_group
    from siri.train.trainer import Trainer

    quiet_transformers()
    try:
        trainer = Trainer(cfg)
    except RankFailure as e:
        print(f"siri train: {e}", file=sys.stderr, flush=True)
        os._exit(3)
    except BaseException:
        # a setup error the ranks agreed on (a checkpoint some rank cannot read): reported by
        # main() on every rank, after leaving the process group cleanly
        leave_process_group()
        raise
    try:
        result = trainer.fit()
    except RankFailure as e:
        print(f"siri train: {e}", file=sys.stderr, flush=True)
        os._exit(3)    # a dead peer can leave the process group unable to shut down cleanly
    if trainer.dist.is_main:
        print(f"done: {cfg.trainer.steps} steps; run directory {cfg.trainer.run_dir}; "
              f"newest checkpoint {result.get('checkpoint')}")
    from siri.train.distributed import shutdown

    shutdown(trainer.dist)
    return 0


def _print_dry_run(cfg, *, device_memory_gb: float, world_size: int) -> int:
    """The resolved config, the schedule's caps at its key steps, and the memory plan."""
    import yaml
    from rich.table import Table

    from siri.config import config_to_dict
    from siri.train.memory_plan import plan_memory
    from siri.models.loading import local_model_config
    from siri.progress import make_console

    # planned first: a bad --device-memory-gb / --nproc or an unreadable model config raises
    # ValueError, which main() reports in one line before anything is printed
    device = "cpu" if cfg.model.device == "cpu" else "cuda"
    plan = plan_memory(cfg, device_memory_gb=device_memory_gb, world_size=world_size, device=device)
    console = make_console()
    console.print("[bold]resolved config[/bold]")
    # unwrapped, so the YAML can be pasted back into a config file
    console.print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False, width=2**31 - 1), markup=False,
                  highlight=False, soft_wrap=True)
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
    console.print(f"data {cfg.data.train}" + (f" from {cfg.data.path}" if cfg.data.path else "")
                  + ("" if cfg.data.path or Path(cfg.data.train).exists() else _hub_note(cfg.data.train)))
    plan.render(console)
    console.print("dry run: config is valid; nothing was loaded or trained")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a model directory on one or more benchmarks; print a table, write JSON."""
    from dataclasses import replace

    from siri.data import DEFAULT_PROMPT_FORMAT, NAMED_DATASETS, resolve_prompt_format
    from siri.progress import quiet_transformers
    from siri.eval import EvalSettings, default_report_path, evaluate_model, print_eval_table, samples_path
    from siri.models.loading import check_model_reference

    benchmarks = {}
    for spec in args.data:
        if "=" in spec:       # NAME=PATH: a named benchmark's local copy, or a file under a chosen name
            name, local = spec.split("=", 1)
            benchmarks[name] = (name, local) if name in NAMED_DATASETS else (local, None)
        else:
            benchmarks[spec if spec in NAMED_DATASETS else Path(spec).stem] = (spec, None)
    settings = EvalSettings(n=args.n, temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens,
                            seed=args.seed, batch_prompts=args.batch_prompts)
    out = Path(args.out) if args.out else default_report_path(args.model)
    quiet_transformers()
    check_model_reference(args.model)
    fallback = replace(DEFAULT_PROMPT_FORMAT, source="siri eval's default (DeepScaleR)")
    fmt = resolve_prompt_format(args.model, fallback, instruction=args.instruction,
                                no_instruction=args.no_instruction, use_chat_template=args.chat_template)
    print(f"prompt format ({fmt.source}): instruction {fmt.instruction!r}, chat template "
          f"{'on' if fmt.use_chat_template else 'off'}")
    report = evaluate_model(args.model, benchmarks, settings, out=out, label=args.label, prompt_format=fmt,
                            device=args.device, dtype=args.dtype, prompt_key=args.prompt_key,
                            answer_key=args.answer_key, progress=not args.quiet)
    print_eval_table(report)
    print(f"report: {out}\nresponses: {samples_path(out)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write a checkpoint as a standalone Hugging Face model directory (weights in one dtype)."""
    from siri.export import export_checkpoint

    result = export_checkpoint(args.checkpoint, args.out, args.dtype, overwrite=args.overwrite, log=print)
    print(f"wrote {result.out} ({', '.join(result.files)}); stop tokens {result.stop_token_ids}")
    return 0


def _hub_note(name: str) -> str:
    from siri.data import NAMED_DATASETS

    if name in NAMED_DATASETS:
        return f": {NAMED_DATASETS[name].hf_id}, loaded with datasets.load_dataset when training starts"
    return (f": not a local file nor a named dataset ({', '.join(sorted(NAMED_DATASETS))}); read as a Hugging Face "
            "Hub id with datasets.load_dataset when training starts")


def cmd_plot(args: argparse.Namespace) -> int:
    """Write a run's PNGs (schedule, training curves, accuracy-vs-tokens Pareto)."""
    from siri.plot import plot_run

    paths = plot_run(args.run_dir)
    for path in paths:
        print(path)
    if not any(p.name == "pareto.png" for p in paths):
        print(f"no pareto.png: {Path(args.run_dir) / 'eval'} holds no eval reports; run "
              f"'siri eval {Path(args.run_dir) / 'checkpoints' / 'step_N'} --data ...' first")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """SIRI in miniature: base model, RL arms, eval, summary, verdict and plots."""
    from dataclasses import replace

    from siri.progress import quiet_transformers
    from siri.demo.run import SMOKE_CONFIG, DemoSettings, run_demo

    quiet_transformers()
    if args.jobs is not None and args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    config, settings = args.config, DemoSettings.study() if args.study else DemoSettings()
    if args.seeds is not None:
        settings = replace(settings, seeds=args.seeds)
    if args.smoke:
        config = config or SMOKE_CONFIG
        settings = replace(DemoSettings.smoke(), arms=settings.arms, seeds=settings.seeds)
    run_demo(args.out, seed=args.seed, config=config, settings=replace(settings, jobs=args.jobs),
             overrides=args.overrides, progress=not args.quiet)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors that point at the right subcommand's --help."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


DESCRIPTION = ("siri: SIRI (length-oscillating GRPO/DAPO) training, evaluation and plots. "
               "'python -m siri ...' is the same command.")


def build_parser() -> argparse.ArgumentParser:
    from siri.config import config_choices
    from siri.eval import EvalSettings
    from siri.export import EXPORT_DTYPES

    parser = _Parser(prog="siri", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    with_defaults = argparse.ArgumentDefaultsHelpFormatter
    p_info = sub.add_parser("info", formatter_class=with_defaults,
                            help="show the build (backends, CUDA archs, SIMD) and devices")
    p_info.set_defaults(func=cmd_info, parser=p_info)
    p_train = sub.add_parser("train", formatter_class=with_defaults,
                            help="train with a YAML config and key=value overrides")
    p_train.add_argument("config", help="YAML config file (see configs/)")
    p_train.add_argument("overrides", nargs="*", help="dotted overrides, e.g. trainer.steps=100 schedule.l_min=4096")
    p_train.add_argument("--dry-run", action="store_true",
                         help="validate, print the resolved config, the schedule's caps at key steps and the "
                              "per-device memory plan, and exit")
    p_train.add_argument("--device-memory-gb", type=float, default=80.0,
                         help="--dry-run: memory of one device in GiB for the memory plan")
    p_train.add_argument("--run-dir", help="same as trainer.run_dir=DIR")
    p_train.add_argument("--nproc", type=int, default=1,
                         help="data-parallel processes on this machine (runs the command under torchrun)")
    p_train.set_defaults(func=cmd_train, parser=p_train)

    p_eval = sub.add_parser("eval", formatter_class=with_defaults,
                            help="pass@1 and mean response tokens of a model on benchmarks")
    p_eval.add_argument("model", help="a Hugging Face model directory, e.g. RUN_DIR/checkpoints/step_320")
    p_eval.add_argument("--data", action="append", required=True, metavar="SPEC",
                        help="a .jsonl/.parquet file or dataset dir, a named benchmark (aime24, aime25, amc, "
                             "math500), or NAME=LOCAL_PATH; repeat for several")
    p_eval.add_argument("--n", type=int, default=EvalSettings.n, help="samples per prompt (pass@1 is averaged over them; pass@k is reported for k up to n)")
    p_eval.add_argument("--temperature", type=float, default=EvalSettings.temperature, help="sampling temperature")
    p_eval.add_argument("--top-p", type=float, default=EvalSettings.top_p, help="nucleus sampling threshold (1: off)")
    p_eval.add_argument("--max-tokens", type=int, default=EvalSettings.max_tokens,
                        help="response cap; a truncated response is wrong")
    p_eval.add_argument("--seed", type=int, default=EvalSettings.seed, help="seed of the sampling draws")
    p_eval.add_argument("--batch-prompts", type=int, default=EvalSettings.batch_prompts, help="prompts per engine call")
    p_eval.add_argument("--instruction", default=None,
                        help="appended to every prompt; default: the one the model was trained with (a siri "
                             "checkpoint or the demo's base model knows it), else DeepScaleR's")
    p_eval.add_argument("--no-instruction", action="store_true", help="append no instruction")
    p_eval.add_argument("--prompt-key", default=None,
                        help="the field with the prompt (a dotted path reaches nested fields); default: the first "
                             "of prompt, problem, question")
    p_eval.add_argument("--answer-key", default=None,
                        help="the field with the reference answer; default: the first of answer, solution, "
                             "ground_truth, reward_model.ground_truth")
    p_eval.add_argument("--chat-template", action=argparse.BooleanOptionalAction, default=None,
                        help="wrap prompts in the tokenizer's chat template (--no-chat-template: the raw text); "
                             "default: as the model was trained, else on")
    p_eval.add_argument("--device", default="auto", choices=config_choices()["model.device"],
                        help="auto: CUDA when visible and siri has CUDA kernels")
    p_eval.add_argument("--dtype", default="auto", choices=config_choices()["model.dtype"],
                        help="auto: bf16 on CUDA, fp32 on the CPU")
    p_eval.add_argument("--label", help="the report's label (default: the model directory's name)")
    p_eval.add_argument("--out", help="JSON report path (default RUN_DIR/eval/step_N.json for a checkpoint)")
    p_eval.add_argument("--quiet", action="store_true", help="no progress bar")
    p_eval.set_defaults(func=cmd_eval, parser=p_eval)

    p_demo = sub.add_parser("demo", formatter_class=with_defaults,
                            help="SIRI vs other length-control methods in miniature, offline, on the CPU or GPU")
    p_demo.add_argument("--out", default="siri-demo", help="output directory (data, base model, runs, eval, plots)")
    p_demo.add_argument("--seed", type=int, default=0)
    p_demo.add_argument("--config", help="RL config of the arms (default: the package's siri/demo/demo.yaml)")
    p_demo.add_argument("overrides", nargs="*", help="key=value overrides of that config, e.g. schedule.period=10")
    p_demo.add_argument("--quiet", action="store_true", help="no progress bars")
    p_demo.add_argument("--smoke", action="store_true",
                        help="every stage at the smallest size (a few minutes; the numbers mean nothing)")
    p_demo.add_argument("--study", action="store_true",
                        help="every arm (adds ThinkPrune's staged cap and Kimi's length reward) over the study's "
                             "seeds, with paired statistics and the pre-registered predictions")
    p_demo.add_argument("--seeds", type=int,
                        help="how many seeds, paired across arms (default: 1; with --study, the study's number)")
    p_demo.add_argument("--jobs", type=int, help="runs side by side (default: one per core)")
    p_demo.set_defaults(func=cmd_demo, parser=p_demo)

    p_plot = sub.add_parser("plot", formatter_class=with_defaults,
                            help="PNG plots of a run: schedule, training curves, Pareto of evals")
    p_plot.add_argument("run_dir", help="a run directory (trainer.run_dir): metrics.jsonl for the schedule and "
                                        "training plots, eval/*.json (from siri eval) for the Pareto plot")
    p_plot.set_defaults(func=cmd_plot, parser=p_plot)

    p_export = sub.add_parser("export", formatter_class=with_defaults,
                              help="a checkpoint as a Hugging Face model directory for serving (no trainer state)")
    p_export.add_argument("checkpoint", help="RUN_DIR/checkpoints/step_N, or RUN_DIR for its newest checkpoint")
    p_export.add_argument("out", help="the model directory to write (must not exist or be empty)")
    p_export.add_argument("--dtype", choices=list(EXPORT_DTYPES), default=None,
                          help="dtype of the weights; default: the compute dtype the run trained with "
                               "(model.dtype; auto: bfloat16)")
    p_export.add_argument("--overwrite", action="store_true", help="replace OUT if it exists and is not empty")
    p_export.set_defaults(func=cmd_export, parser=p_export)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The subcommand's arguments, with positionals (a config's ``key=value`` overrides) and
    flags in any order: ``siri train CONFIG --dry-run trainer.steps=5`` is ``siri train CONFIG
    trainer.steps=5 --dry-run``. A parser with subparsers cannot parse intermixed, so the
    subcommand's name is taken first and its own parser parses the rest intermixed; anything
    else (no subcommand, an unknown one, ``--help``) goes to the top-level parser, which
    reports it."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    if not argv or argv[0] not in subparsers:
        return parser.parse_args(argv)
    sub = subparsers[argv[0]]
    args, unknown = sub.parse_known_intermixed_args(argv[1:])
    if unknown:
        # an unknown flag ends the run of positionals it interrupts, so the overrides after it
        # land here too: name only the flags, which are what the user has to fix
        flags = [a for a in unknown if a.startswith("-")]
        sub.error(f"unrecognized arguments: {' '.join(flags or unknown)}")
    args.command = argv[0]
    return args


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand. Expected user errors (a missing file, a bad config or value, an
    unreachable model or dataset) print one line on stderr and return 2; set SIRI_DEBUG=1 for
    the traceback."""
    import yaml

    if os.getcwd() not in sys.path:   # `reward.fn: my_rewards:score` finds ./my_rewards.py, as under `python -m siri`
        sys.path.insert(0, os.getcwd())
    args = parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"siri {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, yaml.YAMLError) as e:
        if os.environ.get("SIRI_DEBUG"):
            raise
        print(f"siri {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.strerror}: {error.filename}"
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return text or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
