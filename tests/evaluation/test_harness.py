"""`rasft-trl eval` end to end: files, scores, resume, refused setting changes, LoRA adapter folders, the CLI."""

import json
import os

import pytest
from fixtures import HUB_ROWS, write_jsonl

from rasft_trl.evaluation import harness
from rasft_trl.evaluation.harness import EvalConfig, format_results_table, read_samples, request_seed, run_eval


def fixture_config(tmp_path, model, **overrides):
    files = {
        "math500": write_jsonl(str(tmp_path / "data" / "math500.jsonl"), HUB_ROWS["math500"]),
        "mbpp": write_jsonl(str(tmp_path / "data" / "mbpp.jsonl"), HUB_ROWS["mbpp"]),
    }
    settings = dict(
        model=model, benchmarks=["math500", "mbpp"], data_files=files, limit=2, num_samples=2, max_new_tokens=8,
        backend="transformers", output_dir=str(tmp_path / "out"), batch_size=3, chunk_size=3,
    )
    settings.update(overrides)
    return EvalConfig(**settings)


def lines(config):
    with open(os.path.join(config.output_dir, "samples.jsonl")) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def test_end_to_end_files_scores_and_table(tmp_path, tiny_model_dir):
    config = fixture_config(tmp_path, tiny_model_dir)
    results = run_eval(config)
    records = lines(config)
    assert len(records) == 8  # 2 benchmarks x 2 problems x 2 samples
    assert {(r["benchmark"], r["problem_id"], r["sample"]) for r in records} == {
        (b, p, s) for b, ids in [("math500", ["test/prealgebra/1.json", "test/prealgebra/2.json"]),
                                 ("mbpp", ["11", "12"])] for p in ids for s in (0, 1)
    }
    for record in records:
        assert set(record) >= {"benchmark", "problem_id", "sample", "response", "verdict", "reason", "correct"}
        assert record["verdict"] in ("correct", "incorrect", "cannot_judge") and record["reason"]
    saved = json.load(open(os.path.join(config.output_dir, "results.json")))
    assert saved["benchmarks"].keys() == {"math500", "mbpp"}
    for bench in saved["benchmarks"].values():
        assert bench["num_problems"] == 2 and bench["num_samples"] == 4 and set(bench["pass@k"]) == {"1", "2"}
        assert 0 <= bench["accuracy"] <= 1 and bench["pass@k"]["1"] == pytest.approx(bench["accuracy"])
    assert saved["settings"]["temperature"] == 1.0 and saved["run"]["generated"] == 8
    assert set(saved["averages"]) == {"math", "code", "all"}
    table = format_results_table(results, "tiny")
    header = table.splitlines()[0]
    assert header.index("MATH-500") < header.index("Math Avg.") < header.index("MBPP") < header.index("Code Avg.")
    assert header.rstrip(" |").endswith("Avg.") and "| tiny |" in table.replace("  ", " ").replace("  ", " ")


def test_rerun_generates_nothing_and_extends_only_what_is_missing(tmp_path, tiny_model_dir, monkeypatch):
    config = fixture_config(tmp_path, tiny_model_dir)
    first = run_eval(config)
    before = lines(config)

    def no_model(*args, **kwargs):
        raise AssertionError("a finished run must not load the model")

    with monkeypatch.context() as patch:
        patch.setattr(harness, "_open_sampler", no_model)
        again = run_eval(config)
    assert again["run"]["generated"] == 0 and again["run"]["reused"] == 8 and lines(config) == before
    assert again["benchmarks"] == first["benchmarks"]

    more = run_eval(fixture_config(tmp_path, tiny_model_dir, num_samples=3))  # one more sample per problem
    assert more["run"]["generated"] == 4 and len(lines(config)) == 12
    assert lines(config)[:8] == before
    assert all(b["samples_per_problem"] == 3 for b in more["benchmarks"].values())


def test_a_killed_run_resumes_and_drops_its_unfinished_last_line(tmp_path, tiny_model_dir):
    config = fixture_config(tmp_path, tiny_model_dir)
    run_eval(config)
    path = os.path.join(config.output_dir, "samples.jsonl")
    kept = open(path).read().splitlines()[:5]
    with open(path, "w") as handle:
        handle.write("\n".join(kept) + "\n" + kept[5 - 1][:20])  # a line cut short by the kill
    resumed = run_eval(config)
    assert resumed["run"]["generated"] == 3 and len(lines(config)) == 8
    assert len(read_samples(path)) == 8


def test_a_corrupt_line_in_the_middle_is_an_error(tmp_path, tiny_model_dir):
    config = fixture_config(tmp_path, tiny_model_dir)
    run_eval(config)
    path = os.path.join(config.output_dir, "samples.jsonl")
    content = open(path).read().splitlines()
    content[2] = "{not json"
    open(path, "w").write("\n".join(content) + "\n")
    with pytest.raises(ValueError, match="line 3: not a sample record"):
        run_eval(config)


def test_other_sample_settings_are_refused(tmp_path, tiny_model_dir):
    run_eval(fixture_config(tmp_path, tiny_model_dir))
    with pytest.raises(ValueError, match=r"temperature: 1.0 -> 0.5"):
        run_eval(fixture_config(tmp_path, tiny_model_dir, temperature=0.5))
    with pytest.raises(ValueError, match="system_prompts"):
        run_eval(fixture_config(tmp_path, tiny_model_dir, system_prompt=""))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(num_samples=0), "num_samples must be an integer >= 1"),
        (dict(temperature=-1.0), "temperature must be finite"),
        (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
        (dict(limit=0), "limit must be a positive integer"),
        (dict(benchmarks=["mmlu"]), "Unknown benchmark 'mmlu'"),
        (dict(backend="tgi"), "Unknown backend 'tgi'"),
    ],
)
def test_bad_settings_fail_clearly(tmp_path, tiny_model_dir, overrides, message):
    with pytest.raises(ValueError, match=message):
        run_eval(fixture_config(tmp_path, tiny_model_dir, **overrides))


def test_request_seeds_are_stable_and_distinct():
    assert request_seed(0, "math500", "a", 0) == request_seed(0, "math500", "a", 0)
    seeds = {request_seed(s, b, p, i) for s in (0, 1) for b in ("x", "y") for p in ("a", "b") for i in range(4)}
    assert len(seeds) == 32 and all(0 <= s < 2**31 for s in seeds)


def test_a_lora_adapter_folder_evaluates_like_its_merged_model(tmp_path, tiny_model_dir):
    """Greedy responses of an adapter folder (loaded onto its base and merged) equal those of the merged model."""
    from tiny import save_random_lora

    adapter_dir, merged_dir = save_random_lora(tiny_model_dir, str(tmp_path))
    responses = {}
    for name, path in [("adapter", adapter_dir), ("merged", merged_dir), ("base", tiny_model_dir)]:
        config = fixture_config(tmp_path, path, temperature=0.0, num_samples=1, output_dir=str(tmp_path / name),
                                dtype="float32")  # bf16 rounding turns a random tiny model's near-ties either way
        run_eval(config)
        responses[name] = [r["response"] for r in lines(config)]
    assert responses["adapter"] == responses["merged"]
    assert responses["adapter"] != responses["base"]  # the adapter changed the model


def test_an_adapter_loaded_in_bf16_keeps_fp32_rotary_frequencies(tmp_path, tiny_model_dir):
    """The merged adapter in bf16 is the merged model loaded in bf16: the same parameters and the same buffers (the
    rotary frequencies stay fp32; `.to(bfloat16)` rounded them and changed greedy answers)."""
    import torch
    from tiny import save_random_lora

    from rasft_trl.evaluation.generate import load_causal_lm

    adapter_dir, merged_dir = save_random_lora(tiny_model_dir, str(tmp_path))
    adapter = load_causal_lm(adapter_dir, "bfloat16")
    merged = load_causal_lm(merged_dir, "bfloat16")
    buffers = dict(adapter.named_buffers())
    assert buffers and all(buffers[n].dtype == b.dtype and torch.equal(buffers[n], b) for n, b in merged.named_buffers())
    assert any(b.dtype == torch.float32 for b in buffers.values())
    assert all(p.dtype == torch.bfloat16 for p in adapter.parameters())
    assert all(torch.equal(a, b) for a, b in zip(adapter.state_dict().values(), merged.state_dict().values()))


def test_cli_eval(tmp_path, tiny_model_dir, capsys):
    from rasft_trl.cli import main

    data = write_jsonl(str(tmp_path / "m.jsonl"), HUB_ROWS["minerva"])
    out = str(tmp_path / "cli")
    code = main(["eval", "--model", tiny_model_dir, "--benchmarks", "minerva", "--data-file", f"minerva={data}",
                 "--column-map", "minerva:problem=question", "--num-samples", "2", "--max-new-tokens", "4",
                 "--backend", "transformers", "--output-dir", out, "--label", "tiny-model"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| Minerva |" in printed.replace("  ", "") or "Minerva" in printed.splitlines()[1]
    assert "tiny-model" in printed and "2 problems x 2 samples" in printed and "95% interval" in printed
    assert json.load(open(os.path.join(out, "results.json")))["benchmarks"]["minerva"]["num_samples"] == 4
    with pytest.raises(SystemExit, match="expected NAME=VALUE"):
        main(["eval", "--model", tiny_model_dir, "--data-file", "minerva"])


def test_cli_eval_reports_user_errors_without_a_traceback(tmp_path, tiny_model_dir):
    from rasft_trl.cli import main

    with pytest.raises(SystemExit, match="rasft-trl eval: Data file .* does not exist"):
        main(["eval", "--model", tiny_model_dir, "--benchmarks", "math500", "--data-file",
              f"math500={tmp_path / 'absent.jsonl'}", "--output-dir", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="Unknown benchmark 'mmlu'"):
        main(["eval", "--model", tiny_model_dir, "--benchmarks", "mmlu"])
