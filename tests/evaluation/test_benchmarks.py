"""Benchmark loaders on local files in their Hub schemas, the HumanEval wheel, and the program a code answer is
judged by."""

import pytest
from fixtures import HUB_ROWS, write_jsonl, write_parquet

from rasft_trl.evaluation.benchmarks import (
    BENCHMARKS,
    PAPER_BENCHMARKS,
    compose_program,
    humaneval_wheel_rows,
    load_problems,
    resolve_benchmark,
)
from rasft_trl.evaluation.generate import Generation
from rasft_trl.evaluation.harness import EvalConfig, judge


def load(tmp_path, name, rows=None, fmt="jsonl", **kwargs):
    rows = HUB_ROWS[name] if rows is None else rows
    path = str(tmp_path / f"{name}.{fmt}")
    (write_jsonl if fmt == "jsonl" else write_parquet)(path, rows)
    return load_problems(BENCHMARKS[resolve_benchmark(name.split("_")[0]).name], data_file=path, **kwargs)


def test_registry_covers_the_paper_and_gsm8k():
    assert set(PAPER_BENCHMARKS) | {"gsm8k"} == set(BENCHMARKS)
    for spec in BENCHMARKS.values():
        assert spec.hub_id and spec.split and spec.revision and spec.domain in ("math", "code")
    assert resolve_benchmark("MATH-500").name == "math500"
    assert resolve_benchmark("aime_2025").name == "aime25"
    with pytest.raises(ValueError, match="Unknown benchmark 'mmlu'"):
        resolve_benchmark("mmlu")


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_math500_rows(tmp_path, fmt):
    problems = load(tmp_path, "math500", fmt=fmt)
    assert [p.problem_id for p in problems] == ["test/prealgebra/1.json", "test/prealgebra/2.json",
                                                "test/precalculus/807.json"]
    assert problems[1].question == "Simplify $\\frac{6}{8}$." and problems[1].reference == {"answer": "\\frac{3}{4}"}


def test_gold_answers_of_every_math_schema(tmp_path):
    assert [p.reference["answer"] for p in load(tmp_path, "minerva")] == ["1024", "21"]
    assert [p.problem_id for p in load(tmp_path, "minerva")] == ["0", "1"]  # no id column: the row index
    olympiad = load(tmp_path, "olympiadbench")
    assert [p.reference["answer"] for p in olympiad] == ["\\frac{3}{2}", "2, -2"]  # list joined, $ stripped
    assert olympiad[0].problem_id == "1606"
    assert load(tmp_path, "aime24")[0].reference["answer"] == "204"
    assert load(tmp_path, "aime25")[0].reference["answer"] == "70"
    assert [p.reference["answer"] for p in load(tmp_path, "amc23")] == ["27", "36"]  # 27.0 -> 27
    assert [p.reference["answer"] for p in load(tmp_path, "gsm8k")] == ["18", "1200"]


def test_mbpp_full_and_sanitized(tmp_path):
    full = load(tmp_path, "mbpp")
    assert full[0].problem_id == "11" and len(full[0].reference["tests"]) == 3
    assert 'assert remove_Occ("hello","l") == "heo"' in full[0].question  # the tests name the function
    sanitized = load(tmp_path, "mbpp_sanitized", column_map={"text": "prompt", "test_imports": "test_imports"})
    assert sanitized[0].reference["test_imports"] == ["import math"]
    assert sanitized[0].question.startswith("Write a function to find the shared elements")


def test_missing_column_names_row_and_column_and_a_column_map_fixes_it(tmp_path):
    rows = [{"question": "What is 1+1?", "gold": "2"}]
    with pytest.raises(ValueError, match=r"minerva .*row 0: missing answer \(column 'answer'\)"):
        load(tmp_path, "minerva", rows=rows)
    assert load(tmp_path, "minerva", rows=rows, column_map={"answer": "gold"})[0].reference == {"answer": "2"}
    with pytest.raises(ValueError, match="unknown role"):
        load(tmp_path, "minerva", rows=rows, column_map={"gold": "answer"})


def test_limit_and_repeated_ids(tmp_path):
    assert len(load(tmp_path, "math500", limit=2)) == 2
    rows = [HUB_ROWS["aime24"][0], HUB_ROWS["aime24"][0]]
    with pytest.raises(ValueError, match="id '60' repeats"):
        load(tmp_path, "aime24", rows=rows)


def test_unsupported_or_missing_local_file(tmp_path):
    with pytest.raises(ValueError, match="Unsupported data file"):
        load_problems(BENCHMARKS["math500"], data_file=str(tmp_path / "x.txt"))
    with pytest.raises(FileNotFoundError):
        load_problems(BENCHMARKS["math500"], data_file=str(tmp_path / "absent.jsonl"))


HUMANEVAL_PROMPT = 'from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    """Sum of xs."""\n'


def test_compose_program_for_humaneval_and_mbpp():
    reference = {"code_prompt": HUMANEVAL_PROMPT, "entry_point": "total", "tests": "..."}
    # a whole function: the prompt's imports go in front (the response did not repeat `from typing import List`)
    whole = "Here it is:\n```python\ndef total(xs: List[int]) -> int:\n    return sum(xs)\n```"
    assert compose_program(whole, reference) == (
        "from typing import List\ndef total(xs: List[int]) -> int:\n    return sum(xs)"
    )
    # a continuation of the body: appended to the prompt, as HumanEval's own harness does
    assert compose_program("    return sum(xs)\n", reference) == HUMANEVAL_PROMPT + "    return sum(xs)"
    assert compose_program("```python\nreturn sum(xs)\n```", reference) == HUMANEVAL_PROMPT + "    return sum(xs)"
    # MBPP rows (no code prompt) are judged on the response itself
    assert compose_program("```python\nx = 1\n```", {"tests": ["assert x == 1"]}) == "```python\nx = 1\n```"


def test_judge_scores_correct_and_wrong_answers_with_the_training_verifiers(tmp_path):
    math = load(tmp_path, "math500")[:2]
    mbpp = load(tmp_path, "mbpp")[1:]
    chunk = [(math[0], 0), (math[0], 1), (math[1], 0), (mbpp[0], 0), (mbpp[0], 1)]
    outputs = [
        Generation("So the answer is $\\boxed{2}$.", 9, True),
        Generation("I think \\boxed{3}", 5, True),
        Generation("\\boxed{0.75}", 5, True),  # 3/4 as a decimal
        Generation("```python\ndef add(a, b):\n    return a + b\n```", 12, True),
        Generation("```python\ndef add(a, b):\n    return a - b\n```", 12, False),
    ]
    records = judge(chunk, outputs, EvalConfig(model="unused", benchmarks=["math500", "mbpp"]))
    assert [r["correct"] for r in records] == [True, False, True, True, False]
    assert records[4]["reason"] == "assertion_failed" and records[4]["finished"] is False
    assert records[0]["extracted"] == "2" and records[3]["verdict"] == "correct"
    assert {r["benchmark"] for r in records} == {"math500", "mbpp"}


@pytest.mark.slow
def test_humaneval_from_the_wheel_canonical_solutions_pass(tmp_path):
    """The real 164 problems from the PyPI wheel; every canonical solution (a body continuation) passes, and a
    wrong body fails."""
    rows = humaneval_wheel_rows(str(tmp_path))
    assert len(rows) == 164 and rows[0]["task_id"] == "HumanEval/0" and rows[-1]["task_id"] == "HumanEval/163"
    assert set(rows[0]) == {"task_id", "prompt", "canonical_solution", "test", "entry_point"}
    problems = load_problems(BENCHMARKS["humaneval"], cache_dir=str(tmp_path))
    assert len(problems) == 164 and problems[0].reference["entry_point"] == "has_close_elements"
    chunk = [(p, 0) for p in problems] + [(problems[0], 1)]
    outputs = [Generation(row["canonical_solution"], 1, True) for row in rows] + [
        Generation("    return False\n", 1, True)
    ]
    records = judge(chunk, outputs, EvalConfig(model="unused", benchmarks=["humaneval"]))
    failed = [(r["problem_id"], r["reason"]) for r in records[:-1] if not r["correct"]]
    assert failed == []
    assert records[-1]["correct"] is False and records[-1]["reason"] == "assertion_failed"
