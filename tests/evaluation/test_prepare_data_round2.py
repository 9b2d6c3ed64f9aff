"""prepare-data, round 2 (issue 27): exact duplicates and references that cannot be judged are counted and dropped
by default; a pathological row is dropped and counted, never fatal."""

import json

from fixtures import write_jsonl
from test_prepare_data import ADD_TEST, KODCODE, NUMINA, kodcode_row, numina_row

from rasft_trl.prepare_data import prepare


def read_rows(folder) -> list[dict]:
    return [json.loads(line) for line in open(folder / "train.jsonl")]


def test_exact_duplicates_are_counted_and_dropped(tmp_path):
    numina = [*NUMINA, NUMINA[0], NUMINA[5], NUMINA[0],
              numina_row(NUMINA[0]["problem"], "Another solution: $\\boxed{5}$.")]  # same problem, other solution
    data = write_jsonl(str(tmp_path / "numina.jsonl"), numina)
    stats = prepare("numina", str(tmp_path / "n"), num_rows=100, data_file=data)
    assert stats.examined == 11 and stats.kept == 5 and stats.dropped["duplicate"] == 3
    rows = read_rows(tmp_path / "n")
    assert len({(r["prompt"], r["completion"]) for r in rows}) == len(rows) == 5

    kodcode = [*KODCODE, {**KODCODE[0], "question_id": "q1-again"}]  # the same training row under another id
    data = write_jsonl(str(tmp_path / "kodcode.jsonl"), kodcode)
    stats = prepare("kodcode", str(tmp_path / "k"), num_rows=100, data_file=data)
    assert stats.kept == 3 and stats.dropped == {"duplicate": 1, "empty_solution": 1, "invalid_tests": 1}

    kept = prepare("kodcode", str(tmp_path / "k2"), num_rows=100, data_file=data, drop_duplicates=False)
    assert kept.kept == 4 and "duplicate" not in kept.dropped and kept.flagged == {"duplicate": 1}


FIXTURE_TEST = "from solution import add\n\ndef test_add(tmp_path):\n    assert add(1, 2) == 3\n"
DEFINED_FIXTURE_TEST = ("import pytest\nfrom solution import add\n\n@pytest.fixture\ndef pair():\n"
                        "    return (1, 2)\n\nclass TestAdd:\n    def test_add(self, pair):\n"
                        "        assert add(*pair) == 3\n")
MISSING_MODULE_TEST = ("from solution import add\nimport rasft_no_such_module\n\ndef test_add():\n"
                       "    assert add(1, 2) == 3\n")
MAIN_TEST = "from main import add\n\ndef test_add():\n    assert add(1, 2) == 3\n"
RELATIVE_TEST = "from .solution import add\n\ndef test_add():\n    assert add(1, 2) == 3\n"
PARAMETRIZED_TEST = ("import pytest\nfrom solution import add\n\n@pytest.mark.parametrize('a, b, total', [(1, 2, 3), "
                     "(0, 0, 0)])\ndef test_add(a, b, total):\n    assert add(a, b) == total\n")
DEFAULT_ARGUMENT_TEST = "from solution import add\n\ndef test_add(a=1, b=2):\n    assert add(a, b) == 3\n"
GOOD = "```python\ndef add(a, b):\n    return a + b\n```"


def test_references_that_cannot_be_judged_are_dropped_without_running_them(tmp_path):
    rows = [
        kodcode_row("ok", "Write add.", GOOD, ADD_TEST),
        kodcode_row("fixture", "Write add (1).", GOOD, FIXTURE_TEST),
        kodcode_row("defined-fixture", "Write add (2).", GOOD, DEFINED_FIXTURE_TEST),
        kodcode_row("missing", "Write add (3).", GOOD, MISSING_MODULE_TEST),
        kodcode_row("main", "Write add (4).", GOOD, MAIN_TEST),
        kodcode_row("relative", "Write add (5).", GOOD, RELATIVE_TEST),
        kodcode_row("parametrized", "Write add (6).", GOOD, PARAMETRIZED_TEST),  # the sandbox expands these
        kodcode_row("defaults", "Write add (7).", GOOD, DEFAULT_ARGUMENT_TEST),
    ]
    data = write_jsonl(str(tmp_path / "kodcode.jsonl"), rows)
    stats = prepare("kodcode", str(tmp_path / "plain"), num_rows=100, data_file=data)
    assert stats.dropped == {"tests_missing_module": 3, "tests_need_fixtures": 2}
    assert {r["source_index"] for r in read_rows(tmp_path / "plain")} == {0, 6, 7}
    # what the static check drops is what running the references cannot pass, and nothing more (the sandbox runs a
    # relative import, which fails every program, as a runtime error)
    checked = prepare("kodcode", str(tmp_path / "checked"), num_rows=100, data_file=data, check_solutions=True,
                      drop_unjudgeable=False)
    assert checked.dropped == {"reference_failed": 1, "reference_unjudged": 4}
    assert checked.flagged == {"tests_missing_module": 3, "tests_need_fixtures": 2} and checked.kept == 3


DEEP = "1+" * 3000 + "1"  # a 3,000-deep expression: Python's parser gives up (RecursionError), for the whole run


def test_a_pathological_row_is_dropped_and_counted_never_fatal(tmp_path):
    deep_test = f"from solution import add\n\ndef test_add():\n    assert add(1, 2) == 3 + 0 * ({DEEP})\n"
    rows = [*KODCODE, kodcode_row("deep", "Write add (deep).", GOOD, deep_test)]
    data = write_jsonl(str(tmp_path / "kodcode.jsonl"), rows)
    for check in (False, True):
        stats = prepare("kodcode", str(tmp_path / f"k{check}"), num_rows=100, data_file=data, check_solutions=check)
        assert stats.examined == 6 and stats.dropped["invalid_tests"] == 2, stats.dropped
        assert 5 not in {r["source_index"] for r in read_rows(tmp_path / f"k{check}")}

    numina = [*NUMINA, numina_row("Deep.", f"So $\\boxed{{{DEEP}}}$.")]
    data = write_jsonl(str(tmp_path / "numina.jsonl"), numina)
    stats = prepare("numina", str(tmp_path / "n"), num_rows=100, data_file=data)
    assert stats.examined == 8 and stats.kept == 4 and stats.dropped["gold_unparseable"] == 2


def test_a_check_that_raises_drops_only_its_row(tmp_path, monkeypatch):
    import rasft_trl.prepare_data as prepare_data

    real = prepare_data._numina_checker

    def fragile_checker(workers):
        check = real(workers)

        def fragile(records):
            if any("Boom" in r["prompt"] for r in records):
                raise RecursionError("maximum recursion depth exceeded")
            return check(records)

        return fragile

    monkeypatch.setattr(prepare_data, "_numina_checker", fragile_checker)
    data = write_jsonl(str(tmp_path / "numina.jsonl"), [*NUMINA, numina_row("Boom.", "$\\boxed{1}$")])
    stats = prepare("numina", str(tmp_path / "n"), num_rows=100, data_file=data)
    assert stats.examined == 8 and stats.kept == 4 and stats.dropped["check_error"] == 1


def test_cli_keeps_duplicates_when_asked(tmp_path, capsys):
    """`--keep-duplicates` (either spelling) keeps an exact duplicate and counts it as flagged."""
    import json

    from fixtures import write_jsonl

    from rasft_trl.scripts import prepare_data

    row = {"problem": "What is 1+1?", "solution": "So $\\boxed{2}$.", "source": "x", "messages": []}
    data = write_jsonl(str(tmp_path / "n.jsonl"), [row, dict(row)])
    for flag, kept in (([], 1), (["--keep_duplicates"], 2)):
        out = tmp_path / f"out{len(flag)}"
        prepare_data.main(["numina", "--output-dir", str(out), "--data-file", data, "--num-rows", "5", *flag])
        printed = capsys.readouterr().out
        summary = json.loads(printed[: printed.rindex("}") + 1])
        assert summary["kept"] == kept, (flag, summary)
