"""`rasft-trl study`: the spec, the statistics, the plan, and a 2-method x 2-seed study of real recipes on the tiny
model (training through `accelerate launch`, evaluation through `rasft-trl eval`), resumed and reported."""

import json
import math
import os
import subprocess
import sys

import pytest
import yaml

from rasft_trl.study.engine import Cell, choose, differences, selection_cells, summarize, report_cells
from rasft_trl.study.runner import eval_flags, flags
from rasft_trl.study.spec import SpecError, parse_spec
from rasft_trl.study.stats import mean_interval, paired_difference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "recipes", "smoke", "tiny", "config.yaml")


def spec_dict(**extra):
    raw = {
        "name": "t", "output_dir": "out", "seeds": 2,
        "methods": {"dft": {"recipe": SMOKE, "script": "sft", "overrides": {"loss_type": "dft"}},
                    "rasft": {"recipe": SMOKE, "family": "dft"}},
        "selection": {"grid": [1e-4, 1e-3], "eval_set": "validation"},
        "evaluation": {"sets": {"validation": {"benchmarks": "math500"}, "test": {"benchmarks": "math500"}}},
    }
    raw.update(extra)
    return raw


def test_spec_defaults_and_mistakes_named():
    spec = parse_spec(spec_dict())
    assert spec.seeds == (0, 1) and spec.report_sets == ("test",) and spec.comparisons == (("rasft", "dft"),)
    assert spec.families == {"dft": ["dft", "rasft"]} and spec.selector("dft") == "dft"
    with pytest.raises(SpecError, match="did you mean 'seeds'"):
        parse_spec({**spec_dict(), "seed": 3})
    with pytest.raises(SpecError, match="selection.eval_set"):
        parse_spec(spec_dict(selection={"grid": [1e-4], "eval_set": "val"}))
    with pytest.raises(SpecError, match="script"):
        parse_spec(spec_dict(methods={"x": {"recipe": SMOKE, "script": "ppo"}}))
    with pytest.raises(SpecError, match="recipe is required"):
        parse_spec(spec_dict(methods={"x": {"script": "sft"}}))
    with pytest.raises(SpecError, match="not a method"):
        parse_spec(spec_dict(comparisons=[["rasft", "grpo"]]))
    with pytest.raises(SpecError, match="seeds"):
        parse_spec(spec_dict(seeds=[1, 1]))
    with pytest.raises(SpecError, match="no set left"):
        parse_spec(spec_dict(evaluation={"sets": {"validation": {}}}))


def test_mean_interval_and_paired_difference():
    mean, half = mean_interval([0.5, 0.7])
    assert mean == pytest.approx(0.6) and half == pytest.approx(12.706 * math.sqrt(0.02) / math.sqrt(2))
    assert mean_interval([0.3]) == (0.3, 0.0)
    # paired by seed: a constant shift has no spread, whatever the spread of the arms
    d = paired_difference({0: 0.40, 1: 0.60, 2: 0.50}, {0: 0.30, 1: 0.50, 2: 0.40, 3: 0.9})
    assert d["seeds"] == [0, 1, 2] and d["mean"] == pytest.approx(0.1) and d["ci95"] == pytest.approx(0.0)
    assert d["excludes_zero"]
    d = paired_difference({0: 0.5, 1: 0.4}, {0: 0.4, 1: 0.5})
    assert d["mean"] == pytest.approx(0.0) and not d["excludes_zero"]
    assert paired_difference({0: 1.0}, {1: 1.0}) is None


def test_plan_choice_summary_and_differences():
    spec = parse_spec(spec_dict(seeds=3))
    select = selection_cells(spec)
    assert [c.name for c in select] == ["select-dft-seed0-lr0.0001", "select-dft-seed0-lr0.001"]
    records = {select[0].name: {"eval": {"validation": {"accuracy": 0.2}}},
               select[1].name: {"eval": {"validation": {"accuracy": 0.2}}}}
    assert choose(spec, records)["dft"]["chosen"] == 1e-4  # a tie goes to the smaller value...
    assert choose(spec, records, ties="larger")["dft"]["chosen"] == 1e-3  # ...or the larger
    records[select[1].name]["eval"]["validation"]["accuracy"] = 0.3
    chosen = choose(spec, records)
    assert chosen["dft"]["chosen"] == 1e-3
    cells = report_cells(spec, chosen)
    assert [c.name for c in cells[:2]] == ["test-dft-seed0-lr0.001", "test-rasft-seed0-lr0.001"]  # seed-major
    acc = {("dft", 0): 0.30, ("dft", 1): 0.40, ("dft", 2): 0.35, ("rasft", 0): 0.32, ("rasft", 1): 0.43,
           ("rasft", 2): 0.36}
    records = {c.name: {"eval": {"test": {"accuracy": acc[(c.method, c.seed)], "num_correct": None}},
                        "train_wall_seconds": 10.0,
                        "mechanism": {"rollout_accuracy_first_last": [0.2, 0.4]} if c.method == "rasft" else None}
               for c in cells if (c.method, c.seed) != ("rasft", 2)}  # an unfinished study
    rows = summarize(spec, chosen, records)
    assert rows["dft"]["seeds"] == 3 and rows["rasft"]["seeds"] == 2
    assert rows["rasft"]["mechanism"]["rollout_accuracy_first_last"] == [0.2, 0.4]
    (diff,) = differences(spec, rows)
    assert diff["test"]["seeds"] == [0, 1]  # only seeds both arms finished
    assert diff["test"]["mean"] == pytest.approx(0.025) and diff["test"]["per_seed"] == pytest.approx([0.02, 0.03])


def test_flags_spell_booleans_lists_and_spec_relative_paths(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "v.jsonl").write_text("")
    spec = parse_spec(spec_dict(), base_dir=str(tmp_path))
    assert flags({"bf16": False, "max_steps": 3, "x": None}) == ["--bf16", "false", "--max_steps", "3"]
    assert flags({"data_file": ["math500=data/v.jsonl", "aime24=nowhere.jsonl"]}, spec) == [
        "--data_file", f"math500={tmp_path}/data/v.jsonl", "--data_file", "aime24=nowhere.jsonl"]
    assert eval_flags({"chat_without_system": True, "temperature": 0, "trust_remote_code": False}, spec) == [
        "--temperature", "0", "--chat_without_system"]


def test_cell_names_match_the_demo_study():
    assert Cell("rasft", 1, 5e-4, ("test",), "test").name == "test-rasft-seed1-lr0.0005"
    assert Cell("base", 0, 0.0, ("test",), "test").name == "test-base-seed0-lr0"
    assert Cell("dft", 2, None, ("test",), "test").name == "test-dft-seed2"
    assert Cell("rasft", 0, 6, ("v",), "select", "window_recalibration_steps").name == \
        "select-rasft-seed0-window_recalibration_steps6"


def write_eval_set(path, n, offset):
    with open(path, "w") as f:
        for i in range(n):
            a, b = i + offset, 2 * i + 1
            f.write(json.dumps({"problem": f"What is {a} + {b}?", "answer": str(a + b), "unique_id": f"p{i}"}) + "\n")
    return str(path)


def study(spec_path, *extra):
    env = dict(os.environ, HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", "rasft_trl.cli", "study", str(spec_path), *extra], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=1500)


@pytest.mark.slow
def test_two_methods_two_seeds_end_to_end_resumed_and_reported(tmp_path, tiny_model_dir):
    """Real recipes through `rasft-trl train` (accelerate launch) and `rasft-trl eval` on the tiny model: selection on
    validation, 2 methods x 2 seeds, the report with the paired-difference table; a rerun trains nothing."""
    model = {"model_name_or_path": tiny_model_dir, "max_train_samples": 8, "max_steps": 2,
             "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_new_tokens": 4,
             "calibration_sample_size": 8}
    raw = spec_dict(output_dir=str(tmp_path / "study"), overrides=model,
                    baseline={"model": tiny_model_dir}, comparisons=[["rasft", "dft"], ["rasft", "base"]])
    raw["evaluation"] = {
        "args": {"temperature": 0, "max_new_tokens": 4, "backend": "transformers", "dtype": "float32",
                 "system_prompt": ""},
        "sets": {"validation": {"benchmarks": "math500", "data_file": "math500=val.jsonl"},
                 "test": {"benchmarks": "math500", "data_file": "math500=test.jsonl"}},
    }
    write_eval_set(tmp_path / "val.jsonl", 3, 100)
    write_eval_set(tmp_path / "test.jsonl", 4, 200)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))

    result = study(spec_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = tmp_path / "study"
    cells = sorted(p.stem for p in (out / "cells").glob("*.json"))
    assert len(cells) == 2 + 1 + 4 and "test-base-seed0-lr0" in cells  # selection, base, 2 methods x 2 seeds
    summary = json.loads((out / "study.json").read_text())
    chosen = summary["chosen"]["dft"]["chosen"]
    assert chosen in (1e-4, 1e-3)
    for seed in (0, 1):
        for method in ("dft", "rasft"):
            record = json.loads((out / "cells" / f"test-{method}-seed{seed}-lr{chosen:g}.json").read_text())
            assert record["train_steps"] == 2 and record["train_wall_seconds"] > 0
            assert record["eval"]["test"]["benchmarks"]["math500"]["num_problems"] == 4
            # the cell trained with its seed and the chosen rate: the launch line is in its log
            log = (out / "runs" / f"test-{method}-seed{seed}-lr{chosen:g}" / "train.log").read_text()
            assert f"--seed {seed}" in log and f"--learning_rate {chosen}" in log
        assert record["mechanism"]["rollouts_drawn"] > 0  # rasft drew rollouts (none correct: a random model)
    assert summary["methods"]["rasft"]["seeds"] == 2 and summary["methods"]["dft"]["seeds"] == 2
    diffs = {(d["a"], d["b"]): d for d in summary["differences"]}
    assert diffs[("rasft", "dft")]["test"]["seeds"] == [0, 1]
    report = (out / "study.md").read_text()
    assert "| rasft − dft |" in report and "| rasft − base |" in report and "Paired by seed" in report
    assert "| dft | 2 |" in report and "Selection of `learning_rate` on `validation`" in report

    # resumed: nothing runs again, the report is the same
    logs = {p: p.stat().st_mtime for p in (out / "runs").rglob("*.log")}
    again = study(spec_path)
    assert again.returncode == 0 and "2 of 2 runs already done" in again.stdout
    assert "5 of 5 runs already done" in again.stdout
    assert {p: p.stat().st_mtime for p in (out / "runs").rglob("*.log")} == logs
    assert json.loads((out / "study.json").read_text())["methods"] == summary["methods"]


@pytest.mark.slow
def test_a_failing_run_is_reported_and_the_command_fails(tmp_path, tiny_model_dir):
    raw = {"output_dir": str(tmp_path / "s"), "seeds": 1,
           "methods": {"bad": {"recipe": SMOKE, "overrides": {"model_name_or_path": tiny_model_dir,
                                                             "num_rolouts": 2}}},
           "evaluation": {"sets": {"test": {"benchmarks": "math500"}}}}
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    result = study(spec_path)
    assert result.returncode == 1
    assert "1 run(s) failed" in result.stderr
    report = (tmp_path / "s" / "study.md").read_text()
    assert "test-bad-seed0" in report and "num_rollouts" in report  # the script's one-line error, nearest name
    assert not (tmp_path / "s" / "cells" / "test-bad-seed0.json").exists()  # not recorded as finished


def test_unknown_spec_is_one_line(tmp_path):
    from rasft_trl.cli import main

    with pytest.raises(SystemExit, match="neither a file nor a shipped spec"):
        main(["study", str(tmp_path / "missing.yaml")])


def test_shipped_gpu_spec_plans_commands_its_scripts_accept(tmp_path):
    """The paper-model spec: every planned training command passes `rasft-trl train`'s flag check (recipe keys and
    overrides), every evaluation command parses, and the launch goes through the ZeRO-2 config on 8 processes."""
    from rasft_trl.cli import check_script_flags, resolve_accelerate_config
    from rasft_trl.scripts.evaluate import make_parser
    from rasft_trl.scripts.flags import either_spelling
    from rasft_trl.study.runner import eval_command, train_command
    from rasft_trl.study.spec import load_spec

    spec = load_spec("qwen2.5-math-1.5b")
    chosen = {family: {"chosen": 5e-5} for family in spec.families}
    cells = selection_cells(spec) + report_cells(spec, chosen)
    assert len(cells) == 2 * 3 + 1 + 3 * 3  # 2 families x 3 rates, base, 3 arms x 3 seeds
    for cell in cells:
        if cell.method == "base":
            continue
        command = train_command(cell, spec, tmp_path / cell.name, 0)
        assert resolve_accelerate_config(command[command.index("--accelerate_config") + 1]).endswith("zero2.yaml")
        assert command[command.index("--num_processes") + 1] == "8"
        config = command.index("--config")
        script_flags = command[config:config + 2] + command[command.index("--main_process_port") + 2:]
        check_script_flags(spec.methods[cell.method].script, script_flags)
    for eval_set in spec.eval_sets:
        parser = make_parser()  # as `rasft-trl eval` parses: either spelling of each flag
        command = eval_command(spec, "some/model", eval_set, tmp_path / "e")[4:]
        args = parser.parse_args(either_spelling(parser, command))
        assert args.backend == "vllm" and args.recipe


def test_dry_run_prints_the_plan(tmp_path, capsys):
    from rasft_trl.cli import main

    spec_path = tmp_path / "s.yaml"
    spec_path.write_text(yaml.safe_dump(spec_dict(output_dir=str(tmp_path / "o"))))
    assert main(["study", str(spec_path), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + 2 * 2 and lines[0].startswith("select-dft-seed0-lr0.0001: ")
    assert "--method sft" in lines[0] and "--learning_rate 0.0001" in lines[0]
    assert not (tmp_path / "o").exists()  # nothing started


def scripted_runner(cell, spec, work, slot, jobs):
    """An engine-level runner for the orchestration tests: accuracy from the cell's value and seed, one line per call
    in `calls.txt` (the real runners are tested end to end above and in test_demo.py)."""
    with open(os.path.join(spec.output_dir, "calls.txt"), "a") as f:
        f.write(cell.name + "\n")
    if cell.method == "broken":
        raise RuntimeError("exit code 1; see train.log")
    accuracy = 0.1 * (cell.value or 0) + 0.01 * cell.seed + (0.05 if cell.method == "b" else 0.0)
    return {"eval": {s: {"accuracy": accuracy, "num_correct": None} for s in cell.sets}}


def test_engine_selection_only_resume_and_failures(tmp_path):
    from rasft_trl.study.engine import run_study

    raw = {"output_dir": str(tmp_path / "s"), "seeds": 2, "runner": "test_study_tool:scripted_runner",
           "methods": {"a": {}, "b": {"family": "a"}, "c": {"overrides": {"learning_rate": 0.5}}},
           "selection": {"eval_set": "val", "families": {"a": {"parameter": "k", "grid": [1, 2, 3]}}},
           "evaluation": {"sets": {"val": {}, "test": {}}}}
    spec = parse_spec(raw)
    calls = tmp_path / "s" / "calls.txt"
    result = run_study(spec, selection_only=True)
    assert result["chosen"]["a"]["chosen"] == 3 and result["rows"] == {}
    assert calls.read_text().split() == ["select-a-seed0-k1", "select-a-seed0-k2", "select-a-seed0-k3"]
    result = run_study(spec)  # resumes: the selection is not run again
    assert calls.read_text().split()[3:] == ["test-base-seed0", "test-a-seed0-k3", "test-b-seed0-k3", "test-c-seed0",
                                             "test-a-seed1-k3", "test-b-seed1-k3", "test-c-seed1"]
    (diff_b, diff_c) = result["differences"]  # every arm against the first
    assert (diff_b["a"], diff_b["b"]) == ("b", "a") and diff_b["test"]["mean"] == pytest.approx(0.05)
    assert diff_c["test"]["mean"] == pytest.approx(-0.3)  # c has no grid: its value is its own (none here)
    report = (tmp_path / "s" / "study.md").read_text()
    assert "| a | 2 | k=3 |" in report
    assert "Selection on `val` (seed 0; `learning_rate` unless a line names another parameter):" in report
    assert "- `a` `k` (chosen by a): 1 → 10.0%, 2 → 20.0%, 3 → 30.0%; chosen **3**" in report
    before = calls.read_text()
    run_study(spec)
    assert calls.read_text() == before  # nothing left to run
    broken = parse_spec({**raw, "output_dir": str(tmp_path / "t"),
                         "methods": {"a": {}, "broken": {"family": "broken"}}})
    result = run_study(broken)
    assert [f.split(":")[0] for f in result["failures"]] == ["test-broken-seed0", "test-broken-seed1"]
    assert result["rows"]["a"]["seeds"] == 2 and "broken" not in result["rows"]
    assert "Runs that failed" in (tmp_path / "t" / "study.md").read_text()
