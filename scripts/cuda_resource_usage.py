#!/usr/bin/env python3
"""Registers, spills and shared memory of every CUDA kernel, from ptxas (``nvcc --resource-usage``).

No GPU and no torch needed: each ``csrc/cuda/*.cu`` file is compiled for one architecture and
ptxas's report becomes a table, one row per kernel instantiation. It fails (exit 1) when a kernel
spills (float64 instantiations excepted), or when a decode-attention kernel for bf16 with at most 4 query heads per block uses more
than 128 registers (the budget that keeps 4 blocks of 128 threads resident per SM, so memory
latency stays hidden while decode streams the KV cache).

Usage: scripts/cuda_resource_usage.py [--arch sm_90] [--nvcc PATH] [FILE.cu ...]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DECODE_REGISTER_BUDGET = 128

_ENTRY = re.compile(r"Compiling entry function '([^']+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")
_DECODE = re.compile(r"decode_kernel<(\w+), (\d+), (\d+)>")


def find_nvcc(explicit: str | None) -> str:
    for candidate in (explicit, os.environ.get("NVCC"), os.path.join(os.environ.get("CUDA_HOME", ""), "bin/nvcc"),
                      "/usr/local/cuda/bin/nvcc", shutil.which("nvcc")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    sys.exit("cuda_resource_usage: nvcc not found (set CUDA_HOME or NVCC)")


def demangle(names: list[str]) -> list[str]:
    """Readable kernel names: c++filt when present, without namespaces and parameter lists."""
    if shutil.which("c++filt"):
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True)
        names = out.stdout.splitlines()
    cleaned = []
    for name in names:
        name = name.replace("(anonymous namespace)::", "")
        if name.endswith(")"):  # drop the parameter list: from the '(' matching the last ')'
            depth = 0
            for i in range(len(name) - 1, -1, -1):
                depth += {")": 1, "(": -1}.get(name[i], 0)
                if depth == 0:
                    name = name[:i]
                    break
        cleaned.append(re.sub(r"^(?:void )?[\w:]*::", "", name))  # return type, namespaces
    return cleaned


def resource_usage(nvcc: str, source: Path, arch: str) -> list[dict]:
    """One dict per kernel of ``source``: name, registers, spill bytes, stack, shared memory."""
    cmd = [nvcc, "--resource-usage", f"-arch={arch}", "-std=c++17", "-O3", f"-I{ROOT / 'csrc/include'}",
           f"-I{ROOT / 'csrc'}", "-c", str(source), "-o", os.devnull]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"cuda_resource_usage: nvcc failed on {source}:\n{proc.stderr}")
    rows, current = [], None
    for line in proc.stderr.splitlines():
        if m := _ENTRY.search(line):
            current = {"mangled": m.group(1), "stack": 0, "spill": 0}
        elif current and (m := _FRAME.search(line)):
            current["stack"], current["spill"] = int(m.group(1)), int(m.group(2)) + int(m.group(3))
        elif current and (m := _USED.search(line)):
            current["registers"], current["smem"] = int(m.group(1)), int(m.group(2) or 0)
            rows.append(current)
            current = None
    for row, name in zip(rows, demangle([r["mangled"] for r in rows])):
        row["kernel"], row["file"] = name, source.name
    return sorted(rows, key=lambda r: (r["file"], _natural(r["kernel"])))


def _natural(name: str) -> list:
    """Sort key with numbers compared as numbers (decode_kernel<T, 64, ...> before <T, 128, ...>)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def violations(row: dict) -> list[str]:
    """What breaks the budget. Spills count in every kernel but the float64 ones (a precision
    reference path, not a hot one: their spills are listed, not failed)."""
    problems = []
    if row["spill"] and not re.search(r"<double[,>]", row["kernel"]):
        problems.append(f"{row['spill']} bytes spilled")
    decode = _DECODE.search(row["kernel"])
    if decode and decode.group(1) == "__nv_bfloat16" and int(decode.group(3)) <= 4 \
            and row["registers"] > DECODE_REGISTER_BUDGET:
        problems.append(f"{row['registers']} registers > {DECODE_REGISTER_BUDGET}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="CUDA files (default: csrc/cuda/*.cu)")
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("--nvcc")
    args = parser.parse_args()
    nvcc = find_nvcc(args.nvcc)
    files = args.files or sorted((ROOT / "csrc/cuda").glob("*.cu"))
    rows = [row for source in files for row in resource_usage(nvcc, source, args.arch)]
    print(f"ptxas resource usage, {args.arch} (registers per thread; spill = spill stores + loads, bytes)")
    print("| file | kernel | registers | spill | stack | smem | check |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    failed = 0
    for row in rows:
        problems = violations(row)
        failed += bool(problems)
        print(f"| {row['file']} | `{row['kernel']}` | {row['registers']} | {row['spill']} | {row['stack']} | "
              f"{row['smem']} | {'; '.join(problems) or 'ok'} |")
    print(f"{len(rows)} kernels, {failed} over budget (no spills outside float64 kernels; decode bf16 with <= 4 heads per "
          f"block: <= {DECODE_REGISTER_BUDGET} registers)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
