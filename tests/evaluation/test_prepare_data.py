"""`rasft-trl prepare-data` on local files in the Hub schemas of NuminaMath-CoT and KodCode-V1-SFT-R1."""

import json
import os

import pytest
from fixtures import write_jsonl

from rasft_trl.prepare_data import prepare, seeded_order


def numina_row(problem, solution, source="synthetic_math"):
    # AI-MO/NuminaMath-CoT (train): source, problem, solution, messages
    return {"source": source, "problem": problem, "solution": solution,
            "messages": [{"role": "user", "content": problem}, {"role": "assistant", "content": solution}]}


NUMINA = [
    numina_row("What is $2+3$?", "We add: $2+3=\\boxed{5}$."),
    numina_row("Solve $2y=13/3$.", "So $y=\\boxed{\\frac{13}{6}}$."),
    numina_row("Describe the set.", "It is the empty set, as argued above."),  # no box: no gold
    numina_row("", "$\\boxed{1}$"),  # empty problem
    numina_row("Compute $x$.", "Hence $\\boxed{\\frac{1}{}}}$ is it."),  # gold the verifier cannot parse
    numina_row("Find $3 \\cdot 4$.", "$3 \\cdot 4 = \\boxed{12}$"),
    numina_row("Find $\\sqrt{16}$.", "It is $\\boxed{4}$."),
]


def kodcode_row(qid, question, r1_solution, test):
    # KodCode/KodCode-V1-SFT-R1 (train), current schema
    return {"version": "v1.0", "style": "instruct", "subset": "Leetcode", "question_id": qid, "question": question,
            "solution": r1_solution, "test": test, "test_info": [], "gpt_pass_sequence": [1], "gpt_pass_trial_num": 1,
            "gpt_difficulty": "easy", "gpt_pass_percentage": 1.0, "r1_pass_sequence": [1], "r1_pass_trial_num": 1,
            "r1_correctness": "True", "r1_solution": r1_solution,
            "metadata": {"original_instruction": question, "prompt_id": "p", "row_id": 1, "seed_ids": []},
            "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": r1_solution}]}


ADD_TEST = "from solution import add\n\ndef test_add():\n    assert add(1, 2) == 3\n    assert add(0, 0) == 0\n"
KODCODE = [
    kodcode_row("q1", "Write add(a, b).", "```python\ndef add(a, b):\n    return a + b\n```", ADD_TEST),
    kodcode_row("q2", "Write add(a, b).", "```python\ndef add(a, b):\n    return a - b\n```", ADD_TEST),  # wrong
    kodcode_row("q3", "Write add(a, b).", "def add(a, b):\n    return a + b", "print('no checks here')\n"),
    kodcode_row("q4", "Write add(a, b).", "", ADD_TEST),
    kodcode_row("q5", "Write add(a, b).", "def add(a, b):\n    return b + a", ADD_TEST),
]


def test_seeded_order_is_a_seeded_permutation():
    assert sorted(seeded_order(50, 1)) == list(range(50))
    assert seeded_order(50, 1) == seeded_order(50, 1) != seeded_order(50, 2)


def test_numina_keeps_verifiable_rows_and_counts_the_dropped(tmp_path):
    data = write_jsonl(str(tmp_path / "numina.jsonl"), NUMINA)
    out = str(tmp_path / "numina-10k")
    stats = prepare("numina", out, num_rows=100, seed=3, data_file=data)
    assert stats.examined == 7 and stats.kept == 4
    assert stats.dropped == {"empty_problem": 1, "gold_no_answer": 1, "gold_unparseable": 1}
    rows = [json.loads(line) for line in open(os.path.join(out, "train.jsonl"))]
    assert {r["answer"] for r in rows} == {"5", "\\frac{13}{6}", "12", "4"}
    assert all(set(r) == {"prompt", "completion", "answer", "source", "source_index"} for r in rows)
    # rows come in the seeded order, and the counts are saved beside them
    order = [i for i in seeded_order(7, 3) if i in {0, 1, 5, 6}]
    assert [r["source_index"] for r in rows] == order
    saved = json.load(open(os.path.join(out, "prepare_data.json")))
    assert saved["kept"] == 4 and saved["dropped"]["gold_unparseable"] == 1 and saved["settings"]["seed"] == 3


def test_numina_stops_at_num_rows(tmp_path):
    data = write_jsonl(str(tmp_path / "numina.jsonl"), NUMINA)
    stats = prepare("numina", str(tmp_path / "out"), num_rows=2, seed=0, data_file=data)
    assert stats.kept == 2 and stats.examined >= 2
    assert len(open(tmp_path / "out" / "train.jsonl").read().splitlines()) == 2


def test_kodcode_with_and_without_solution_checks(tmp_path):
    data = write_jsonl(str(tmp_path / "kodcode.jsonl"), KODCODE)
    plain = prepare("kodcode", str(tmp_path / "plain"), num_rows=10, data_file=data)
    assert plain.kept == 3 and plain.dropped == {"empty_solution": 1, "invalid_tests": 1}
    checked = prepare("kodcode", str(tmp_path / "checked"), num_rows=10, data_file=data, check_solutions=True)
    assert checked.kept == 2 and checked.dropped == {"empty_solution": 1, "invalid_tests": 1, "reference_failed": 1}
    rows = [json.loads(line) for line in open(tmp_path / "checked" / "train.jsonl")]
    assert {r["source_index"] for r in rows} == {0, 4}
    assert set(rows[0]) == {"prompt", "completion", "tests", "source", "source_index"}


def test_missing_columns_and_column_map(tmp_path):
    rows = [{"question": "What is $1+1$?", "answer_text": "$\\boxed{2}$"}]
    data = write_jsonl(str(tmp_path / "other.jsonl"), rows)
    with pytest.raises(ValueError, match=r"lacks prompt \(column 'problem'\), completion \(column 'solution'\)"):
        prepare("numina", str(tmp_path / "x"), data_file=data)
    stats = prepare("numina", str(tmp_path / "x"), data_file=data,
                    column_map={"prompt": "question", "completion": "answer_text"})
    assert stats.kept == 1
    with pytest.raises(ValueError, match="Unknown dataset"):
        prepare("gsm8k", str(tmp_path / "y"), data_file=data)


def test_a_recipe_trains_on_a_prepared_folder(tmp_path, tiny_model_dir):
    """The folder is what a recipe's `dataset_name` points to: the math recipe trains one step on it."""
    from rasft_trl.scripts import rasft

    data = write_jsonl(str(tmp_path / "numina.jsonl"), NUMINA)
    folder = str(tmp_path / "numina-10k")
    prepare("numina", folder, num_rows=4, data_file=data)
    recipe = os.path.join(os.path.dirname(__file__), "..", "..", "recipes", "Qwen2.5-Math-1.5B", "rasft",
                          "config_numina.yaml")
    args = [
        "--config", recipe, "--model_name_or_path", tiny_model_dir, "--dtype", "float32",
        "--attn_implementation", "eager", "--dataset_name", folder, "--prompt_column", "prompt",
        "--completion_column", "completion", "--answer_column", "answer", "--output_dir", str(tmp_path / "run"),
        "--max_steps", "1", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
        "--bf16", "false", "--gradient_checkpointing", "false", "--use_cpu", "true", "--max_new_tokens", "8",
        "--max_length", "256", "--calibration_sample_size", "4", "--save_strategy", "no",
    ]
    script_args, training_args, model_args = rasft.make_parser().parse_args_and_config(args)
    trainer = rasft.main(script_args, training_args, model_args)
    assert trainer.state.global_step == 1
    assert len(trainer.train_dataset) == 4


def test_cli_prepare_data(tmp_path, capsys):
    from rasft_trl.cli import main

    data = write_jsonl(str(tmp_path / "numina.jsonl"), NUMINA)
    assert main(["prepare-data", "numina", "--output-dir", str(tmp_path / "o"), "--data-file", data,
                 "--num-rows", "3"]) == 0
    printed = capsys.readouterr().out
    assert '"kept": 3' in printed and "train.jsonl" in printed
