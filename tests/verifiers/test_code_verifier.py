"""CodeVerifier: extraction, the three test styles, reasons, cannot-judge cases, stats, parallelism."""

from __future__ import annotations

import time

import pytest

from rasft_trl.verifiers import Verdict, get_verifier
from rasft_trl.verifiers.code import REASONS, CodeVerifier, extract_program


@pytest.fixture(scope="module")
def verifier() -> CodeVerifier:
    return CodeVerifier(timeout_s=3.0, memory_mb=512, max_output_bytes=2048, num_workers=2)


ADD = "def add(a, b):\n    return a + b"
SUB = "def add(a, b):\n    return a - b"


def fenced(code: str, tag: str = "python") -> str:
    return f"Here is my solution:\n```{tag}\n{code}\n```\nDone."


# ---------------------------------------------------------------------------------------- extraction


def test_extract_last_python_block():
    text = "first\n```python\nx = 1\n```\nthen\n```python\nx = 2\n```\n"
    assert extract_program(text) == "x = 2"


def test_extract_unlabelled_and_aliases_but_not_other_languages():
    assert extract_program("```\nx = 1\n```") == "x = 1"
    assert extract_program("```py\nx = 1\n```") == "x = 1"
    assert extract_program("```Python3\nx = 1\n```") == "x = 1"
    text = "```python\nx = 1\n```\nRun it with:\n```bash\npython x.py\n```"
    assert extract_program(text) == "x = 1"


def test_extract_whole_text_without_fences():
    assert extract_program("def f():\n    return 1\n") == "def f():\n    return 1"
    assert extract_program("  def f():\n    return 1\n") == "def f():\n  return 1"


def test_extract_indented_fence_is_dedented():
    text = "1. Write the function:\n   ```python\n   def f():\n       return 1\n   ```\n"
    assert extract_program(text) == "def f():\n    return 1"


def test_extract_skips_reasoning_and_handles_truncated_fence():
    text = "<think>```python\nwrong = 1\n```</think>The answer:\n```python\nright = 1\n```"
    assert extract_program(text) == "right = 1"
    assert extract_program("Answer:\n```python\ndef f():\n    return 1\n") == "def f():\n    return 1"
    assert extract_program("<think>only thoughts</think>") == ""


# ---------------------------------------------------------------------------------------- test styles


def test_assert_string_style(verifier):
    tests = "assert add(1, 2) == 3\nassert add(-1, 1) == 0"
    assert verifier(completions=[fenced(ADD), fenced(SUB)], tests=[tests, tests]) == [1.0, 0.0]


def test_mbpp_list_of_asserts_with_setup_columns(verifier):
    rows = {
        "test_list": [["assert add(1, 2) == 3", "assert add(0, 0) == 0", "assert SETUP == 1"]],
        "test_setup_code": ["SETUP = 1"],
        "test_imports": [["import math"]],
    }
    assert verifier(completions=[fenced(ADD)], **rows) == [1.0]


def test_humaneval_check_with_entry_point(verifier):
    test = "METADATA = {}\n\ndef check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(2, 2) == 4\n"
    comps = [fenced(ADD), fenced(SUB), fenced("def plus(a, b):\n    return a + b")]
    out = verifier(completions=comps, test=[test] * 3, entry_point=["add", "add", "add"])
    assert out == [1.0, 0.0, 0.0]
    r = verifier.verify_batch([fenced("def plus(a, b):\n    return a + b")], [test], rows=[{"entry_point": "add"}])[0]
    assert r.reason == "missing_entry_point"


def test_kodcode_pytest_style(verifier):
    tests = (
        "from solution import add\nimport pytest\n\n"
        "def test_small():\n    assert add(1, 2) == 3\n\n"
        "@pytest.mark.parametrize('a, b, expected', [(1, 1, 2), (2, 3, 5), pytest.param(0, 0, 0)])\n"
        "def test_param(a, b, expected):\n    assert add(a, b) == expected\n\n"
        "class TestAdd:\n    def test_neg(self):\n        assert add(-1, -1) == -2\n"
    )
    assert verifier(completions=[fenced(ADD), fenced(SUB)], tests=[tests, tests]) == [1.0, 0.0]
    r = verifier.verify_batch([fenced(SUB)], [tests])[0]
    assert r.reason == "assertion_failed" and r.details["test_name"] == "test_small"


def test_pytest_fixtures_cannot_judge(verifier):
    tests = "def test_needs_fixture(tmp_path):\n    assert True\n"
    r = verifier.verify_batch([fenced(ADD)], [tests])[0]
    assert r.verdict is Verdict.CANNOT_JUDGE and r.reason == "test_error"


def test_conversational_completions(verifier):
    comps = [[{"role": "assistant", "content": fenced(ADD)}]]
    assert verifier(
        prompts=[[{"role": "user", "content": "add"}]], completions=comps, tests=["assert add(1, 1) == 2"]
    ) == [1.0]


# ---------------------------------------------------------------------------------------- reasons


@pytest.mark.parametrize(
    "program, reason",
    [
        (ADD, "passed"),
        (SUB, "assertion_failed"),
        ("def add(a, b)\n    return a + b", "syntax_error"),
        ("def add(a, b):\n    return a / 0", "runtime_error"),
        ("import sys\nsys.exit(0)", "early_exit"),
        ("x = bytearray(10 * 1024**3)", "memory"),
        ("import os\nos.system('true')\n" + ADD, "sandbox_violation"),
    ],
)
def test_reasons(verifier, program, reason):
    r = verifier.verify_batch([fenced(program)], ["assert add(1, 2) == 3"])[0]
    assert r.reason == reason, r
    assert r.verdict is (Verdict.CORRECT if reason == "passed" else Verdict.INCORRECT)
    assert r.parsed_prediction == program and r.parsed_gold == "assert add(1, 2) == 3"
    assert {"stdout", "stderr", "duration_s", "returncode"} <= set(r.details)


def test_timeout_reason():
    v = CodeVerifier(timeout_s=1.0)
    r = v.verify_batch([fenced("while True:\n    pass")], ["assert True"])[0]
    assert r.reason == "timeout" and r.reward == 0.0


def test_no_code_does_not_run_anything(verifier):
    r = verifier.verify_batch(["", "```python\n\n```"], ["assert True", "assert True"])
    assert [x.reason for x in r] == ["no_code", "no_code"]
    assert all(x.verdict is Verdict.INCORRECT for x in r)


def test_captured_output_is_capped_in_details(verifier):
    r = verifier.verify_batch([fenced("print('x' * 100000)\nprint('tail')\n" + ADD)], ["assert add(1, 2) == 3"])[0]
    assert r.reason == "passed"
    assert len(r.details["stdout"]) <= 2048 and r.details["output_truncated"]["stdout"]


# ---------------------------------------------------------------------------------------- cannot judge


@pytest.mark.parametrize(
    "tests, reason",
    [
        (None, "no_tests"),
        ("", "no_tests"),
        ("   \n", "no_tests"),
        ([], "no_tests"),
        ("assert add(1,", "invalid_tests"),
        ("x = 1", "invalid_tests"),  # checks nothing
        ("def check(candidate):\n    assert candidate(1, 2) == 3", "invalid_tests"),  # no entry point
        ({"not": "tests"}, "invalid_tests"),
    ],
)
def test_missing_or_unusable_tests_cannot_judge(verifier, tests, reason):
    r = verifier.verify_batch([fenced(ADD)], [tests])[0]
    assert r.verdict is Verdict.CANNOT_JUDGE and r.reason == reason and r.reward is None


def test_missing_column_is_an_error(verifier):
    with pytest.raises(ValueError, match="tests"):
        verifier(completions=["x"], answer=["1"])


def test_reward_none_for_empty_tests_in_trl_call(verifier):
    assert verifier(completions=[fenced(ADD)], tests=[""]) == [None]


# ---------------------------------------------------------------------------------------- stats, registry, parallelism


def test_stats_count_every_outcome():
    v = CodeVerifier(timeout_s=3.0, num_workers=2)
    v.verify_batch([fenced(ADD), fenced(SUB), "", fenced(ADD)], ["assert add(1, 2) == 3"] * 3 + [None])
    s = v.stats
    assert (s["calls"], s["batches"], s["correct"], s["incorrect"], s["cannot_judge"]) == (4, 1, 1, 2, 1)
    assert (s["passed"], s["assertion_failed"], s["no_code"], s["no_tests"]) == (1, 1, 1, 1)
    assert s["sandbox_seconds"] > 0
    assert set(REASONS) <= set(s)
    v.reset_stats()
    assert v.stats["calls"] == 0


def test_registered_as_code():
    v = get_verifier("code", timeout_s=2.0)
    assert isinstance(v, CodeVerifier) and v.sandbox.timeout_s == 2.0
    assert CodeVerifier().reference_column == "tests"


def test_runs_in_parallel():
    v = CodeVerifier(timeout_s=5.0, num_workers=4)
    program = fenced("import time\ntime.sleep(0.6)\n" + ADD)
    t0 = time.monotonic()
    out = v.verify_batch([program] * 4, ["assert add(1, 2) == 3"] * 4)
    elapsed = time.monotonic() - t0
    assert [r.reason for r in out] == ["passed"] * 4
    assert elapsed < 4 * 0.6, f"4 programs sleeping 0.6 s took {elapsed:.2f} s with 4 workers"


def test_num_workers_is_validated():
    with pytest.raises(ValueError, match="num_workers"):
        CodeVerifier(num_workers=0)
