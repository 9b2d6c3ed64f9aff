"""Throughput of the math verifier (verifications per second).

Usage:
    python benchmarks/bench_math_verifier.py [--n 4000] [--workers N] [--timeout 5]
    python benchmarks/bench_math_verifier.py --against REF [--rounds 3]

`--against REF` measures the realistic mix with this checkout and with the verifier of git revision REF (extracted
to a temporary folder with `git archive`), alternating the two in fresh processes for `--rounds` rounds, and
prints the median throughputs, `ratio realistic_vs_REF` (>= 0.8 is the budget a change may cost) and
`ratio numeric_only_vs_REF` (the sympy-free fast path alone).

Rows:
    numeric-only        integer / decimal / fraction / thousands-separated answers: the sympy-free fast path,
                        in the calling process (one core), the pool never starts.
    realistic mix       what rollouts on MATH / GSM8K / AIME look like: mostly numbers, some radicals / pi /
                        expressions / tuples / intervals / choices / text, ~10% without a box, with wrong answers
                        mixed in; the pool is started and warmed before timing. Cache off.
    realistic mix, K=4  the same prompts with 4 rollouts each, 2 distinct answers per prompt (cache on).
    sympy-only          every pair needs sympy (radicals, pi, polynomials): the worker-pool bound.
    hostile             power towers, huge factorials, floors of huge numbers, tiny reciprocals, alone and at the
                        end of longer texts: each must be judged in under 50 ms without reaching the timeout
                        (the run fails otherwise); prints the slowest one.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

# The verifier under test: this checkout's, or another one's (`--against` sets RASFT_BENCH_ROOT for its runs).
sys.path.insert(0, os.environ.get("RASFT_BENCH_ROOT") or os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from rasft_trl.verifiers.math import MathVerifier

FILLER = (
    "Let's think step by step. First we set up the equation from the problem statement, then we simplify "
    "both sides and check the result against the constraints. "
) * 8


def _response(answer: str | None) -> str:
    if answer is None:
        return FILLER + "I am not sure how to finish this."
    return f"{FILLER}Therefore, the final answer is $\\boxed{{{answer}}}$."


def numeric_pairs(rng: random.Random, n: int) -> list[tuple[str, str]]:
    pairs = []
    for _ in range(n):
        value = rng.randint(0, 100_000)
        kind = rng.random()
        if kind < 0.5:
            gold, pred = str(value), str(value if rng.random() < 0.6 else value + 1)
        elif kind < 0.65:
            gold, pred = f"{value:,}", str(value)
        elif kind < 0.8:
            num, den = rng.randint(1, 50), rng.randint(2, 50)
            gold = f"\\frac{{{num}}}{{{den}}}"
            pred = f"{num}/{den}" if rng.random() < 0.5 else f"\\dfrac{{{num}}}{{{den + 1}}}"
        elif kind < 0.9:
            gold, pred = f"{value / 100:.2f}", f"{value / 100:.2f}"
        else:
            gold, pred = f"#### {value}", f"\\${value}"
        pairs.append((gold, _response(pred)))
    return pairs


def sympy_pairs(rng: random.Random, n: int) -> list[tuple[str, str]]:
    templates = [
        lambda a, b, r1, r2: (f"\\frac{{\\sqrt{{{a}}}}}{{{b}}}", f"\\sqrt{{{a}}}/{b}"),
        lambda a, b, r1, r2: (f"{a}\\sqrt{{2}}", f"\\sqrt{{{2 * a * a}}}"),
        lambda a, b, r1, r2: (f"\\frac{{{a}\\pi}}{{{b}}}", f"\\frac{{{a}}}{{{b}}}\\pi"),
        lambda a, b, r1, r2: (f"x^2 + {r1 + r2}x + {r1 * r2}", f"(x+{r1})(x+{r2})"),
        lambda a, b, r1, r2: (f"{a} + {b}i", f"{b}i + {a}"),
        lambda a, b, r1, r2: (f"{a}\\sqrt{{3}}", f"{a}\\sqrt{{2}}"),
    ]
    pairs = []
    for _ in range(n):
        template = rng.choice(templates)
        gold, pred = template(rng.randint(2, 40), rng.randint(2, 40), rng.randint(1, 9), rng.randint(1, 9))
        pairs.append((gold, _response(pred)))
    return pairs


def structured_pairs(rng: random.Random, n: int) -> list[tuple[str, str]]:
    pairs = []
    for _ in range(n):
        a, b = rng.randint(-9, 9), rng.randint(10, 20)
        choice = rng.choice(
            [
                (f"({a}, {b})", f"({a},{b})"),
                (f"({a}, {b}]", f"({a},{b})"),
                (f"\\{{{a}, {b}\\}}", f"{b}, {a}"),
                ("\\text{(C)}", rng.choice(["C", "(D)", "\\textbf{(C)}"])),
                ("\\text{Monday}", rng.choice(["Monday", "tuesday"])),
                (f"x = {a}", f"{a}"),
                (f"{a}^\\circ", f"{a}"),
            ]
        )
        pairs.append((choice[0], _response(choice[1])))
    return pairs


HOSTILE = [
    "9^{9^{9^{9}}} - 1", "10^{-10^{10}}", "\\frac{1}{10^{10^{10}}}", "(10^{10^{10}})!", "\\left(10^{7}\\right)! - 3",
    "\\lfloor 10^{10^{6}} \\pi \\rfloor", "\\lceil 10^{10^{5}} e \\rceil", "\\sin(10^{10^{10}})",
    "2^{2^{2^{2^{2^{2}}}}} + 1", "\\binom{10^{9}}{10^{8}}", "7^{7^{7^{7}}} \\bmod 10",
]


def hostile_row(workers: int | None, timeout: float) -> tuple[int, float, float, dict]:
    """Judge every hostile answer, alone and inside a longer text; return (pairs, slowest seconds, total seconds,
    stats). Fails when one takes 50 ms or reaches the timeout."""
    slowest = total = 0.0
    with MathVerifier(num_workers=workers, timeout=timeout, cache_size=0) as verifier:
        verifier.verify_batch([_response("\\sqrt{4}")] * verifier.num_workers, ["2"] * verifier.num_workers)
        verifier.reset_stats()
        for answer in HOSTILE:
            for response in (f"\\boxed{{{answer}}}", _response(answer)):
                started = time.perf_counter()
                result = verifier.verify(response, "7")
                elapsed = time.perf_counter() - started
                slowest, total = max(slowest, elapsed), total + elapsed
                assert elapsed < 0.05 and result.reason != "timeout", (answer, result.reason, elapsed)
        return 2 * len(HOSTILE), slowest, total, dict(verifier.stats)


def realistic_pairs(rng: random.Random, n: int) -> list[tuple[str, str]]:
    n_numeric, n_sympy, n_struct = int(n * 0.65), int(n * 0.12), int(n * 0.13)
    pairs = numeric_pairs(rng, n_numeric) + sympy_pairs(rng, n_sympy) + structured_pairs(rng, n_struct)
    pairs += [(str(rng.randint(0, 999)), _response(None)) for _ in range(n - len(pairs))]
    rng.shuffle(pairs)
    return pairs


def _run(verifier: MathVerifier, pairs: list[tuple[str, str]], batch_size: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        verifier.verify_batch([p for _, p in chunk], [g for g, _ in chunk])
    return len(pairs) / (time.perf_counter() - started)


def compared_rates(n: int, workers: int | None, timeout: float, batch_size: int) -> tuple[float, float]:
    """Throughput on the realistic mix (pool warmed, cache off), the row a change must not slow down, and on the
    numeric-only fast path (where normalization costs show)."""
    with MathVerifier(num_workers=workers, timeout=timeout, cache_size=0) as verifier:
        numeric = _run(verifier, numeric_pairs(random.Random(2), n), batch_size)
        verifier.verify_batch([_response("\\sqrt{4}")] * verifier.num_workers, ["2"] * verifier.num_workers)
        return _run(verifier, realistic_pairs(random.Random(1), n), batch_size), numeric


def against(ref: str, args: argparse.Namespace) -> None:
    """Side by side: this checkout vs git revision `ref`, alternating fresh processes."""
    here = os.path.dirname(os.path.abspath(__file__))
    repo = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=here, capture_output=True, text=True,
                          check=True).stdout.strip()
    rates: dict[str, list[tuple[float, float]]] = {"this checkout": [], ref: []}
    with tempfile.TemporaryDirectory(prefix="bench-ref-") as other:
        archive = subprocess.run(["git", "archive", ref], cwd=repo, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", other], input=archive, check=True)
        for round_index in range(args.rounds):
            for name, root in (("this checkout", repo), (ref, other)):
                command = [sys.executable, os.path.abspath(__file__), "--realistic-only", "--n", str(args.n),
                           "--timeout", str(args.timeout), "--batch-size", str(args.batch_size)]
                if args.workers is not None:
                    command += ["--workers", str(args.workers)]
                out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=root,
                                     env={**os.environ, "RASFT_BENCH_ROOT": root})
                realistic, numeric = map(float, out.stdout.strip().splitlines()[-1].split())
                rates[name].append((realistic, numeric))
                print(f"round {round_index + 1}: {name:<15} realistic {realistic:8.0f} verif/s, "
                      f"numeric-only {numeric:8.0f} verif/s", flush=True)
    for row, label in ((0, "realistic"), (1, "numeric_only")):
        medians = {name: statistics.median(value[row] for value in values) for name, values in rates.items()}
        print(f"median {label}: this checkout {medians['this checkout']:.0f}, {ref} {medians[ref]:.0f} verif/s")
        print(f"ratio {label}_vs_{ref}: {medians['this checkout'] / medians[ref]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4000, help="pairs per row (sympy-only uses n/8)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default min(4, cpus))")
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--against", default=None, help="git revision to compare the realistic mix with")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds for --against")
    parser.add_argument("--realistic-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.realistic_only:
        print(*compared_rates(args.n, args.workers, args.timeout, args.batch_size))
        return
    if args.against:
        against(args.against, args)
        return
    rng = random.Random(0)
    rows = []

    with MathVerifier(num_workers=args.workers, timeout=args.timeout, cache_size=0) as verifier:
        rate = _run(verifier, numeric_pairs(rng, args.n), args.batch_size)
        assert verifier._pool is None, "numeric answers started the pool"
        rows.append(("numeric-only (fast path, 1 core)", args.n, rate, verifier.stats))

    with MathVerifier(num_workers=args.workers, timeout=args.timeout, cache_size=0) as verifier:
        verifier.verify_batch([_response("\\sqrt{4}")] * verifier.num_workers, ["2"] * verifier.num_workers)
        verifier.reset_stats()
        rate = _run(verifier, realistic_pairs(rng, args.n), args.batch_size)
        rows.append((f"realistic mix ({verifier.num_workers} workers, no cache)", args.n, rate, verifier.stats))

    with MathVerifier(num_workers=args.workers, timeout=args.timeout) as verifier:
        verifier.verify_batch([_response("\\sqrt{4}")] * verifier.num_workers, ["2"] * verifier.num_workers)
        verifier.reset_stats()
        prompts = realistic_pairs(rng, args.n // 4)
        pairs = []
        for gold, response in prompts:
            pairs += [(gold, response), (gold, response), (gold, response), (gold, _response("0"))]
        rate = _run(verifier, pairs, args.batch_size)
        rows.append((f"realistic mix, K=4 rollouts ({verifier.num_workers} workers, cache)", len(pairs), rate,
                     verifier.stats))

    with MathVerifier(num_workers=args.workers, timeout=args.timeout, cache_size=0) as verifier:
        verifier.verify_batch([_response("\\sqrt{4}")] * verifier.num_workers, ["2"] * verifier.num_workers)
        verifier.reset_stats()
        n = max(8, args.n // 8)
        rate = _run(verifier, sympy_pairs(rng, n), args.batch_size)
        rows.append((f"sympy-only ({verifier.num_workers} workers)", n, rate, verifier.stats))

    n_hostile, slowest, total, stats = hostile_row(args.workers, args.timeout)
    rows.append((f"hostile (slowest {1000 * slowest:.1f} ms, limit 50 ms)", n_hostile, n_hostile / total, stats))

    print(f"cpus: {os.cpu_count()}, python {sys.version.split()[0]}")
    print(f"{'workload':<55} {'pairs':>7} {'verif/s':>10} {'fast':>6} {'sympy':>6} {'cache':>6} {'timeouts':>8}")
    for name, n, rate, stats in rows:
        print(f"{name:<55} {n:>7} {rate:>10.0f} {stats['fast_path']:>6} {stats['sympy']:>6} "
              f"{stats['cache_hits']:>6} {stats['timeouts']:>8}")


if __name__ == "__main__":
    main()
