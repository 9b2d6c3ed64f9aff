"""Unit tests of the demo's problem generator (pure python, milliseconds)."""

import random
import re
import subprocess
import sys

import pytest

from rasft_trl.demo.data import (
    INSTRUCTION,
    LEVELS,
    TEMPLATES,
    Problem,
    build_splits,
    generate_problem,
    sample_problems,
)

BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def last_boxed(text: str) -> str | None:
    matches = BOXED.findall(text)
    return matches[-1] if matches else None


@pytest.fixture(scope="module")
def splits():
    return build_splits(num_train=300, num_eval=90, seed=42)


def test_deterministic():
    assert build_splits(40, 12, seed=7) == build_splits(40, 12, seed=7)


def test_seed_changes_problems():
    a, b = build_splits(40, 12, seed=7), build_splits(40, 12, seed=8)
    assert [r["prompt"] for r in a["train"]] != [r["prompt"] for r in b["train"]]


def test_eval_split_independent_of_train_size():
    assert build_splits(10, 20, seed=3)["eval"] == build_splits(200, 20, seed=3)["eval"]


def test_sizes_and_disjoint(splits):
    assert len(splits["train"]) == 300 and len(splits["eval"]) == 90
    train_q = {r["prompt"][0]["content"] for r in splits["train"]}
    eval_q = {r["prompt"][0]["content"] for r in splits["eval"]}
    assert len(train_q) == 300 and len(eval_q) == 90  # no duplicates inside a split
    assert not train_q & eval_q


def test_columns_and_types(splits):
    for row in splits["train"] + splits["eval"]:
        assert set(row) == {"prompt", "completion", "answer", "level"}
        assert row["prompt"] == [{"role": "user", "content": row["prompt"][0]["content"]}]
        assert row["prompt"][0]["content"].endswith(INSTRUCTION)
        assert "\\boxed{}" in INSTRUCTION
        assert isinstance(row["completion"], str) and isinstance(row["answer"], str)
        assert isinstance(row["level"], int)
        assert int(row["answer"]) >= 0


def test_last_boxed_equals_answer(splits):
    for row in splits["train"] + splits["eval"]:
        assert last_boxed(row["completion"]) == row["answer"], row


def test_every_level_present_and_balanced(splits):
    for rows in splits.values():
        counts = {level: sum(r["level"] == level for r in rows) for level in LEVELS}
        assert set(counts) == set(LEVELS)
        assert max(counts.values()) - min(counts.values()) <= 1


def test_arithmetic_in_demonstrations_is_correct():
    """Every `a op b = c` written in a demonstration holds, so the expert never teaches a wrong step."""
    step = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b}
    rng = random.Random(0)
    for level, templates in TEMPLATES.items():
        for template in templates:
            for _ in range(50):
                problem = template(rng)
                assert problem.level == level
                found = step.findall(problem.solution)
                assert found, problem.solution
                for a, op, b, c in found:
                    assert ops[op](int(a), int(b)) == int(c), problem.solution


def test_levels_get_harder():
    """Level 3 needs more steps and larger numbers than level 1."""
    rng = random.Random(1)
    steps = {level: [] for level in LEVELS}
    for level in LEVELS:
        for _ in range(100):
            steps[level].append(generate_problem(rng, level).solution.count(" = "))
    assert sum(steps[1]) / 100 < sum(steps[2]) / 100 < sum(steps[3]) / 100


def test_bad_level_rejected():
    with pytest.raises(ValueError, match="level must be one of"):
        generate_problem(random.Random(0), 4)


def test_exhausted_space_raises(monkeypatch):
    constant = Problem("What is 1 + 0?", "1 + 0 = 1.\nThe answer is \\boxed{1}.", 1, 1, "constant")
    monkeypatch.setitem(TEMPLATES, 1, (lambda rng: constant,))
    assert len(sample_problems(1, seed=0, levels=(1,))) == 1
    with pytest.raises(RuntimeError, match="distinct problems"):
        sample_problems(2, seed=0, levels=(1,))


def test_no_torch_import():
    code = "import sys, rasft_trl.demo.data as d; d.build_splits(5, 5); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_optional_splits_are_disjoint_and_stable():
    from rasft_trl.demo.data import OOD_LEVEL, OOD_TEMPLATES, TEMPLATES

    splits = build_splits(64, 32, seed=5, num_warmup=48, num_validation=24, num_ood=20)
    assert {k: len(v) for k, v in splits.items()} == {"eval": 32, "ood": 20, "validation": 24, "warmup": 48,
                                                       "train": 64}
    questions = [r["prompt"][0]["content"] for rows in splits.values() for r in rows]
    assert len(questions) == len(set(questions))
    assert {r["level"] for r in splits["ood"]} == {OOD_LEVEL} and OOD_LEVEL not in TEMPLATES
    # the warm-start split does not depend on the held-out sizes asked for (reserved sizes are excluded)
    assert build_splits(0, 0, seed=5, num_warmup=48)["warmup"] == splits["warmup"]
    assert build_splits(0, 300, seed=5, num_warmup=48)["warmup"] == splits["warmup"]
    # a bigger test set starts with the smaller one
    assert build_splits(0, 64, seed=5)["eval"][:32] == splits["eval"]
    # the OOD family uses its own templates, never one a training level draws from
    ood_templates = {p.template for p in sample_problems(200, 1, levels=(OOD_LEVEL,))}
    train_templates = {p.template for p in sample_problems(600, 1)}
    assert len(ood_templates) == len(OOD_TEMPLATES) == 4 and ood_templates.isdisjoint(train_templates)
    for row in splits["ood"]:
        assert last_boxed(row["completion"]) == row["answer"]


def test_warm_start_cache_key_and_disabled_warm_start(tmp_path):
    from rasft_trl.demo.warmstart import WarmStartSettings, read_meta, warm_start_path

    a, b = WarmStartSettings(), WarmStartSettings(steps=2)
    assert a.key() != b.key() and a.key() == WarmStartSettings().key() and len(a.key()) == 10
    assert WarmStartSettings(learning_rate=5e-4).key() != a.key()
    assert a.num_problems == a.steps * a.batch_size
    # steps=0: every method starts from the base model itself, nothing is trained or written
    assert warm_start_path(str(tmp_path), WarmStartSettings(steps=0)) == str(tmp_path)
    assert read_meta(str(tmp_path)) is None and list(tmp_path.iterdir()) == []
