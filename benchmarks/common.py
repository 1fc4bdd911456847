"""Shared benchmark helpers: interleaved repeated timing, median ratios, the machine's
memory-copy bandwidth measured in the same run, optional third-party baselines, and a JSON
results file.

Every benchmark times siri and its baseline alternately in one process (so load from other
jobs on a shared machine hits both alike) and reports the median over repeats.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import time
from pathlib import Path
from types import ModuleType
from typing import Callable

import torch


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_once(fn: Callable[[], object], device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def compare(candidates: dict[str, Callable[[], object]], device, repeats: int = 10,
            warmup: int = 2) -> dict[str, list[float]]:
    """Run each candidate `repeats` times, interleaved, after `warmup` untimed runs.
    Returns the per-run seconds of each candidate."""
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    times = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            times[name].append(time_once(fn, device))
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def median_ratio(slow: list[float], fast: list[float]) -> float:
    """Median of the per-repeat ratios slow/fast (pairs taken from the same repeat)."""
    return statistics.median(s / f for s, f in zip(slow, fast))


def ratio_spread(slow: list[float], fast: list[float]) -> dict[str, float]:
    """Min, median and max of the per-repeat ratios slow/fast."""
    ratios = [s / f for s, f in zip(slow, fast)]
    return {"min": min(ratios), "median": statistics.median(ratios), "max": max(ratios)}


def copy_bandwidth(device, nbytes: int = 1 << 28, repeats: int = 5) -> float:
    """Memory-copy bandwidth in bytes/s (bytes read + bytes written), measured now with a
    large torch copy: the physical limit bandwidth-bound kernels are judged against."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = min(time_once(lambda: dst.copy_(src), device) for _ in range(repeats))
    return 2 * nbytes / best


def bandwidth_fraction(nbytes: int, seconds: float, copy_bandwidth_bps: float) -> float:
    """Fraction of the memory-copy bandwidth achieved by a kernel that moves `nbytes` (its
    compulsory reads + writes) in `seconds`. Copy bandwidth counts reads + writes alike, so a
    kernel as fast as a copy of its own traffic scores 1."""
    return nbytes / seconds / copy_bandwidth_bps


def optional_baseline(module_name: str, device, cuda_only: bool = True) -> tuple[ModuleType | None, str]:
    """A third-party baseline (flashinfer, liger_kernel) when it can run here: ``(module,
    "used")``, else ``(None, reason)`` with the reason printed, for the results JSON. Packages
    that are not installed are the usual case; a wheel that is installed but fails to import
    (built for another torch or CUDA) is reported with its error rather than stopping the run."""
    if cuda_only and torch.device(device).type != "cuda":
        reason = f"{module_name} runs on CUDA only: baseline skipped on {torch.device(device).type}"
    else:
        try:
            return importlib.import_module(module_name), "used"
        except ModuleNotFoundError as exc:
            if exc.name != module_name.split(".")[0]:
                reason = f"{module_name} failed to import ({exc}): baseline skipped"
            else:
                reason = f"{module_name} not installed: baseline skipped"
        except Exception as exc:  # noqa: BLE001  (a broken wheel raises anything at import)
            reason = f"{module_name} failed to import ({type(exc).__name__}: {exc}): baseline skipped"
    print(reason)
    return None, reason


def baseline_failure(name: str, exc: Exception) -> str:
    """One line for a baseline that is installed but cannot run (or disagrees with siri on) a
    case: printed, and returned for the row's ``<name>_error`` field."""
    message = f"{name} baseline failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    print(message)
    return message


class PeakMemory:
    """Peak memory above the level at entry, in bytes, of the code run inside the block.

    CUDA: the caching allocator's peak. CPU: the process's peak resident set (VmHWM, reset
    through /proc/self/clear_refs); call :func:`cpu_allocations_return_to_os` once first so
    that freed large buffers leave the resident set instead of being recycled unseen."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.start = self.extra = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")
            self.start = proc_status_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.extra = torch.cuda.max_memory_allocated() - self.start
        else:
            self.extra = proc_status_kib("VmHWM") * 1024 - self.start
        return False


def proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def cpu_allocations_return_to_os(threshold_bytes: int = 1 << 16) -> None:
    """Make glibc serve allocations above `threshold_bytes` with mmap, so they are returned
    to the OS when freed and peak-RSS measurements see each buffer's real lifetime."""
    import ctypes

    m_mmap_threshold = -3
    ctypes.CDLL("libc.so.6").mallopt(m_mmap_threshold, threshold_bytes)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when visible)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", default=os.environ.get("SIRI_BENCH_OUT", "bench_results"),
                   help="directory for the JSON results file")
    return p


def write_results(out_dir: str, name: str, results: dict) -> Path:
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    results = {"benchmark": name, "torch": torch.__version__,
               "threads": torch.get_num_threads(), **results}
    file = path / f"{name}.json"
    file.write_text(json.dumps(results, indent=2))
    print(f"results written to {file}")
    return file
