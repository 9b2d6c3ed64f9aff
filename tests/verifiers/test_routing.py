"""RoutedVerifier: a mixed dataset routed by its `task` column, usable as a TRL reward function."""

from __future__ import annotations

import pytest

from rasft_trl.verifiers import Verdict, Verifier, VerifyResult, register_verifier
from rasft_trl.verifiers.code import CodeVerifier
from rasft_trl.verifiers.routing import RoutedVerifier


class ExactMatch(Verifier):
    """A tiny verifier with its own reference column."""

    reference_column = "answer"

    def __init__(self):
        self.seen_rows = []

    def verify_batch(self, predictions, references, rows=None):
        self.seen_rows.extend(rows or [])
        return [
            VerifyResult(
                Verdict.CANNOT_JUDGE if ref is None else Verdict.CORRECT if p.strip() == ref else Verdict.INCORRECT
            )
            for p, ref in zip(predictions, references)
        ]


class Recorder:
    """A plain TRL reward function that records what it was called with."""

    def __init__(self, value=0.5):
        self.value = value
        self.calls = []

    def __call__(self, prompts=None, completions=None, completion_ids=None, **columns):
        self.calls.append(
            {"prompts": prompts, "completions": completions, "completion_ids": completion_ids, **columns}
        )
        return [self.value] * len(completions)


CODE_OK = "```python\ndef f():\n    return 1\n```"


@pytest.fixture(scope="module")
def code() -> CodeVerifier:
    return CodeVerifier(timeout_s=3.0, num_workers=2)


def test_routes_rows_and_keeps_order(code):
    exact, other = ExactMatch(), Recorder(0.25)
    routed = RoutedVerifier({"qa": exact, "code": code, "other": other})
    out = routed(
        prompts=["p0", "p1", "p2", "p3"],
        completions=["4", CODE_OK, "free text", "5"],
        completion_ids=[[0], [1], [2], [3]],
        task=["qa", "code", "other", "qa"],
        answer=["4", None, None, "4"],
        tests=[None, "assert f() == 1", None, None],
    )
    assert out == [1.0, 1.0, 0.25, 0.0]


def test_callables_get_their_rows_columns():
    rec = Recorder()
    routed = RoutedVerifier({"a": rec, "b": Recorder()})
    routed(
        prompts=["p0", "p1", "p2"],
        completions=["c0", "c1", "c2"],
        completion_ids=[[0], [1], [2]],
        task=["a", "b", "a"],
        extra=["x0", "x1", "x2"],
        trainer_state="state",  # not per-row: passed through unchanged
    )
    (call,) = rec.calls
    assert call["prompts"] == ["p0", "p2"] and call["completions"] == ["c0", "c2"]
    assert call["completion_ids"] == [[0], [2]]
    assert call["extra"] == ["x0", "x2"] and call["task"] == ["a", "a"]
    assert call["trainer_state"] == "state"


def test_registered_names_are_resolved():
    register_verifier("test_exact_match", ExactMatch)
    routed = RoutedVerifier({"qa": "test_exact_match", "code": "code"})
    assert isinstance(routed.routes["qa"], ExactMatch) and isinstance(routed.routes["code"], CodeVerifier)
    with pytest.raises(ValueError, match="no_such_verifier"):
        RoutedVerifier({"x": "no_such_verifier"})


def test_math_and_code_by_name():
    pytest.importorskip("rasft_trl.verifiers.math")
    routed = RoutedVerifier({"math": "math", "code": "code"})
    out = routed(
        prompts=["2+2?", "write f"],
        completions=["The answer is \\boxed{4}.", CODE_OK],
        task=["math", "code"],
        answer=["4", None],
        tests=[None, "assert f() == 1"],
    )
    assert out == [1.0, 1.0]


def test_unknown_task_names_row_and_value():
    routed = RoutedVerifier({"math": Recorder()})
    with pytest.raises(ValueError, match=r"row 1 has task='poetry'"):
        routed(prompts=["a", "b"], completions=["a", "b"], task=["math", "poetry"])
    with pytest.raises(ValueError, match=r"row 0 has task=\['x'\]"):  # unhashable value
        routed(prompts=["a"], completions=["a"], task=[["x"]])


def test_unknown_task_is_checked_before_any_route_runs():
    rec = Recorder()
    with pytest.raises(ValueError):
        RoutedVerifier({"a": rec})(completions=["x", "y"], task=["a", "b"])
    assert rec.calls == []


def test_default_route():
    default = Recorder(0.75)
    routed = RoutedVerifier({"a": Recorder(1.0)}, default=default)
    assert routed(completions=["x", "y", "z"], task=["a", "b", None]) == [1.0, 0.75, 0.75]
    assert default.calls[0]["task"] == ["b", None]


def test_custom_column_and_missing_column():
    routed = RoutedVerifier({"a": Recorder(1.0)}, column="source")
    assert routed(completions=["x"], source=["a"]) == [1.0]
    with pytest.raises(ValueError, match="'source'"):
        routed(completions=["x"], task=["a"])


def test_wrong_number_of_rewards_is_an_error():
    routed = RoutedVerifier({"a": lambda prompts=None, completions=None, **kw: [1.0]})
    with pytest.raises(ValueError, match="returned 1 rewards for 2"):
        routed(completions=["x", "y"], task=["a", "a"])


def test_bad_routes():
    with pytest.raises(ValueError):
        RoutedVerifier({})
    with pytest.raises(TypeError):
        RoutedVerifier({"a": 3})


def test_verify_batch_form(code):
    exact = ExactMatch()
    routed = RoutedVerifier({"qa": exact, "code": code, "graded": Recorder(0.5)}, correct_threshold=0.5)
    rows = [
        {"task": "qa", "answer": "4"},
        {"task": "code", "tests": "assert f() == 1"},
        {"task": "graded", "prompt": "p"},
        {"task": "qa", "answer": None},
    ]
    results = routed.verify_batch(["4", CODE_OK, "anything", "4"], rows=rows)
    assert [r.verdict for r in results] == [Verdict.CORRECT, Verdict.CORRECT, Verdict.CORRECT, Verdict.CANNOT_JUDGE]
    assert results[1].reason == "passed" and results[2].details["reward"] == 0.5
    with pytest.raises(ValueError, match="task"):
        routed.verify_batch(["x"], rows=[{"answer": "1"}])


def test_stats_of_routes(code):
    routed = RoutedVerifier({"code": code, "qa": ExactMatch()})
    routed(completions=[CODE_OK], task=["code"], tests=["assert f() == 1"])
    assert set(routed.stats) == {"code"} and routed.stats["code"]["calls"] >= 1


def test_is_a_trl_reward_function():
    routed = RoutedVerifier({"a": Recorder(1.0)})
    assert isinstance(routed.__name__, str) and callable(routed)
