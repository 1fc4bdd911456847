"""Reward scoring of one step's responses: serial (the trainer's main thread) vs the
process pool (siri.rewards.pool.RewardPool), with siri.rewards.capped:capped_reward.

The responses (1,024 by default: 128 prompts x 8 samples) are a seeded mix, every one
distinct (math-verify caches its last 20 parses): easy answers after a paragraph of
reasoning (right or wrong integers, fractions vs decimals, intervals, sets, matrices,
surds, polynomials) and pathological LaTeX (nested fractions, towers of exponents, long
sums, unbalanced braces, very long garbage, truncated responses). With --hard N, N of them
are towers on which math-verify runs into its own 5 s timeout.

Reported: the median wall time of scoring all responses serially and with the pool over
--repeats interleaved runs, the median speedup (with its spread), speedup per worker,
milliseconds per response, and the goal check: >= 0.8 x workers where the machine has more
CPUs than workers (the parent needs little), not slower than serial otherwise. Every run's
rewards are checked to be identical between the two, else the timing would be meaningless.
Also the start-up time of the pool (fork server and workers, first start in the process)
and of one worker once the fork server runs (what replacing a killed worker costs).
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from siri.rewards.capped import capped_reward  # noqa: E402
from siri.rewards.pool import RewardPool, default_reward_workers  # noqa: E402
from siri.rewards.scoring import score_serially  # noqa: E402

SPEC = "siri.rewards.capped:capped_reward"
WORDS = ("so", "the", "we", "get", "then", "therefore", "let", "note", "that", "sum", "of", "both",
         "sides", "by", "substituting", "which", "gives", "$x$", "$y = 2x + 1$", "$n^2$", "equals")


def reasoning(rng: random.Random) -> str:
    """A paragraph of filler before the final answer (like a model's chain of thought)."""
    return " ".join(rng.choice(WORDS) for _ in range(rng.randrange(50, 400))) + ". "


def nested_fraction(rng: random.Random, depth: int) -> str:
    s = str(rng.randrange(1, 9))
    for _ in range(depth):
        s = rf"\frac{{{rng.randrange(1, 9)}}}{{{rng.randrange(1, 9)}+{s}}}"
    return s


def response(rng: random.Random, i: int) -> tuple[str, str, str]:
    """The i-th ``(response_text, reference, finish_reason)``; ``i`` keeps it distinct."""
    kind = rng.random()
    n = 1000 + i
    if kind < 0.30:   # an integer, right or wrong
        return reasoning(rng) + rf"so the answer is \boxed{{{n + rng.choice((0, 0, 1))}}}", str(n), "stop"
    if kind < 0.42:   # a fraction against a decimal
        return reasoning(rng) + rf"\boxed{{\frac{{{n}}}{{8}}}}", f"{n / rng.choice((8, 4)):g}", "stop"
    if kind < 0.48:   # an interval or a set, reordered
        if rng.random() < 0.5:
            return reasoning(rng) + rf"\boxed{{(-\infty, {n}]}}", rf"(-\infty,{n}]", "stop"
        return reasoning(rng) + rf"\boxed{{\{{{n},{n + 1},{n + 2}\}}}}", rf"\{{{n + 2},{n},{n + 1}\}}", "stop"
    if kind < 0.54:   # a surd or a polynomial in another form
        if rng.random() < 0.5:
            surd = rf"\sqrt{{{n + 3}+2\sqrt{{{3 * n}}}}}"
            return reasoning(rng) + rf"\boxed{{\sqrt{{{n}}}+\sqrt{{3}}}}", surd, "stop"
        return reasoning(rng) + rf"\boxed{{(x+{n})^{{{rng.randrange(2, 9)}}}}}", rf"x^2+{2 * n}x+{n * n}", "stop"
    if kind < 0.60:   # a matrix
        m = rf"\begin{{pmatrix}}{n}&2\\3&{i}\end{{pmatrix}}"
        return reasoning(rng) + rf"\boxed{{{m}}}", m, "stop"
    if kind < 0.67:   # a nested continued fraction
        return reasoning(rng) + rf"\boxed{{{nested_fraction(rng, rng.randrange(2, 8))}}}", str(n), "stop"
    if kind < 0.73:   # a tower of exponents or a huge power
        if rng.random() < 0.5:
            return reasoning(rng) + rf"\boxed{{2^{{2^{{2^{{2^{{{n}}}}}}}}}}}", f"2^{{{n}}}", "stop"
        return reasoning(rng) + rf"\boxed{{10^{{10^{{{rng.randrange(3, 7)}}}}}+{n}}}", str(n), "stop"
    if kind < 0.79:   # a long sum
        terms = rng.randrange(10, 80)
        return (reasoning(rng) + r"\boxed{" + "+".join(str(n + k) for k in range(terms)) + "}",
                str(sum(n + k for k in range(terms)) + rng.choice((0, 1))), "stop")
    if kind < 0.85:   # unbalanced braces: the box never closes
        return reasoning(rng) + rf"the answer is \boxed{{\frac{{{n}}}{{2}}", str(n / 2), "stop"
    if kind < 0.91:   # very long garbage with a garbage box at the end
        tokens = (r"\alpha", "{", "}", "x", "^", "_", r"\frac", str(n), "+", "(", ")", r"\left", "=")
        junk = " ".join(rng.choice(tokens) for _ in range(rng.randrange(500, 3000)))
        return junk + r" \boxed{" + f"x^{n}" * rng.randrange(2, 20) + "}", str(n), "stop"
    return reasoning(rng) * 4, str(n), "length"  # truncated at the cap: scores 0 at once


def hard_response(i: int) -> tuple[str, str, str]:
    """A tower math-verify cannot finish within its own 5 s limit."""
    return rf"\boxed{{2^{{2^{{2^{{{5 + i}}}}}}}}}", f"2^{{{32 + i}}}", "stop"


def make_items(n: int, hard: int, seed: int = 0) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    items = [response(rng, i) for i in range(n - hard)] + [hard_response(i) for i in range(hard)]
    rng.shuffle(items)
    return items


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=default_reward_workers(),
                   help="pool size (default: default_reward_workers(), min(8, CPUs))")
    p.add_argument("--responses", type=int, default=1024)
    p.add_argument("--hard", type=int, default=0, help="responses that hit math-verify's 5 s timeout")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--timeout", type=float, default=30.0, help="reward.timeout_s (the trainer's default)")
    p.add_argument("--quick", action="store_true", help="256 responses, 1 repeat")
    p.add_argument("--out", default=os.environ.get("SIRI_BENCH_OUT", "bench_results"),
                   help="directory for the JSON results file")
    p.add_argument("--check-goal", action="store_true", help="exit with status 1 when the speedup goal is not met")
    p.add_argument("--device", default="cpu",
                   help="accepted for gpu_suite.sh, which passes --device cuda to every benchmark; scoring runs on "
                        "the CPUs whatever it says")
    args = p.parse_args()
    if args.quick:
        args.responses, args.repeats = 256, 1
    cpus = len(os.sched_getaffinity(0))
    # fresh responses every repeat (as in training): SymPy's and math-verify's caches would
    # otherwise favour the serial path, which sees every response again in one process
    batches = [make_items(args.responses, args.hard, seed=r) for r in range(args.repeats)]
    print(f"{args.responses} responses ({args.hard} hard), {args.workers} workers, {cpus} CPUs, "
          f"{args.repeats} repeats")

    start = time.perf_counter()
    pool = RewardPool(SPEC, args.workers, args.timeout)
    first_start_s = time.perf_counter() - start
    start = time.perf_counter()
    RewardPool(SPEC, 1, args.timeout).close()
    worker_start_s = time.perf_counter() - start
    print(f"pool start (fork server + {args.workers} workers) {first_start_s:.2f} s; "
          f"one more worker (warm fork server) {1e3 * worker_start_s:.0f} ms")

    results, times, correct, errors = {}, {"serial": [], "pool": []}, 0, 0
    with pool:
        warm = make_items(8 * args.workers, 0, seed=-1)  # first calls in each process (lazy imports)
        assert pool.score(warm).rewards == score_serially(capped_reward, warm, args.timeout).rewards
        for items in batches:
            candidates = {"serial": lambda items=items: score_serially(capped_reward, items, args.timeout),
                          "pool": lambda items=items: pool.score(items)}
            for name, fn in candidates.items():
                start = time.perf_counter()
                results[name] = fn()
                times[name].append(time.perf_counter() - start)
            s, q = results["serial"], results["pool"]
            assert s.rewards == q.rewards, "pool and serial rewards differ"
            assert (q.crashes, q.replaced_workers) == (0, 0), q
            correct, errors = correct + sum(r > 0 for r in s.rewards), errors + s.errors
            print(f"  serial {times['serial'][-1]:6.2f} s   pool {times['pool'][-1]:6.2f} s")

    serial_s, pool_s = common.median(times["serial"]), common.median(times["pool"])
    spread = common.ratio_spread(times["serial"], times["pool"])
    speedup = spread["median"]
    goal = 0.8 * args.workers if cpus > args.workers else 1.0
    row = dict(responses=args.responses, hard=args.hard, workers=args.workers, cpus=cpus, serial_s=serial_s,
               pool_s=pool_s, speedup=speedup, speedup_min=spread["min"], speedup_max=spread["max"],
               speedup_per_worker=speedup / args.workers, serial_ms_per_response=1e3 * serial_s / args.responses,
               pool_ms_per_response=1e3 * pool_s / args.responses, goal_speedup=goal, goal_met=speedup >= goal,
               pool_start_s=first_start_s, worker_start_s=worker_start_s, correct=correct, errors=errors,
               times=times)
    print(f"{'':8}{'median s':>10}{'ms/resp':>9}")
    print(f"{'serial':8}{serial_s:10.2f}{row['serial_ms_per_response']:9.2f}")
    print(f"{'pool':8}{pool_s:10.2f}{row['pool_ms_per_response']:9.2f}")
    print(f"speedup x{speedup:.2f} [{spread['min']:.2f}, {spread['max']:.2f}] with {args.workers} workers "
          f"({speedup / args.workers:.2f} per worker); goal >= x{goal:.2f} "
          f"({'0.8 x workers' if cpus > args.workers else 'not slower than serial: no CPU to spare'}): "
          f"{'met' if row['goal_met'] else 'NOT met'}")
    print(f"rewards identical in every repeat; {correct} of {args.responses * args.repeats} correct, "
          f"{errors} reward errors")
    common.write_results(args.out, "rewards", row)
    if args.check_goal and not row["goal_met"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
