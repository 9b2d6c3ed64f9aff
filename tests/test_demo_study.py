"""The demo's generation copy, mechanism summary and study protocol (fast: tiny model and synthetic records)."""

import json
import math

import pytest
import torch

from rasft_trl.demo.report import format_mechanism_table, mechanism_summary, window_means
from rasft_trl.demo.study import FAMILIES, Cell, StudyArgs, mean_interval, parse_args, to_spec
from rasft_trl.study.engine import (
    choose, differences, format_differences, format_results, report_cells, selection_cells, summarize,
)


def test_generation_copy_follows_a_lora_policy_without_touching_it(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from rasft_trl.demo.generation import copy_policy, load_copy

    policy = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], task_type="CAUSAL_LM"),
    )
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # a trained adapter
    base_before = {n: p.clone() for n, p in policy.named_parameters() if "lora_" not in n}
    copy = load_copy(tiny_model_dir, torch.float32)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    assert not torch.allclose(copy(ids).logits, policy(input_ids=ids).logits, atol=1e-4)  # before the sync
    copy_policy(policy, copy)
    assert torch.allclose(copy(ids).logits, policy(input_ids=ids).logits, atol=1e-5)
    for name, param in policy.named_parameters():
        if name in base_before:
            assert torch.equal(base_before[name], param), f"{name} changed"
    with policy.disable_adapter():  # the reference is still the initial model
        initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        assert torch.allclose(policy(input_ids=ids).logits, initial(ids).logits, atol=1e-6)
    bf16 = load_copy(tiny_model_dir, torch.bfloat16)
    copy_policy(policy, bf16)
    assert bf16.dtype == torch.bfloat16
    assert torch.allclose(bf16(ids).logits.float(), policy(input_ids=ids).logits, atol=0.1)


def history(acc, coef, routed):
    rows = [{"loss": 1.0, "step": i + 1, "rollouts/accuracy": a, "pool/expert_coef_mean": c, "rollouts/problems": r,
             "rollouts/drawn": 3 * r, "rollouts/targets": r, "rollouts/truncated": 1, "pool/mean_solvability": a}
            for i, (a, c, r) in enumerate(zip(acc, coef, routed))]
    return rows + [{"train_runtime": 1.0, "step": len(acc)}]


def test_mechanism_summary_first_and_last_fifth():
    h = history([0.1] * 5 + [0.5] * 5, [0.9] * 5 + [0.7] * 5, [2, 3, 1, 4, 2, 2, 2, 2, 2, 5])
    s = mechanism_summary(h)
    assert s["rollout_accuracy_first_last"] == pytest.approx((0.1, 0.5))  # 2 steps each of 10
    assert s["expert_coef_first_last"] == pytest.approx((0.9, 0.7))
    assert s["rollout_accuracy_mean"] == pytest.approx(0.3)
    assert s["min_problems_routed"] == 1 and s["rollout_targets"] == 25 and s["rollouts_drawn"] == 75
    assert s["rollouts_truncated"] == 10
    assert window_means(h[:3], "rollouts/accuracy") == pytest.approx((0.1, 0.1))
    # a step without rollouts counts as zero problems routed
    gap = history([0.1, 0.2], [0.9, 0.9], [1, 1])
    del gap[1]["rollouts/problems"]
    assert mechanism_summary(gap)["min_problems_routed"] == 0
    assert mechanism_summary([{"loss": 1.0, "step": 1}]) is None
    table = format_mechanism_table({"methods": {"rasft": {"log_history": h}, "sft": {"log_history": []}}})
    assert "0.10 -> 0.50" in table and "0.900 -> 0.700" in table and "25 / 75" in table
    assert not any(line.startswith("sft") for line in table.splitlines())


def test_mean_interval_is_student_t():
    mean, half = mean_interval([0.5, 0.6, 0.7])
    assert mean == pytest.approx(0.6)
    assert half == pytest.approx(4.303 * 0.1 / math.sqrt(3))
    assert mean_interval([0.4]) == (0.4, 0.0)


def record(acc_val=None, test=None, ood=None, mechanism=None):
    ev = {}
    if acc_val is not None:
        ev["validation"] = {"accuracy": acc_val, "accuracy_by_level": {"1": acc_val}}
    if test is not None:
        ev["test"] = {"accuracy": test, "accuracy_by_level": {"1": test}}
        ev["ood"] = {"accuracy": ood, "accuracy_by_level": {"0": ood}}
    return {"eval": ev, "train_wall_seconds": 10.0, "train_cpu_seconds": 20.0, "rollout_tokens": 5,
            "mechanism": mechanism}


def test_learning_rates_are_chosen_per_family_on_validation_only():
    spec = to_spec(StudyArgs(methods=("sft", "rasft", "rasft_sft"), seeds=2, lr_grid=(1e-4, 1e-3)))
    cells = selection_cells(spec)
    # each family's expert-only member chooses, even when it is not an arm (dft chooses for rasft)
    assert {c.method for c in cells} == {"sft", "dft"} and all(c.sets == ("validation",) for c in cells)
    val = {("sft", 1e-4): 0.3, ("sft", 1e-3): 0.5, ("dft", 1e-4): 0.4, ("dft", 1e-3): 0.4}
    records = {c.name: record(acc_val=val[(c.method, c.learning_rate)]) for c in cells}
    chosen = choose(spec, records)
    assert chosen["sft"]["chosen"] == 1e-3 and chosen["dft"]["chosen"] == 1e-4  # a tie goes to the smaller rate
    cells = report_cells(spec, chosen)
    lrs = {(c.method, c.seed): c.learning_rate for c in cells}
    assert lrs[("rasft", 1)] == 1e-4 and lrs[("rasft_sft", 0)] == 1e-3 and lrs[("base", 0)] == 0.0
    assert all("validation" not in c.sets for c in cells)
    assert [c.name for c in cells][:2] == ["test-base-seed0-lr0", "test-sft-seed0-lr0.001"]  # round 1's names
    mech = {"rollout_accuracy_first_last": [0.2, 0.4], "expert_coef_first_last": [0.9, 0.8],
            "solvability_first_last": [0.2, 0.4], "rollout_accuracy_mean": 0.3, "min_problems_routed": 1,
            "rollout_targets": 10, "rollouts_drawn": 30, "rollouts_truncated": 0}
    test_acc = {"base": [0.2], "sft": [0.5, 0.7], "rasft": [0.6, 0.6], "rasft_sft": [0.4, 0.5]}
    records = {c.name: record(test=test_acc[c.method][c.seed], ood=0.1, mechanism=mech if "rasft" in c.method else None)
               for c in cells}
    for c in cells:
        if "rasft" in c.method:  # the rollout tokens generated are read from the log: 2 steps x 6 x mean length
            records[c.name]["log_history"] = [  # the mechanism is read again from it: `mech` above, 2 steps
                {"loss": 1.0, "step": s, "completions/mean_length": 10.0 + c.seed, "rollouts/drawn": 6,
                 "rollouts/problems": 2, "rollouts/targets": 5, "rollouts/accuracy": acc, "pool/expert_coef_mean": coef}
                for s, acc, coef in ((1, 0.2, 0.9), (2, 0.4, 0.8))] + [{"train_runtime": 1.0}]
    rows = summarize(spec, chosen, records)
    assert rows["rasft"]["generated_tokens"] == pytest.approx((120 + 132) / 2) and rows["sft"]["generated_tokens"] is None
    assert rows["sft"]["test"]["mean"] == pytest.approx(0.6)
    assert rows["sft"]["test"]["ci95"] == pytest.approx(12.706 * math.sqrt(0.02) / math.sqrt(2))
    assert rows["rasft"]["test"]["ci95"] == 0.0 and rows["rasft"]["mechanism"]["rollout_targets"] == 10
    diffs = {(d["a"], d["b"]): d for d in differences(spec, rows)}
    assert set(diffs) == {("rasft", "sft"), ("rasft_sft", "sft")}  # round 1's comparisons these arms allow
    assert diffs[("rasft_sft", "sft")]["test"]["mean"] == pytest.approx(-0.15)
    dropped = [c.name for c in cells if c.method == "rasft"][-1]
    partial = {k: v for k, v in records.items() if k != dropped and "rasft_sft" not in k}
    partial_rows = summarize(spec, chosen, partial)  # an unfinished study reports the seeds it has
    assert "rasft_sft" not in partial_rows and partial_rows["rasft"]["seeds"] == 1
    one_seed = format_differences(spec, differences(spec, partial_rows))
    assert "| rasft − sft | +10.0 (1 seed, no interval) |" in one_seed and "± 0.0" not in one_seed
    table = format_results(spec, rows)
    assert "| sft | 2 | 0.001 | 60.0 ± 127.1 |" in table and "0.20 → 0.40" in table
    # wall s, CPU s, rollout tokens generated, RASFT target tokens
    assert "| 10 | 20 | 126 | 5 | 0.20 → 0.40 |" in table and "| 10 | 20 | – | 5 | – |" in table


def test_shipped_demo_spec_is_the_demo_study():
    from rasft_trl.study.spec import load_spec

    shipped = load_spec("demo")
    committed = to_spec(parse_args([]))
    assert shipped.methods.keys() == committed.methods.keys() and shipped.runner == committed.runner
    assert {m.family for m in shipped.methods.values()} == {"sft", "dft"}
    assert all(shipped.methods[m].family == committed.methods[m].family for m in shipped.methods)
    assert shipped.selection_grid == committed.selection_grid and shipped.seeds == committed.seeds
    assert shipped.eval_sets == committed.eval_sets and shipped.comparisons == committed.comparisons
    assert shipped.runner_options["max_steps"] == committed.runner_options["max_steps"]
    assert [c.name for c in selection_cells(shipped)] == [c.name for c in selection_cells(committed)]


def test_study_cli():
    args = parse_args([])
    assert args.seeds >= 3 and args.num_test >= 256 and args.num_ood > 0 and set(args.methods) <= set(FAMILIES)
    assert {"sft", "dft", "rasft", "rasft_sft", "no_rollouts", "no_adaptivity", "no_ratio"} <= set(args.methods)
    assert parse_args(["--methods", "sft,rasft", "--seeds", "2"]).methods == ("sft", "rasft")
    with pytest.raises(SystemExit):
        parse_args(["--methods", "ppo"])
    assert parse_args(["--methods", "srft,grpo"]).methods == ("srft", "grpo")  # round 2's arms
    assert Cell("rasft", 1, 5e-4, ("test",), "test").name == "test-rasft-seed1-lr0.0005"


def test_evaluation_batches_by_length_but_answers_in_order(tiny_model_dir):
    """Batched greedy answers (sorted by prompt length internally) equal one-at-a-time answers, in input order."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rasft_trl.demo.evaluate import EvalSettings, evaluate

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [{"prompt": [{"role": "user", "content": text}], "answer": "3", "level": 1}
            for text in ("a much longer question 1 + 2 + 3 + 4?", "1+1?", "what is 12 * 3, please?", "7")]

    def responses(batch, batch_size):
        result = evaluate(model, tokenizer, batch, EvalSettings(max_new_tokens=5, batch_size=batch_size))
        return [record["response"] for record in result.records]

    one = [responses([row], 1)[0] for row in rows]
    batched = responses(rows, 3)
    assert batched == one and len(set(one)) > 1


def test_study_module_runs_as_a_command():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "rasft_trl.demo.study", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--lr-grid" in out.stdout and "--seeds" in out.stdout


@pytest.mark.parametrize("method", ["srft", "grpo"])
def test_round_two_trainers_train_on_the_demo_path(tmp_path, tiny_model_dir, method):
    """SRFT and GRPO through the demo's training path (the study's round-2 arms): same budget, LoRA and sampling as
    RASFT, one step on the tiny model; the trained policy is a LoRA model the evaluation copy can take."""
    from dataclasses import replace

    from rasft_trl.demo.data import build_splits
    from rasft_trl.demo.run import make_config, parse_args as demo_args, train_method

    args = replace(demo_args([]), max_steps=1, batch_size=2, num_rollouts=2, rollout_max_new_tokens=4,
                   learning_rate=1e-3, generation_precision="fp32", calibration_sample_size=2)
    rasft, other = make_config("rasft", args, str(tmp_path)), make_config(method, args, str(tmp_path))
    for key in ("learning_rate", "lr_scheduler_type", "max_steps", "temperature", "top_p", "repetition_penalty",
                "seed", "gradient_checkpointing"):
        assert getattr(other, key) == getattr(rasft, key), key  # only the method differs
    assert type(other).__name__ == {"srft": "SRFTConfig", "grpo": "GRPOConfig"}[method]
    rows = build_splits(2, 1, seed=0)["train"]
    trained, tokenizer, history, _ = train_method(method, args, tiny_model_dir, rows, str(tmp_path))
    steps = [h for h in history if "loss" in h]
    assert len(steps) == 1 and math.isfinite(steps[0]["loss"])
    assert hasattr(trained, "peft_config")  # LoRA, as every demo method
    if method == "grpo":
        assert steps[0]["num_tokens"] > 0 and "reward" in steps[0]
        assert steps[0]["rollouts/accuracy"] == steps[0]["reward"]  # the math verifier is the only reward
    assert steps[0]["rollouts/drawn"] == 2 * 2  # every problem gets K rollouts (GRPO: annotated from its config)
    from rasft_trl.study.mechanism import generated_tokens

    assert steps[0]["completions/mean_length"] > 0
    assert generated_tokens(history) == pytest.approx(4 * steps[0]["completions/mean_length"])


def test_round_two_spec_is_its_written_protocol():
    """recipes/studies/demo_round2.yaml against docs/study.md's round-2 protocol (written before any run)."""
    from rasft_trl.study.spec import load_spec

    spec = load_spec("demo_round2")
    assert list(spec.methods) == ["sft", "dft", "rasft", "rasft_recal", "srft", "grpo"] and len(spec.seeds) == 5
    assert {k: v["num_problems"] for k, v in spec.eval_sets.items()} == {"validation": 192, "test": 256, "ood": 384}
    lrs = {m: spec.methods[m].overrides.get("learning_rate") for m in spec.methods}
    assert lrs == {"sft": 0.001, "dft": 0.0005, "rasft": 0.0005, "rasft_recal": 0.0005, "srft": None, "grpo": None}
    assert spec.methods["rasft"].overrides["window_recalibration_steps"] == 0  # round 1's pinned window
    select = selection_cells(spec)
    assert sorted(c.name for c in select) == sorted(
        [f"select-rasft_recal-seed0-window_recalibration_steps{r}" for r in (3, 6)]
        + [f"select-{m}-seed0-lr{lr:g}" for m in ("srft", "grpo") for lr in (2.5e-4, 5e-4, 1e-3)])
    assert spec.selection_of("rasft_recal")[2] == "larger" and spec.selection_of("srft")[2] == "smaller"
    records = {c.name: {"eval": {"validation": {"accuracy": 0.5}}} for c in select}  # all tied
    chosen = choose(spec, records)
    assert chosen["rasft_recal"]["chosen"] == 6 and chosen["srft"]["chosen"] == 2.5e-4  # the protocol's tie rules
    cells = report_cells(spec, chosen)
    assert len(cells) == 1 + 6 * 5 and "test-rasft_recal-seed4-window_recalibration_steps6" in {c.name for c in cells}
    assert spec.comparisons == (("rasft_recal", "dft"), ("rasft_recal", "rasft"), ("rasft_recal", "srft"),
                                ("rasft_recal", "grpo"), ("sft", "dft"))


def test_round_two_results_in_the_docs_are_the_committed_runs(tmp_path):
    """docs/study.md's round-2 tables are the report of the committed cells: regenerated from
    docs/study_round2/cells/, the report equals the committed one, and every per-seed count and paired difference
    the docs print is the report's."""
    import shutil
    from pathlib import Path

    from rasft_trl.study.engine import run_study
    from rasft_trl.study.spec import load_spec

    root = Path(__file__).resolve().parents[1]
    committed = root / "docs" / "study_round2"
    shutil.copytree(committed / "cells", tmp_path / "cells")
    result = run_study(load_spec("demo_round2", output_dir=str(tmp_path)), report_only=True)
    assert (tmp_path / "study.md").read_text() == (committed / "study.md").read_text()
    for summary in (tmp_path / "study.json", committed / "study.json", root / "docs" / "study" / "study.json"):
        assert "base_dir" not in json.loads(summary.read_text())["spec"]  # no path of the machine that ran it
    rows = result["rows"]
    assert all(rows[m]["seeds"] == 5 for m in rows if m != "base")  # every arm at the protocol's 5 seeds
    docs = (root / "docs" / "study.md").read_text()
    section = docs[docs.index("## Round 2: results"):docs.index("## Running a study on your own recipes")]
    for method, row in rows.items():
        counts = [f"{row['test']['correct_per_seed'][s]}, {row['ood']['correct_per_seed'][s]}"
                  for s in sorted(row["test"]["correct_per_seed"])]
        assert f"| {method} | " + " | ".join(counts) + " |" in section, method

    def points(p):  # the docs' form: sign, one decimal, typographic minus
        return f"{p['mean'] * 100:+.1f} ± {p['ci95'] * 100:.1f}".replace("-", "−")

    for d in result["differences"]:
        assert f"| {points(d['test'])} | {points(d['ood'])} |" in section, (d["a"], d["b"])
