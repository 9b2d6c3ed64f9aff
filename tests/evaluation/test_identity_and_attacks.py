"""`rasft-trl eval` reports only numbers it can stand behind: a resumed run continues only onto the same weights,
tokenizer and data (not the same paths); greedy decoding is one sample; every sample line holds what was asked and
what was expected; results carry their uncertainty and the stack's versions; and the attacks of issue 25 each get a
clear outcome (null golds, a kill inside a multi-byte character, a response that breaks the program composer, bad
files, models and folders failing before anything is written, an MBPP test_list stored as a string)."""

import json
import os
import shutil

import pytest
from fixtures import HUB_ROWS, write_jsonl

from rasft_trl.evaluation import harness
from rasft_trl.evaluation.benchmarks import BENCHMARKS, assertion_list, load_problems
from rasft_trl.evaluation.generate import Generation
from rasft_trl.evaluation.harness import EvalConfig, judge, run_eval
from rasft_trl.evaluation.identity import model_identity


def config_for(tmp_path, model, **overrides):
    data = write_jsonl(str(tmp_path / "data" / "math500.jsonl"), HUB_ROWS["math500"])
    settings = dict(model=model, benchmarks=["math500"], data_files={"math500": data}, limit=2, num_samples=2,
                    max_new_tokens=4, backend="transformers", output_dir=str(tmp_path / "out"), batch_size=4)
    settings.update(overrides)
    return EvalConfig(**settings)


def samples(config):
    with open(os.path.join(config.output_dir, "samples.jsonl"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def no_model(*args, **kwargs):
    raise AssertionError("this run must not load the model")


# ------------------------------------------------------------------------------------------- model identity


def test_new_weights_or_tokenizer_in_the_same_folder_are_refused_and_a_moved_folder_resumes(
        tmp_path, tiny_model_dir, monkeypatch):
    model = str(tmp_path / "model")
    shutil.copytree(tiny_model_dir, model)
    config = config_for(tmp_path, model)
    run_eval(config)
    recorded = json.load(open(os.path.join(config.output_dir, "run.json")))
    assert recorded["model"]["kind"] == "folder" and len(recorded["model"]["weights"]) == 64

    moved = str(tmp_path / "moved")
    shutil.copytree(model, moved)
    with monkeypatch.context() as patch:  # same files elsewhere: the same model, nothing to generate
        patch.setattr(harness, "_open_sampler", no_model)
        assert run_eval(config_for(tmp_path, moved))["run"]["reused"] == 4

    from safetensors.torch import load_file, save_file

    weights = os.path.join(model, "model.safetensors")
    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1e-3  # "retrained" into the same folder
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"another model.*model weights \(model.safetensors\)"):
        run_eval(config)

    tokenizer_dir = str(tmp_path / "tok")
    shutil.copytree(moved, tokenizer_dir)
    config_file = os.path.join(tokenizer_dir, "tokenizer_config.json")
    settings = json.load(open(config_file))
    settings["chat_template"] = "{{ messages[0]['content'] }}"
    json.dump(settings, open(config_file, "w"))
    with pytest.raises(ValueError, match=r"model tokenizer \(tokenizer_config.json\)"):
        run_eval(config_for(tmp_path, tokenizer_dir))


def test_a_missing_or_mistyped_model_fails_before_anything_is_written(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for wrong in (str(tmp_path / "no-such-model"), "./rasft-out", "nobody/no-such-model-xyz"):
        config = config_for(tmp_path, wrong)
        with pytest.raises(ValueError, match="does not exist|not a local folder"):
            run_eval(config)
        assert not os.path.exists(config.output_dir)  # no run.json to block the corrected rerun
    run_eval(config_for(tmp_path, tiny_model_dir))  # the corrected rerun in the same folder works
    empty = tmp_path / "empty-model"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="holds no weights"):
        run_eval(config_for(tmp_path, str(empty), output_dir=str(tmp_path / "o2")))


def test_a_hub_id_is_identified_by_its_cached_commit_offline(tmp_path, tiny_model_dir, monkeypatch):
    """Offline, a Hub id resolves through the local Hub cache (the snapshot transformers would load)."""
    import huggingface_hub.constants as constants

    repo = tmp_path / "hub" / "models--someone--tiny"
    snapshot = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny_model_dir, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot.name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    identity = model_identity("someone/tiny")
    assert identity == {"path": "someone/tiny", "kind": "hub", "revision": None, "commit": snapshot.name}


# ------------------------------------------------------------------------------------------- data identity


def test_other_data_with_the_same_ids_is_refused(tmp_path, tiny_model_dir):
    config = config_for(tmp_path, tiny_model_dir)
    run_eval(config)
    changed = [dict(row, problem="What is $2+2$?", answer="4") for row in HUB_ROWS["math500"]]
    other = write_jsonl(str(tmp_path / "other" / "math500.jsonl"), changed)  # same unique_ids, new questions
    with pytest.raises(ValueError, match=r"math500 data \(sha256\)"):
        run_eval(config_for(tmp_path, tiny_model_dir, data_files={"math500": other}))
    write_jsonl(config.data_files["math500"], changed)  # the same path, new content
    with pytest.raises(ValueError, match=r"math500 data \(sha256\)"):
        run_eval(config)
    write_jsonl(config.data_files["math500"], HUB_ROWS["math500"])
    renamed = [{("question" if k == "problem" else k): v for k, v in row.items()} for row in HUB_ROWS["math500"]]
    mapped = write_jsonl(str(tmp_path / "mapped" / "math500.jsonl"), renamed)
    with pytest.raises(ValueError, match=r"math500 data \(column_map, sha256\)"):
        run_eval(config_for(tmp_path, tiny_model_dir, data_files={"math500": mapped},
                            column_maps={"math500": {"problem": "question"}}))


def test_a_sample_is_never_reused_for_a_problem_that_changed(tmp_path, tiny_model_dir):
    """What a moving Hub revision would do: the recorded source matches, the rows do not."""
    config = config_for(tmp_path, tiny_model_dir)
    run_eval(config)
    rows = [dict(HUB_ROWS["math500"][0], answer="3")] + HUB_ROWS["math500"][1:]
    write_jsonl(config.data_files["math500"], rows)
    run_file = os.path.join(config.output_dir, "run.json")
    recorded = json.load(open(run_file))
    from rasft_trl.evaluation.identity import file_sha256

    recorded["data"]["math500"]["sha256"] = file_sha256(config.data_files["math500"])
    json.dump(recorded, open(run_file, "w"))
    with pytest.raises(ValueError, match=r"problem 'test/prealgebra/1.json' .*question or gold answer differs"):
        run_eval(config)


def test_a_folder_from_the_earlier_layout_is_not_resumed(tmp_path, tiny_model_dir):
    config = config_for(tmp_path, tiny_model_dir)
    os.makedirs(config.output_dir)
    json.dump({"model": tiny_model_dir, "temperature": 1.0}, open(os.path.join(config.output_dir, "run.json"), "w"))
    with pytest.raises(ValueError, match="earlier rasft-trl that recorded no identity"):
        run_eval(config)


# ------------------------------------------------------------------------------------------- what is reported


def test_greedy_decoding_is_one_sample_per_problem(tmp_path, tiny_model_dir):
    assert EvalConfig(model="m", temperature=0.0).num_samples == 1
    assert EvalConfig(model="m").num_samples == 16
    with pytest.raises(ValueError, match="greedy decoding: every sample of a problem would be the same"):
        EvalConfig(model="m", temperature=0.0, num_samples=16)
    results = run_eval(config_for(tmp_path, tiny_model_dir, temperature=0.0, num_samples=None))
    assert results["benchmarks"]["math500"]["samples_per_problem"] == 1
    assert set(results["benchmarks"]["math500"]["pass@k"]) == {"1"}


def test_sample_lines_and_results_say_what_was_asked_expected_and_how_sure(tmp_path, tiny_model_dir):
    config = config_for(tmp_path, tiny_model_dir, limit=3)
    results = run_eval(config)
    for record in samples(config):
        row = next(r for r in HUB_ROWS["math500"] if r["unique_id"] == record["problem_id"])
        assert row["problem"] in record["prompt"] and record["prompt"].count("<|") >= 2  # the chat template's text
        assert record["gold"] == row["answer"] and len(record["problem_sha"]) == 16
        assert isinstance(record["details"], dict) and "parsed_gold" in record
    bench = results["benchmarks"]["math500"]
    assert {"accuracy", "stderr", "ci_low", "ci_high", "interval", "num_problems", "num_samples"} <= set(bench)
    assert bench["ci_low"] <= bench["accuracy"] <= bench["ci_high"] and bench["stderr"] >= 0
    assert "bootstrap over problems" in bench["interval"]
    saved = json.load(open(os.path.join(config.output_dir, "results.json")))
    import torch
    import transformers

    assert saved["versions"]["torch"] == torch.__version__ and saved["versions"]["transformers"] == \
        transformers.__version__ and "rasft-trl" in saved["versions"]
    assert saved["model"]["weights"] and saved["data"]["math500"]["source"] == "file"


# ------------------------------------------------------------------------------------------- attacks


def test_a_null_gold_is_an_error_naming_row_and_column(tmp_path):
    for bad in (None, "", float("nan")):
        rows = [HUB_ROWS["math500"][0], dict(HUB_ROWS["math500"][1], answer=bad)]
        path = write_jsonl(str(tmp_path / "null.jsonl"), rows)
        with pytest.raises(ValueError, match=r"row 1: column 'answer' \(answer\) holds no value"):
            load_problems(BENCHMARKS["math500"], data_file=path)


def test_a_kill_inside_a_multibyte_character_is_dropped_and_redone(tmp_path, tiny_model_dir):
    config = config_for(tmp_path, tiny_model_dir)
    run_eval(config)
    path = os.path.join(config.output_dir, "samples.jsonl")
    raw = open(path, "rb").read().split(b"\n")
    record = json.loads(raw[3])
    record["response"] = "the answer is \u00e9\u4e2d\U0001F600"
    cut = json.dumps(record, ensure_ascii=False).encode("utf-8")
    cut = cut[: cut.index("\u4e2d".encode()) + 1]  # one byte into a three-byte character
    with open(path, "wb") as handle:
        handle.write(b"\n".join(raw[:3]) + b"\n" + cut)
    resumed = run_eval(config)
    assert resumed["run"]["generated"] == 1 and len(samples(config)) == 4


def test_a_response_that_breaks_the_program_composer_is_judged(tmp_path):
    rows = [{"task_id": "HumanEval/0", "prompt": "def f(x):\n    \"\"\"Return x.\"\"\"\n",
             "test": "def check(candidate):\n    assert candidate(1) == 1\n", "entry_point": "f"}]
    path = write_jsonl(str(tmp_path / "he.jsonl"), rows)
    problems = load_problems(BENCHMARKS["humaneval"], data_file=path)
    config = EvalConfig(model="m", benchmarks=["humaneval"], verifier_workers=1)
    degenerate = Generation("-" * 3000 + "1", 10, False)
    records = judge([(problems[0], 0)], [degenerate], config)
    assert records[0]["verdict"] == "incorrect" and records[0]["correct"] is False


@pytest.mark.parametrize("content, message", [
    ("", "holds no rows|could not be read"),
    ("{\"problem\": \"x\", \"answer\": \n", "could not be read as jsonl"),
])
def test_empty_or_malformed_data_files_fail_in_one_line(tmp_path, tiny_model_dir, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    config = config_for(tmp_path, tiny_model_dir, data_files={"math500": str(path)})
    with pytest.raises(ValueError, match=message) as raised:
        run_eval(config)
    assert "\n" not in str(raised.value) and not os.path.exists(config.output_dir)


def test_an_output_dir_that_is_a_file_is_refused(tmp_path, tiny_model_dir):
    target = tmp_path / "taken"
    target.write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        run_eval(config_for(tmp_path, tiny_model_dir, output_dir=str(target)))


@pytest.mark.parametrize("stored", [
    '["assert f(1) == 1", "assert f(2) == 2"]',      # JSON in a CSV cell
    "['assert f(1) == 1', 'assert f(2) == 2']",      # Python repr in a CSV cell
    "assert f(1) == 1\nassert f(2) == 2\n",          # one assertion per line
])
def test_an_mbpp_test_list_stored_as_a_string_is_read_as_its_assertions(tmp_path, stored):
    assert assertion_list(stored) == ["assert f(1) == 1", "assert f(2) == 2"]
    rows = [{"task_id": 1, "text": "Return x.", "test_list": stored, "test_setup_code": ""}]
    path = str(tmp_path / "mbpp.csv")
    import csv

    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    problem = load_problems(BENCHMARKS["mbpp"], data_file=path)[0]
    assert problem.reference["tests"] == ["assert f(1) == 1", "assert f(2) == 2"]
    good = Generation("```python\ndef f(x):\n    return x\n```", 10, True)
    assert judge([(problem, 0)], [good], EvalConfig(model="m", benchmarks=["mbpp"]))[0]["correct"]


def test_an_mbpp_test_list_that_is_no_list_is_an_error_naming_the_row(tmp_path):
    path = write_jsonl(str(tmp_path / "mbpp.jsonl"), [dict(HUB_ROWS["mbpp"][1], test_list="add(1, 2) is 3")])
    with pytest.raises(ValueError, match=r"row 0: test_list is a string that is neither"):
        load_problems(BENCHMARKS["mbpp"], data_file=path)


# ------------------------------------------------------------------------------------------- the command line


def test_cli_takes_shipped_recipe_names_and_both_flag_spellings(tmp_path, tiny_model_dir, monkeypatch, capsys):
    from rasft_trl.cli import main
    from rasft_trl.scripts.evaluate import config_from_args, make_parser

    monkeypatch.chdir(tmp_path)  # outside a checkout: `recipes/...` is not a path here
    for recipe in ("recipes/Qwen2.5-Math-1.5B/rasft/config_numina.yaml", "Qwen2.5-Math-1.5B/rasft/config_numina.yaml"):
        config = config_from_args(make_parser().parse_args(["--model", "m", "--recipe", recipe]))
        assert "boxed" in config.system_prompt_for("math")
    with pytest.raises(SystemExit, match="rasft-trl eval: recipe 'nope.yaml' is neither a file nor a shipped"):
        main(["eval", "--model", tiny_model_dir, "--recipe", "nope.yaml"])
    data = write_jsonl(str(tmp_path / "m.jsonl"), HUB_ROWS["math500"])
    main(["eval", "--model", tiny_model_dir, "--benchmarks", "math500", "--data_file", f"math500={data}",
          "--num_samples", "1", "--max_new_tokens=3", "--backend", "transformers", "--output_dir", "under", "--limit",
          "1"])
    assert json.load(open(tmp_path / "under" / "results.json"))["settings"]["max_new_tokens"] == 3
    with pytest.raises(SystemExit, match=r"--temperature 0|temperature 0 is greedy"):
        main(["eval", "--model", tiny_model_dir, "--temperature", "0", "--num-samples", "4"])


def test_prepare_data_flags(tmp_path):
    from rasft_trl.scripts import prepare_data

    with pytest.raises(SystemExit, match="--num-samples is now --num-rows"):
        prepare_data.main(["numina", "--output-dir", str(tmp_path), "--num-samples", "3"])
