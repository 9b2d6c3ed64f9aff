"""Time bounds of the math verifier: hard timeouts, worker replacement, ordering, pathological input."""

from __future__ import annotations

import time

import pytest

from rasft_trl.verifiers import Verdict
from rasft_trl.verifiers._timeout import KillablePool, default_start_method
from rasft_trl.verifiers.math import MathVerifier

C, I, J = Verdict.CORRECT, Verdict.INCORRECT, Verdict.CANNOT_JUDGE  # noqa: E741
TIMEOUT = 1.5


@pytest.fixture(scope="module")
def verifier():
    with MathVerifier(timeout=TIMEOUT, num_workers=2) as v:
        v.verify("\\boxed{\\sqrt{4}}", "2")  # start and warm the workers outside the timed tests
        yield v


def test_default_start_method_is_not_fork():
    assert default_start_method() in ("forkserver", "spawn")


def test_pool_outcomes_in_order_with_timeout_crash_and_error():
    pool = KillablePool(2)
    try:
        tasks = [("1+1",), ("__import__('time').sleep(60)",), ("__import__('os')._exit(3)",), ("int('x')",), ("2*3",)]
        started = time.perf_counter()
        outcomes = pool.run(eval, tasks, timeout=1.0)
        elapsed = time.perf_counter() - started
        assert [o.status for o in outcomes] == ["ok", "timeout", "died", "error", "ok"]
        assert outcomes[0].value == 2 and outcomes[4].value == 6 and "ValueError" in outcomes[3].value
        assert pool.restarts == 2
        assert elapsed < 15
        assert [o.value for o in pool.run(eval, [("3",), ("4",)], timeout=5.0)] == [3, 4]  # replaced workers work
    finally:
        pool.close()


def test_pool_memory_limit():
    pool = KillablePool(1, memory_limit_mb=200)
    try:
        task = "(lambda b: __import__('time').sleep(60))(b'x' * (400 * 2**20))"
        outcome = pool.run(eval, [(task,)], timeout=20.0)[0]
        assert outcome.status in ("memory", "died") and outcome.seconds < 15
    finally:
        pool.close()


def test_power_towers_are_bounded(verifier):
    """`10^{10^{10}}` is rejected numerically (mpmath has no exponent limit) in well under the timeout."""
    started = time.perf_counter()
    results = verifier.verify_batch(["$\\boxed{10^{10^{10}}}$", "$\\boxed{2^{2^{2^{2^{2^{2}}}}} + 1}$"], ["5", "7"])
    assert [r.verdict for r in results] == [I, I]
    assert time.perf_counter() - started < TIMEOUT


@pytest.fixture(scope="module")
def unguarded():
    """A verifier without the magnitude guard (`max_digits`), so that a hostile answer reaches a worker."""
    with MathVerifier(timeout=TIMEOUT, num_workers=1, max_digits=None) as v:
        yield v


def test_hanging_comparison_times_out(unguarded):
    """`sin(10^{10^{10}})` needs 10^10 digits of pi: sympy / mpmath hang in C code; the worker is killed. (With the
    default `max_digits` it never reaches a worker: see test_math_verifier's hostile answers.)"""
    verifier = unguarded
    before = dict(verifier.stats)
    started = time.perf_counter()
    result = verifier.verify("so $\\boxed{\\sin(10^{10^{10}})}$", "5")
    elapsed = time.perf_counter() - started
    assert (result.verdict, result.reason) == (I, "timeout")
    assert elapsed < TIMEOUT + 3
    assert verifier.stats["timeouts"] == before["timeouts"] + 1
    assert verifier.stats["worker_restarts"] == before["worker_restarts"] + 1
    assert verifier.verify("\\boxed{\\sqrt{9}}", "3").verdict is C  # the pool recovered


def test_nested_fractions_are_bounded(verifier):
    nested = "\\frac{1}{" * 500 + "2" + "}" * 500
    with MathVerifier(timeout=TIMEOUT, num_workers=1, max_answer_chars=10_000) as v:
        started = time.perf_counter()
        result = v.verify(f"\\boxed{{{nested}}}", "\\frac{1}{3}")
        assert result.verdict is I and time.perf_counter() - started < TIMEOUT + 10
    result = verifier.verify(f"\\boxed{{{nested}}}", "\\frac{1}{3}")
    assert (result.verdict, result.reason) == (I, "answer_too_long")


def test_huge_prediction_is_capped(verifier):
    filler = "Let us think about this very carefully. " * 2500  # 100 kB
    started = time.perf_counter()
    results = verifier.verify_batch(
        [filler + "\\boxed{7}", filler, "\\boxed{" + "1+" * 2_500 + "1}", "\\boxed{7}" + filler,
         "\\boxed{" + "1+" * 50_000 + "1}"],
        ["7"] * 5,
    )
    assert time.perf_counter() - started < 2
    assert [r.reason for r in results[:3]] == ["string_match", "no_box", "answer_too_long"]
    # The box starts outside the searched tail (`max_prediction_chars`): the response has no final answer.
    assert results[3].reason == results[4].reason == "no_box"


def test_batch_order_with_mixed_paths(unguarded):
    verifier = unguarded
    before = verifier.stats["timeouts"]
    responses = [
        "\\boxed{42}",  # fast path
        "\\boxed{\\frac{\\sqrt{2}}{2}}",  # sympy, correct
        "\\boxed{\\sin(10^{10^{10}})}",  # sympy, times out
        "\\boxed{\\sqrt{3}}",  # sympy, incorrect
        "no box",
        "\\boxed{x^2 - 1}",  # sympy, correct
    ]
    golds = ["42", "\\frac{1}{\\sqrt{2}}", "7", "\\sqrt{2}", "1", "(x-1)(x+1)"]
    results = verifier.verify_batch(responses, golds)
    assert [r.verdict for r in results] == [C, C, I, I, I, C]
    assert [r.reason for r in results][2:5] == ["timeout", "sympy_unequal", "no_box"]
    assert verifier.stats["timeouts"] == before + 1


def test_interrupted_run_does_not_leak_into_the_next(monkeypatch):
    pool = KillablePool(1)
    try:
        assert pool.run(eval, [("1",)], timeout=10.0)[0].value == 1
        calls = {"n": 0}
        original = pool._enforce_limits

        def interrupt_once(outcomes, timeout):
            calls["n"] += 1
            if calls["n"] == 1:
                raise KeyboardInterrupt
            return original(outcomes, timeout)

        monkeypatch.setattr(pool, "_enforce_limits", interrupt_once)
        with pytest.raises(KeyboardInterrupt):
            pool.run(eval, [("__import__('time').sleep(0.5) or 'stale'",)], timeout=10.0)
        assert [o.value for o in pool.run(eval, [("2",), ("3",)], timeout=10.0)] == [2, 3]
    finally:
        pool.close()
