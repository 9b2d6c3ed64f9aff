"""The demo evaluates through the evaluation harness: its numbers and `rasft-trl eval`'s agree exactly.

The demo scores a model held in memory; `rasft-trl eval` loads the saved folder and reads the demo's problems from
the file the demo writes (`eval_problems.jsonl`). Same model, same greedy settings: the same prompt ids, responses,
verdicts and accuracy, sample by sample.
"""

from __future__ import annotations

import json
import shlex

import pytest

FIELDS = ("problem_id", "prompt", "response", "verdict", "correct", "extracted", "parsed_gold", "num_tokens",
          "finished")


def run_eval_command(command: str) -> dict:
    """Run a `rasft-trl eval ...` command line through the CLI's own parser (in this process)."""
    from rasft_trl.scripts.evaluate import main

    words = shlex.split(command)
    assert words[:2] == ["rasft-trl", "eval"]
    return main(words[2:])


def eval_samples(output_dir: str) -> list[dict]:
    with open(f"{output_dir}/samples.jsonl", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    return sorted(records, key=lambda r: int(r["problem_id"]))


def assert_same_samples(demo_records: list[dict], eval_records: list[dict]) -> None:
    assert len(demo_records) == len(eval_records) > 0
    for ours, theirs in zip(demo_records, eval_records):
        for key in FIELDS:
            assert ours[key] == theirs[key], (key, ours[key], theirs[key])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_accuracy_equals_rasft_trl_eval_on_the_same_model(tmp_path):
    """The real SmolLM2-135M-Instruct in the demo's generation precision, 12 held-out problems, greedy."""
    from transformers import AutoTokenizer

    from rasft_trl.demo.data import build_splits
    from rasft_trl.demo.evaluate import EvalSettings, eval_command, evaluate, write_problems
    from rasft_trl.demo.generation import load_copy
    from rasft_trl.demo.model import demo_model_path
    from rasft_trl.demo.run import DemoArgs

    base = demo_model_path(None)
    args = DemoArgs()
    rows = build_splits(8, 12, seed=5)["eval"]
    settings = EvalSettings(max_new_tokens=64, batch_size=5)  # batches of 5, 5 and 2: padding inside each
    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    demo = evaluate(load_copy(base, args.generation_dtype), tokenizer, rows, settings)

    problems = write_problems(rows, str(tmp_path / "eval_problems.jsonl"))
    dtype = "bfloat16" if str(args.generation_dtype).endswith("bfloat16") else "float32"
    results = run_eval_command(eval_command(base, problems, settings, dtype, str(tmp_path / "eval")))
    assert_same_samples(demo.records, eval_samples(str(tmp_path / "eval")))
    bench = results["benchmarks"]["math500"]
    assert bench["accuracy"] == demo.accuracy and bench["num_problems"] == demo.num_problems == 12
    assert bench["num_unjudged"] == demo.num_unjudged
    # real responses (the base model explains at length and rarely boxes within 64 tokens: both score it the same)
    assert len({r["response"] for r in demo.records}) == 12 and all(len(r["response"]) > 40 for r in demo.records)


def test_demo_problems_keep_the_user_message_and_refuse_other_prompts(tmp_path):
    from rasft_trl.demo.evaluate import demo_problems, write_problems

    rows = [{"prompt": [{"role": "user", "content": "What is 2+3?\nBox it."}], "answer": "5", "level": 1}]
    (problem,) = demo_problems(rows)
    assert problem.question == "What is 2+3?\nBox it." and problem.reference == {"answer": "5"}
    assert problem.verifier_domain == "math"
    line = json.loads(open(write_problems(rows, str(tmp_path / "p.jsonl"))).read())
    assert line == {"unique_id": "0", "problem": "What is 2+3?\nBox it.", "answer": "5"}
    with pytest.raises(ValueError, match="one user message"):
        demo_problems([{"prompt": [{"role": "system", "content": "s"}, *rows[0]["prompt"]], "answer": "5"}])


def test_chat_without_system_sends_a_user_only_chat(tiny_model_dir):
    """`--chat-without-system`: the question goes through the chat template as one user message; without the flag
    and without a system line it is plain text."""
    from transformers import AutoTokenizer

    from rasft_trl.evaluation.benchmarks import EvalProblem
    from rasft_trl.evaluation.harness import EvalConfig, _prompt_ids

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    problem = EvalProblem("math500", "1", "What is 2+3?", {"answer": "5"})
    chat = _prompt_ids(problem, EvalConfig(model="m", system_prompt="", chat_without_system=True), tokenizer, {})
    plain = _prompt_ids(problem, EvalConfig(model="m", system_prompt=""), tokenizer, {})
    expected = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2+3?"}], add_generation_prompt=True,
                                             tokenize=True, return_dict=False)
    assert chat == list(expected) and plain == tokenizer("What is 2+3?", add_special_tokens=False)["input_ids"]
    # the flag is part of what decides a sample (a resumed folder must match it); unset it leaves old folders valid
    assert EvalConfig(model="m", chat_without_system=True).sample_settings()["chat_without_system"] is True
    assert "chat_without_system" not in EvalConfig(model="m").sample_settings()
