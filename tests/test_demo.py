"""Tests of the CPU demo: the report on a synthetic log history (fast) and a shortened end-to-end run (slow)."""

import csv
import json

import pytest

from rasft_trl.demo.report import PLOTS, format_accuracy_table, series, write_report
from rasft_trl.demo.run import METHODS, parse_args


def fake_eval(correct: int, n: int = 12) -> dict:
    return {
        "accuracy": correct / n,
        "num_correct": correct,
        "num_problems": n,
        "num_unjudged": 0,
        "num_boxed": correct,
        "accuracy_by_level": {"1": correct / n, "2": 0.0, "3": 0.0},
        "seconds": 1.0,
        "settings": {"max_new_tokens": 8},
        "samples": [],
    }


def fake_history(with_rollouts: bool) -> list[dict]:
    history = []
    for step in range(1, 6):
        entry = {"loss": 1.0 / step, "grad_norm": 1.0, "learning_rate": 1e-5, "epoch": step / 5, "step": step}
        if with_rollouts:
            entry.update(
                {
                    "rollouts/accuracy": step / 10,
                    "pool/mean_solvability": step / 10,
                    "pool/expert_coef_mean": 1 - step / 20,
                    "ratio/mean": 0.95,
                    "ratio/clip_low_frac": 0.0,
                    "ratio/clip_high_frac": 0.1,
                    "window/in_frac": 0.25,
                }
            )
            if step == 3:  # a step without rollouts logs no accuracy
                del entry["rollouts/accuracy"], entry["pool/mean_solvability"]
        history.append(entry)
    history.append({"train_runtime": 10.0, "train_loss": 0.5, "epoch": 1.0, "step": 5})  # summary row
    return history


@pytest.fixture
def results():
    return {
        "settings": {"eval": "greedy, max_new_tokens=8"},
        "timings": {"load_model": 1.0, "train/rasft": 10.0, "total": 20.0},
        "untrained": fake_eval(0),
        "methods": {
            "rasft": {"eval": fake_eval(9), "log_history": fake_history(True), "train_seconds": 10.0},
            "sft": {"eval": fake_eval(7), "log_history": fake_history(False), "train_seconds": 8.0},
        },
    }


def test_series_skips_missing_and_summary_rows():
    steps, values = series(fake_history(True), "rollouts/accuracy")
    assert steps == [1, 2, 4, 5] and values == [0.1, 0.2, 0.4, 0.5]
    assert series(fake_history(False), "ratio/mean") == ([], [])
    assert len(series(fake_history(False), "loss")[0]) == 5


def test_write_report(tmp_path, results):
    written = write_report(tmp_path, results)
    names = {p.name for p in written}
    expected = {
        "metrics.json",
        "accuracy.csv",
        "timings.csv",
        "log_history_rasft.csv",
        "log_history_sft.csv",
        "accuracy.png",
        *PLOTS,
    }
    assert names == expected
    for path in written:
        assert path.is_file() and path.stat().st_size > 0
    for name in [n for n in names if n.endswith(".png")]:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "metrics.json").read_text())["methods"]["rasft"]["eval"]["num_correct"] == 9
    rows = list(csv.DictReader(open(tmp_path / "accuracy.csv")))
    assert [(r["method"], float(r["accuracy_before"]), float(r["accuracy_after"])) for r in rows] == [
        ("rasft", 0.0, 0.75),
        ("sft", 0.0, 7 / 12),
    ]
    steps = [int(r["step"]) for r in csv.DictReader(open(tmp_path / "log_history_rasft.csv"))]
    assert steps == [1, 2, 3, 4, 5]  # the summary row is not a step


def test_accuracy_table(results):
    table = format_accuracy_table(results)
    assert "0/12 (0.0%)" in table and "9/12 (75.0%)" in table and "7/12 (58.3%)" in table
    assert table.splitlines()[0].split()[:3] == ["method", "before", "after"]


def test_cli_defaults_and_switches():
    args = parse_args([])
    assert not args.compare and args.lora and args.output_dir == "demo_report"
    assert args.train_size == args.max_steps * args.batch_size
    args = parse_args(["--compare", "--max-steps", "3", "--num-train", "10", "--no-lora", "--cache-dir", "/x"])
    assert args.compare and not args.lora and args.max_steps == 3 and args.train_size == 10 and args.cache_dir == "/x"
    assert args.lr == 1e-4 and parse_args(["--lora"]).lr == 5e-4
    with pytest.raises(SystemExit):
        parse_args(["--max-steps", "0"])


def test_precision_flag_reaches_the_trainer_config(tmp_path):
    from rasft_trl.demo.run import cpu_has_native_bf16, make_config

    assert parse_args([]).use_bf16 == cpu_has_native_bf16()
    assert parse_args(["--bf16"]).use_bf16 and not parse_args(["--no-bf16"]).use_bf16
    for flag, expected in (("--bf16", True), ("--no-bf16", False)):
        config = make_config("rasft", parse_args([flag]), str(tmp_path))
        assert config.bf16 is expected and not config.fp16


def test_baselines_are_switches_of_one_trainer():
    assert METHODS["sft"] == dict(use_rollouts=False, use_ratio=False, token_factor="sft")
    assert METHODS["dft"] == dict(use_rollouts=False, use_ratio=False, token_factor="dft")
    assert METHODS["rasft"]["use_rollouts"] and METHODS["rasft"]["use_ratio"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_end_to_end(tmp_path):
    """A shortened demo on the real SmolLM2-135M-Instruct: train 2 steps, evaluate 6 problems before and after."""
    from rasft_trl.demo.run import main

    out = tmp_path / "report"
    results = main(
        [
            "--output-dir",
            str(out),
            "--max-steps",
            "2",
            "--batch-size",
            "4",
            "--num-eval",
            "6",
            "--num-rollouts",
            "2",
            "--rollout-max-new-tokens",
            "24",
            "--eval-max-new-tokens",
            "24",
            "--calibration-sample-size",
            "8",
            "--warm-start-steps",
            "2",
        ]
    )
    assert results["untrained"]["num_problems"] == 6
    after = results["methods"]["rasft"]["eval"]
    assert after["num_problems"] == 6 and 0.0 <= after["accuracy"] <= 1.0
    assert {"load_model", "warm_start", "eval/untrained", "train/rasft", "eval/rasft", "total"} <= set(
        results["timings"]
    )
    assert results["settings"]["warm_start"]["settings"]["steps"] == 2  # every method started from the warm start
    mechanism = results["methods"]["rasft"]["mechanism"]
    assert mechanism["steps"] == 2 and mechanism["rollouts_drawn"] >= 0
    for name in ["metrics.json", "accuracy.csv", "timings.csv", "log_history_rasft.csv", "accuracy.png", *PLOTS]:
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    logged = [e for e in metrics["methods"]["rasft"]["log_history"] if "loss" in e]
    assert all("window/in_frac" in e and "pool/expert_coef_mean" in e for e in logged)
    assert metrics["untrained"]["accuracy"] is not None and metrics["methods"]["rasft"]["eval"]["accuracy"] is not None
    steps = [e for e in metrics["methods"]["rasft"]["log_history"] if "loss" in e]
    assert len(steps) == 2
    # the trained adapter is saved, on top of the warm start, and `rasft-trl eval` takes it as it is
    adapter = out / "models" / "rasft"
    assert results["methods"]["rasft"]["model_dir"] == str(adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == results["settings"]["warm_start_path"]
    # ... and scores it on the demo's problems exactly as the demo did (the command the demo prints)
    from test_demo_eval import assert_same_samples, eval_samples, run_eval_command

    from rasft_trl.demo.evaluate import EvalSettings, eval_command

    settings = EvalSettings(max_new_tokens=24, batch_size=results["settings"]["eval_batch_size"])
    dtype = "bfloat16" if results["settings"]["generation_precision"] == "bfloat16" else "float32"
    evaluated = run_eval_command(eval_command(str(adapter), str(out / "eval_problems.jsonl"), settings, dtype,
                                              str(tmp_path / "eval")))
    demo_records = [json.loads(line) for line in (out / "samples_rasft.jsonl").read_text().splitlines()]
    assert_same_samples(demo_records, eval_samples(str(tmp_path / "eval")))
    assert evaluated["benchmarks"]["math500"]["accuracy"] == after["accuracy"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_study_end_to_end_and_resume(tmp_path):
    """The study command on the real model at a toy size: selection, test runs, report; a rerun resumes."""
    from rasft_trl.demo.study import main

    argv = ["--output-dir", str(tmp_path / "study"), "--methods", "sft,rasft", "--seeds", "2", "--lr-grid",
            "5e-4,1e-3", "--max-steps", "1", "--num-test", "3", "--num-ood", "2", "--num-validation", "3",
            "--warm-start-steps", "2"]
    rows = main(argv)
    assert set(rows) == {"base", "sft", "rasft"}
    assert len(rows["rasft"]["test"]["per_seed"]) == 2 and len(rows["base"]["ood"]["per_seed"]) == 1
    cells = sorted(p.name for p in (tmp_path / "study" / "cells").glob("*.json"))
    assert len(cells) == 4 + 1 + 4  # selection (sft, dft) x 2 rates, base, 2 methods x 2 seeds
    report = json.loads((tmp_path / "study" / "study.json").read_text())
    assert set(report["chosen"]) == {"sft", "dft"} and report["differences"][0]["a"] == "rasft"
    assert (tmp_path / "study" / "study.png").read_bytes()[:4] == b"\x89PNG"
    assert "| rasft |" in (tmp_path / "study" / "study.md").read_text()
    mtimes = {p.name: p.stat().st_mtime for p in (tmp_path / "study" / "cells").glob("*.json")}
    main(argv)  # resumes: nothing to rerun
    assert {p.name: p.stat().st_mtime for p in (tmp_path / "study" / "cells").glob("*.json")} == mtimes


def test_demo_settings_reach_the_trainer_config(tmp_path):
    from rasft_trl.demo.run import make_config

    args = parse_args([])
    assert args.warm_start_steps > 0 and args.max_steps * args.batch_size == args.train_size
    config = make_config("rasft", args, str(tmp_path))
    assert config.window_start_quantiles == list(args.window_start) == [0.0, 0.6]
    assert config.window_recalibration_steps == args.window_recalibration_steps > 0
    assert config.repetition_penalty == 1.0 and config.max_new_tokens == 64 and config.mask_truncated_completions
    args = parse_args(["--window-start", "0.2", "0.45", "--window-end", "0.5", "0.75", "--window-recalibration-steps",
                       "0", "--repetition-penalty", "1.1", "--warm-start-steps", "0", "--generation-precision", "fp32"])
    config = make_config("no_ratio", args, str(tmp_path))
    assert config.window_end_quantiles == [0.5, 0.75] and config.window_recalibration_steps == 0
    assert config.repetition_penalty == 1.1 and not config.use_ratio and args.warm_start.steps == 0
    assert str(args.generation_dtype) == "torch.float32"
    with pytest.raises(SystemExit):
        parse_args(["--warm-start-steps", "-1"])
