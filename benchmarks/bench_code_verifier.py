"""Throughput of the code verifier on HumanEval-sized programs.

    python benchmarks/bench_code_verifier.py [--repeats 3] [--workers N]

Twelve HumanEval-like problems, each with a correct and an incorrect solution and 5-10 asserts, are
verified (`CodeVerifier.verify_batch`) with one worker, with N workers, and with N workers without the
kernel isolation layers (Landlock, network namespace). A bare interpreter start (`python -I -S -c pass`,
sequential) is the floor. Every row of the table is measured in the same run; ratios are against the
one-worker row. The script also checks that every verdict is right.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from rasft_trl.verifiers.code import CodeVerifier
from rasft_trl.verifiers.sandbox import Sandbox

# name -> (correct solution, incorrect solution, tests)
PROBLEMS = {
    "has_close_elements": (
        "def has_close_elements(numbers, threshold):\n"
        "    for i, a in enumerate(numbers):\n"
        "        for j, b in enumerate(numbers):\n"
        "            if i != j and abs(a - b) < threshold:\n"
        "                return True\n"
        "    return False\n",
        "def has_close_elements(numbers, threshold):\n"
        "    for a, b in zip(numbers, numbers[1:]):\n"
        "        if abs(a - b) < threshold:\n"
        "            return True\n"
        "    return False\n",
        "assert has_close_elements([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True\n"
        "assert has_close_elements([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05) == False\n"
        "assert has_close_elements([1.0, 2.0, 5.9, 4.0, 5.0], 0.95) == True\n"
        "assert has_close_elements([1.0, 2.0, 5.9, 4.0, 5.0], 0.8) == False\n"
        "assert has_close_elements([1.0, 2.0, 3.0, 4.0, 5.0, 2.0], 0.1) == True\n"
        "assert has_close_elements([1.1, 2.2, 3.1, 4.1, 5.1], 1.0) == True\n"
        "assert has_close_elements([1.1, 2.2, 3.1, 4.1, 5.1], 0.5) == False\n",
    ),
    "below_zero": (
        "def below_zero(operations):\n"
        "    balance = 0\n"
        "    for op in operations:\n"
        "        balance += op\n"
        "        if balance < 0:\n"
        "            return True\n"
        "    return False\n",
        "def below_zero(operations):\n    return sum(operations) < 0\n",
        "assert below_zero([]) == False\n"
        "assert below_zero([1, 2, -3, 1, 2, -3]) == False\n"
        "assert below_zero([1, 2, -4, 5, 6]) == True\n"
        "assert below_zero([1, -1, 2, -2, 5, -5, 4, -4]) == False\n"
        "assert below_zero([1, -1, 2, -2, 5, -5, 4, -5]) == True\n"
        "assert below_zero([1, -2, 2, -2, 5, -5, 4, -4]) == True\n",
    ),
    "mean_absolute_deviation": (
        "def mean_absolute_deviation(numbers):\n"
        "    mean = sum(numbers) / len(numbers)\n"
        "    return sum(abs(x - mean) for x in numbers) / len(numbers)\n",
        "def mean_absolute_deviation(numbers):\n"
        "    mean = sum(numbers) / len(numbers)\n"
        "    return sum(abs(x - mean) for x in numbers) / (len(numbers) - 1)\n",
        "assert abs(mean_absolute_deviation([1.0, 2.0, 3.0]) - 2.0 / 3.0) < 1e-6\n"
        "assert abs(mean_absolute_deviation([1.0, 2.0, 3.0, 4.0]) - 1.0) < 1e-6\n"
        "assert abs(mean_absolute_deviation([1.0, 2.0, 3.0, 4.0, 5.0]) - 6.0 / 5.0) < 1e-6\n"
        "assert abs(mean_absolute_deviation([2.0, 2.0]) - 0.0) < 1e-6\n"
        "assert abs(mean_absolute_deviation([-1.0, 1.0]) - 1.0) < 1e-6\n",
    ),
    "intersperse": (
        "def intersperse(numbers, delimiter):\n"
        "    out = []\n"
        "    for i, n in enumerate(numbers):\n"
        "        if i:\n"
        "            out.append(delimiter)\n"
        "        out.append(n)\n"
        "    return out\n",
        "def intersperse(numbers, delimiter):\n"
        "    out = []\n"
        "    for n in numbers:\n"
        "        out += [n, delimiter]\n"
        "    return out\n",
        "assert intersperse([], 7) == []\n"
        "assert intersperse([5, 6, 3, 2], 8) == [5, 8, 6, 8, 3, 8, 2]\n"
        "assert intersperse([2, 2, 2], 2) == [2, 2, 2, 2, 2]\n"
        "assert intersperse([1], 0) == [1]\n"
        "assert intersperse([1, 2], -1) == [1, -1, 2]\n",
    ),
    "is_palindrome": (
        "def is_palindrome(text):\n    return text == text[::-1]\n",
        "def is_palindrome(text):\n    return text[0] == text[-1] if text else True\n",
        "assert is_palindrome('') == True\n"
        "assert is_palindrome('aba') == True\n"
        "assert is_palindrome('aaaaa') == True\n"
        "assert is_palindrome('zbcd') == False\n"
        "assert is_palindrome('xywyx') == True\n"
        "assert is_palindrome('xywyz') == False\n"
        "assert is_palindrome('xywzx') == False\n",
    ),
    "fib": (
        "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
        "def fib(n):\n    a, b = 1, 1\n    for _ in range(n - 1):\n        a, b = b, a + b\n    return a\n",
        "assert fib(10) == 55\nassert fib(1) == 1\nassert fib(8) == 21\nassert fib(11) == 89\nassert fib(12) == 144\n"
        "assert fib(0) == 0\n",
    ),
    "vowels_count": (
        "def vowels_count(s):\n"
        "    n = sum(c in 'aeiouAEIOU' for c in s)\n"
        "    return n + (1 if s and s[-1] in 'yY' else 0)\n",
        "def vowels_count(s):\n    return sum(c in 'aeiouy' for c in s)\n",
        "assert vowels_count('abcde') == 2\nassert vowels_count('Alone') == 3\nassert vowels_count('key') == 2\n"
        "assert vowels_count('bye') == 1\nassert vowels_count('keY') == 2\nassert vowels_count('bYe') == 1\n"
        "assert vowels_count('ACEDY') == 3\n",
    ),
    "unique": (
        "def unique(l):\n    return sorted(set(l))\n",
        "def unique(l):\n    return list(dict.fromkeys(l))\n",
        "assert unique([5, 3, 5, 2, 3, 3, 9, 0, 123]) == [0, 2, 3, 5, 9, 123]\n"
        "assert unique([]) == []\nassert unique([1, 1, 1]) == [1]\nassert unique([3, 2, 1]) == [1, 2, 3]\n"
        "assert unique([-1, 0, -1]) == [-1, 0]\n",
    ),
    "fizz_buzz": (
        "def fizz_buzz(n):\n    return sum(str(i).count('7') for i in range(n) if i % 11 == 0 or i % 13 == 0)\n",
        "def fizz_buzz(n):\n    return sum(1 for i in range(n) if (i % 11 == 0 or i % 13 == 0) and '7' in str(i))\n",
        "assert fizz_buzz(50) == 0\nassert fizz_buzz(78) == 2\nassert fizz_buzz(79) == 3\nassert fizz_buzz(100) == 3\n"
        "assert fizz_buzz(200) == 6\nassert fizz_buzz(4000) == 192\nassert fizz_buzz(10000) == 639\n"
        "assert fizz_buzz(100000) == 8026\n",
    ),
    "is_prime": (
        "def is_prime(n):\n"
        "    if n < 2:\n"
        "        return False\n"
        "    i = 2\n"
        "    while i * i <= n:\n"
        "        if n % i == 0:\n"
        "            return False\n"
        "        i += 1\n"
        "    return True\n",
        "def is_prime(n):\n    return n > 1 and all(n % i for i in range(2, int(n ** 0.5)))\n",
        "assert is_prime(6) == False\nassert is_prime(101) == True\nassert is_prime(11) == True\n"
        "assert is_prime(13441) == True\nassert is_prime(61) == True\nassert is_prime(4) == False\n"
        "assert is_prime(1) == False\nassert is_prime(5) == True\nassert is_prime(11 * 7) == False\n"
        "assert is_prime(13441 * 19) == False\n",
    ),
    "rolling_max": (
        "def rolling_max(numbers):\n"
        "    out, best = [], None\n"
        "    for n in numbers:\n"
        "        best = n if best is None else max(best, n)\n"
        "        out.append(best)\n"
        "    return out\n",
        "def rolling_max(numbers):\n    return [max(numbers[: i + 1]) for i in range(len(numbers) - 1)]\n",
        "assert rolling_max([]) == []\nassert rolling_max([1, 2, 3, 4]) == [1, 2, 3, 4]\n"
        "assert rolling_max([4, 3, 2, 1]) == [4, 4, 4, 4]\n"
        "assert rolling_max([3, 2, 3, 100, 3]) == [3, 3, 3, 100, 100]\n"
        "assert rolling_max([1, 2, 3, 2, 3, 4, 2]) == [1, 2, 3, 3, 3, 4, 4]\n",
    ),
    "parse_nested_parens": (
        "def parse_nested_parens(paren_string):\n"
        "    depths = []\n"
        "    for group in paren_string.split():\n"
        "        depth = best = 0\n"
        "        for c in group:\n"
        "            depth += 1 if c == '(' else -1\n"
        "            best = max(best, depth)\n"
        "        depths.append(best)\n"
        "    return depths\n",
        "def parse_nested_parens(paren_string):\n    return [g.count('(') for g in paren_string.split()]\n",
        "assert parse_nested_parens('(()()) ((())) () ((())()())') == [2, 3, 1, 3]\n"
        "assert parse_nested_parens('() (()) ((())) (((())))') == [1, 2, 3, 4]\n"
        "assert parse_nested_parens('(()(())((())))') == [4]\n"
        "assert parse_nested_parens('') == []\nassert parse_nested_parens('()') == [1]\n",
    ),
}


def response(code: str) -> str:
    return f"Here is an implementation.\n\n```python\n{code}```\n\nIt handles the edge cases."


def batch(repeats: int):
    predictions, tests, expected = [], [], []
    for _ in range(repeats):
        for correct, wrong, test in PROBLEMS.values():
            for code, ok in ((correct, True), (wrong, False)):
                predictions.append(response(code))
                tests.append(test)
                expected.append(ok)
    return predictions, tests, expected


def bare_starts(n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], check=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="passes over the 24 programs per configuration")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    predictions, tests, expected = batch(args.repeats)
    n = len(predictions)
    n_asserts = sum(t.count("assert ") for t in tests) / n
    print(
        f"{len(PROBLEMS)} problems x (correct, incorrect) x {args.repeats} = {n} programs, "
        f"{n_asserts:.1f} asserts each on average; {os.cpu_count()} CPUs\n"
    )

    rows = []
    seconds = bare_starts(n)
    rows.append(("bare `python -I -S -c pass`, sequential", n, seconds, None))
    configs = [
        ("sandbox, 1 worker", 1, True),
        (f"sandbox, {args.workers} workers", args.workers, True),
        (f"sandbox, {args.workers} workers, no Landlock/netns", args.workers, False),
    ]
    isolation = None
    for label, workers, kernel in configs:
        verifier = CodeVerifier(
            num_workers=workers, sandbox=Sandbox(timeout_s=10.0, landlock=kernel, network_namespace=kernel)
        )
        verifier.verify_batch(predictions[:2], tests[:2])  # warm the page cache
        verifier.reset_stats()
        t0 = time.perf_counter()
        results = verifier.verify_batch(predictions, tests)
        seconds = time.perf_counter() - t0
        wrong = [i for i, (r, ok) in enumerate(zip(results, expected)) if r.correct != ok]
        if wrong:
            raise SystemExit(f"{label}: wrong verdicts for programs {wrong}: {[results[i].reason for i in wrong]}")
        if kernel:
            isolation = results[0].details.get("isolation")
        rows.append((label, n, seconds, verifier.stats["sandbox_seconds"] / n))

    base = rows[1][2]
    print(f"{'configuration':<48} {'runs':>5} {'seconds':>8} {'runs/s':>8} {'ms/run':>8} {'vs 1 worker':>12}")
    for label, runs, seconds, latency in rows:
        ms = f"{1000 * latency:8.1f}" if latency is not None else f"{1000 * seconds / runs:8.1f}"
        print(f"{label:<48} {runs:>5} {seconds:8.2f} {runs / seconds:8.1f} {ms} {base / seconds:11.2f}x")
    print(f"\nall {n} verdicts correct; isolation in effect: {isolation}")
    print("ms/run: mean wall time of one sandboxed run (start-up, program, tests, clean-up)")


if __name__ == "__main__":
    main()
