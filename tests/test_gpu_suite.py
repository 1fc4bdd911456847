"""scripts/gpu_suite.sh without a GPU: its options, the steps of each tier (--list), a whole
run with stand-ins for python, nvidia-smi and compute-sanitizer (step results, time limits,
the summary, the exit status), and the options every benchmark takes from the suite."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "scripts" / "gpu_suite.sh"
BENCHMARKS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "benchmarks").glob("bench_*.py"))

# Records its arguments; fails or hangs when they contain $FAIL_MATCH or $SLOW_MATCH.
STAND_IN = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$CALLS"
if [[ -n ${FAIL_MATCH:-} && "$*" == *"$FAIL_MATCH"* ]]; then echo "stand-in failure"; exit 3; fi
if [[ -n ${SLOW_MATCH:-} && "$*" == *"$SLOW_MATCH"* ]]; then exec sleep 60; fi
echo "stand-in ran: $*"
"""


SUMMARY_ROW = re.compile(r"^(?P<tier>[12]) +\d+\.\d +(?P<result>ok|FAILED \(.*?\)|TIMED OUT \(.*?\)) +(?P<step>.+)$", re.M)


def suite(*args, env=None):
    return subprocess.run(["bash", str(SUITE), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def listing(*args, env=None, unverified=False):
    """The steps --list prints (or, with unverified=True, its unverified GPU-path checks)."""
    out = suite("--list", *args, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    return [line for line in lines if line.startswith("[unverified] ") == unverified]


def test_unverified_gpu_checks_name_tests_that_exist():
    checks = listing(unverified=True)
    assert checks, "the list of GPU-path checks no GPU has run is empty"
    for check in checks:
        path, _, name = check.removeprefix("[unverified] ").split(": ", 1)[0].partition("::")
        text = (REPO / path).read_text()
        assert not name or f"def {name}(" in text, check


def test_the_script_parses():
    out = subprocess.run(["bash", "-n", str(SUITE)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_help_prints_the_usage():
    out = suite("--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: bash scripts/gpu_suite.sh")
    for option in ("--sanitize", "--list", "--help", "SIRI_BENCH_TIME_LIMIT_S"):
        assert option in out.stdout


@pytest.mark.parametrize("args, env, message", [
    (["--sanitise"], {}, "unknown option '--sanitise'"),
    (["--list"], {"SIRI_BENCH_TIME_LIMIT_S": "1m"}, "SIRI_BENCH_TIME_LIMIT_S must be a positive number"),
])
def test_bad_input_is_a_one_line_error(args, env, message):
    out = suite(*args, env=env)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and message in out.stderr


def test_list_runs_nothing(tmp_path):
    listing(env={"OUT": str(tmp_path / "out")})
    assert not (tmp_path / "out").exists()


def test_tier_2_is_listed_only_with_sanitize():
    default, sanitized = listing(), listing("--sanitize")
    assert default and all(line.startswith("[tier 1] ") for line in default)
    assert not any("compute-sanitizer" in line for line in default)
    assert sanitized[:len(default)] == default
    tier2 = sanitized[len(default):]
    assert all(line.startswith("[tier 2] ") for line in tier2)
    assert [tool for tool in ("memcheck", "racecheck") if any(f"--tool {tool} " in line for line in tier2)] == \
        ["memcheck", "racecheck"]
    assert any(line.endswith(" -m pytest -q -rs tests --junitxml=bench_results/gpu/pytest.xml") for line in tier2)


def test_tier_1_runs_the_cuda_tests_a_trainer_smoke_and_every_benchmark_under_a_limit():
    lines = listing()
    (ops,) = [line for line in lines if line.startswith("[tier 1] CUDA op tests")]
    assert " -k cuda " in ops
    for name in ("group_advantages", "logprobs", "grpo_loss", "sampling", "paged_attention", "paged_attention_run",
                 "rotary", "header_math", "attention_graph_plan", "paged_prefill", "cuda_kernel_math"):
        assert f" tests/test_{name}.py " in ops
    (engine,) = [line for line in lines if line.startswith("[tier 1] CUDA engine tests")]
    assert " tests/test_engine_cuda.py " in engine
    (smoke,) = [line for line in lines if line.startswith("[tier 1] trainer smoke")]
    for test_id in smoke.split(" -m pytest ")[1].split():
        if not test_id.startswith("-"):
            assert (REPO / test_id.split("::")[0]).is_file(), test_id
    for bench in BENCHMARKS:
        (line,) = [line for line in lines if line.startswith(f"[tier 1] {bench} ")]
        assert "(limit " in line and f" {bench} --device cuda" in line


def test_a_run_reports_each_step_and_fails_on_a_failed_or_timed_out_step(tmp_path):
    bin_dir, cuda_bin = tmp_path / "bin", tmp_path / "cuda" / "bin"
    for directory, name in ((bin_dir, "python"), (bin_dir, "nvidia-smi"), (cuda_bin, "compute-sanitizer")):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(STAND_IN)
        (directory / name).chmod(0o755)
    calls, results = tmp_path / "calls.txt", tmp_path / "out"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": str(bin_dir / "python"), "OUT": str(results),
           "CUDA_HOME": str(tmp_path / "cuda"), "CALLS": str(calls), "SIRI_BENCH_TIME_LIMIT_S": "2"}

    passing = suite("--sanitize", env=env)
    assert passing.returncode == 0, passing.stdout[-3000:]
    assert "status 0" in passing.stdout and "WARNING" not in passing.stdout
    ran = calls.read_text().splitlines()
    assert "python -m pip install --no-build-isolation --no-deps -e ." in ran
    assert sum(line.startswith("compute-sanitizer --tool ") for line in ran) == 2
    assert [b for b in BENCHMARKS if any(line.startswith(f"python {b} --device cuda") for line in ran)] == BENCHMARKS

    calls.unlink()
    failing = suite(env={**env, "FAIL_MATCH": "tests/test_engine_cuda.py", "SLOW_MATCH": "bench_sampling.py",
                         "SIRI_GPU_SUITE_BUDGET_S": "0"})
    assert failing.returncode == 1
    summary = failing.stdout[failing.stdout.index("=== summary ==="):]
    rows = list(SUMMARY_ROW.finditer(summary))
    assert {row["tier"] for row in rows} == {"1"}, "tier 2 ran without --sanitize"
    results_by_step = {row["step"]: row["result"] for row in rows}
    assert results_by_step.pop("CUDA engine tests") == "FAILED (exit 3)"
    assert results_by_step.pop("benchmarks/bench_sampling.py") == "TIMED OUT (limit 2 s)"
    assert "trainer smoke" in results_by_step and set(results_by_step.values()) == {"ok"}, summary
    assert "tier 1 total:" in summary and "WARNING: tier 1 took" in summary
    assert (results / "gpu_suite.log").read_text().endswith("results in " + str(results) + "\n")


@pytest.mark.parametrize("bench", BENCHMARKS)
def test_every_benchmark_takes_the_options_the_suite_passes(bench):
    out = subprocess.run([sys.executable, bench, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    for option in ("--device", "--repeats", "--out"):
        assert option in out.stdout, f"{bench} has no {option}"
