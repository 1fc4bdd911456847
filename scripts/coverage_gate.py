"""The coverage gate (`make coverage`): which lines of siri/ the CPU test suite never executed,
per file, and whether the suite reaches the goal.

Reads the combined data of `make test` (pytest under coverage.py, subprocesses included:
torchrun ranks, reward workers, demo jobs). Lines that can run only on a CUDA device carry
`# gpu-only: tests/<file>.py::<test>` naming the GPU-suite test that runs them; coverage.py
excludes them (on a block's first line, the whole block). The gate fails when

- the executed share of siri/'s remaining lines is below ``--min`` percent,
- more than ``--max-gpu-only`` lines are excluded in all (every excluded line counts, so a
  marker on a large block costs what it hides), or
- a marker names a test that does not exist.

Usage: python scripts/coverage_gate.py [--data FILE] [--min 95] [--max-gpu-only 100] [--top N]
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import coverage

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"#\s*gpu-only:\s*(\S+)")
TEST_ID = re.compile(r"^(tests/[\w/]+\.py)::(test_\w+)$")


def ranges(lines: list[int]) -> str:
    """``[1, 2, 3, 7, 9, 10]`` -> ``"1-3, 7, 9-10"``."""
    out, start, prev = [], None, None
    for line in sorted(lines):
        if start is None:
            start = prev = line
        elif line == prev + 1:
            prev = line
        else:
            out.append(f"{start}-{prev}" if prev != start else str(start))
            start = prev = line
    if start is not None:
        out.append(f"{start}-{prev}" if prev != start else str(start))
    return ", ".join(out)


def marker_problems(files: list[Path]) -> tuple[list[str], int]:
    """(problems with the markers, number of markers): each must name an existing test."""
    problems, count = [], 0
    for path in files:
        for number, text in enumerate(path.read_text().splitlines(), 1):
            match = MARKER.search(text)
            if not match:
                continue
            count += 1
            where = f"{path.relative_to(ROOT)}:{number}"
            test = TEST_ID.match(match.group(1))
            if not test:
                problems.append(f"{where}: the marker must name a test as tests/<file>.py::<test>, got {match.group(1)!r}")
                continue
            test_file = ROOT / test.group(1)
            if not test_file.is_file() or not re.search(rf"^def {test.group(2)}\(", test_file.read_text(), re.M):
                problems.append(f"{where}: names {match.group(1)}, which does not exist")
    return problems, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "build" / "coverage" / ".coverage"),
                        help="the combined coverage data file (default: build/coverage/.coverage)")
    parser.add_argument("--min", type=float, default=95.0, help="percent of siri/ lines that must run (default 95)")
    parser.add_argument("--max-gpu-only", type=int, default=100, help="most excluded (GPU-only) lines (default 100)")
    parser.add_argument("--top", type=int, default=15, help="files listed with their unexecuted lines (default 15)")
    args = parser.parse_args(argv)

    if not Path(args.data).is_file():
        print(f"coverage_gate: no coverage data at {args.data}: run `make test` first", file=sys.stderr)
        return 2
    cov = coverage.Coverage(data_file=args.data, config_file=str(ROOT / "pyproject.toml"))
    cov.load()
    files = sorted((ROOT / "siri").rglob("*.py"))
    statements = executed = excluded = 0
    missing_by_file = []
    for path in files:
        _, lines, excluded_lines, missing, _ = cov.analysis2(str(path))
        statements += len(lines)
        executed += len(lines) - len(missing)
        excluded += len(excluded_lines)
        if missing:
            missing_by_file.append((len(missing), str(path.relative_to(ROOT)), missing))
    percent = 100.0 * executed / max(statements, 1)
    problems, markers = marker_problems(files)

    missing_by_file.sort(key=lambda item: (-item[0], item[1]))
    print(f"siri/ lines never executed by the CPU suite ({len(missing_by_file)} files; "
          f"the {min(args.top, len(missing_by_file))} with the most):")
    for count, name, missing in missing_by_file[:args.top]:
        print(f"  {name}: {count}: {ranges(missing)}")
    print(f"executed {executed} of {statements} lines: {percent:.2f}% (goal >= {args.min:g}%)")
    print(f"excluded as GPU-only: {excluded} lines under {markers} markers (at most {args.max_gpu_only})")
    failures = list(problems)
    if percent < args.min:
        failures.append(f"coverage {percent:.2f}% is below the goal of {args.min:g}%")
    if excluded > args.max_gpu_only:
        failures.append(f"{excluded} excluded lines exceed the limit of {args.max_gpu_only}")
    for failure in failures:
        print(f"coverage_gate: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
