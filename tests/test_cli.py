"""The smoke recipe through `accelerate launch` on the CPU (model swapped for the tiny test model)."""

import json
import os
import subprocess
import sys

import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_smoke_recipe_runs_two_steps_through_accelerate_launch(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", os.path.join(ROOT, "recipes/accelerate_configs/cpu.yaml"),
        "-m", "rasft_trl.scripts.rasft",
        "--config", os.path.join(ROOT, "recipes/smoke/tiny/config.yaml"),
        "--model_name_or_path", tiny_model_dir,
        "--output_dir", str(out),
        "--save_strategy", "steps", "--save_steps", "2",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    logged = [h for h in state["log_history"] if "loss" in h]
    assert len(logged) == 2 and all("window/in_frac" in h and "pool/expert_coef_mean" in h for h in logged)
    # the expert-loss window calibration travels with the checkpoint
    calibration = json.loads((out / "checkpoint-2" / "rasft_state.json").read_text())["calibration"]
    assert calibration["num_samples"] == 16
    assert (out / "model.safetensors").exists()
    # the end-of-training line claims no model; the script says where it saved one, after saving it
    lines = result.stdout.splitlines()
    finished = next(i for i, line in enumerate(lines) if line.startswith("RASFT finished 2 steps"))
    assert "Model" not in lines[finished] and f"Model saved to {out}." in lines[finished + 1:]


def test_cli_help_lists_commands():
    result = subprocess.run([sys.executable, "-m", "rasft_trl.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "train" in result.stdout and "demo" in result.stdout


def run_cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "rasft_trl.cli", *args], capture_output=True, text=True, **kwargs)


def test_train_help_lists_every_config_field_with_choices():
    import dataclasses

    from rasft_trl import RASFTConfig

    result = run_cli("train", "--help")
    assert result.returncode == 0, result.stderr
    for f in dataclasses.fields(RASFTConfig):
        if f.init and not f.name.startswith("_"):
            assert f"--{f.name}" in result.stdout, f.name
    assert "{dft,sft,profit}" in result.stdout and "--accelerate_config" in result.stdout
    assert "--loss_type {sft,sft_kl,dft,asft,profit}" in run_cli("train", "--method", "sft", "--help").stdout


def test_env_and_recipes_commands():
    env = run_cli("env")
    assert env.returncode == 0 and "- trl: " in env.stdout and "- torch: " in env.stdout
    recipes = run_cli("recipes")
    assert recipes.returncode == 0 and "Qwen2.5-Math-1.5B/rasft/config_numina.yaml" in recipes.stdout
    assert "zero3" in recipes.stdout


def test_shipped_names_resolve_and_unknown_ones_fail_clearly(tmp_path):
    import pytest

    from rasft_trl.cli import resolve_accelerate_config, resolve_recipe

    assert resolve_accelerate_config("zero2").endswith("recipes/accelerate_configs/zero2.yaml")
    assert os.path.isfile(resolve_recipe("recipes/smoke/tiny/config.yaml"))
    with pytest.raises(SystemExit, match="shipped config"):
        resolve_accelerate_config("zero9")
    with pytest.raises(SystemExit, match="rasft-trl recipes"):
        resolve_recipe("nope.yaml")


def test_demo_model_without_gguf_fails_before_downloading(tmp_path, monkeypatch):
    import importlib.util

    import pytest

    from rasft_trl.demo import model

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    monkeypatch.setattr(model, "fetch_gguf", lambda *a: pytest.fail("downloaded before checking gguf"))
    with pytest.raises(ImportError, match=r"rasft-trl\[demo\]"):
        model.demo_model_path(tmp_path / "cache")


def test_recipe_by_name_from_a_non_editable_install(tmp_path, tiny_model_dir):
    """Build the wheel, install it (no dependencies) into a folder that shadows the checkout, and train one step
    from a shipped recipe and a shipped accelerate config given by name, from a directory without the repo."""
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), ROOT], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                              *map(str, wheels.glob("*.whl"))], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site), HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    where = subprocess.run([sys.executable, "-c", "import rasft_trl; print(rasft_trl.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True)
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "rasft_trl.cli", "train", "--accelerate_config", "cpu",
         "--config", "Qwen2.5-Math-1.5B/rasft/config_numina.yaml",
         "--model_name_or_path", tiny_model_dir, "--dtype", "float32", "--attn_implementation", "eager",
         "--dataset_name", "builtin:arithmetic", "--max_train_samples", "4", "--prompt_column", "prompt",
         "--completion_column", "completion", "--answer_column", "answer", "--verifier", "math",
         "--output_dir", str(out), "--max_steps", "1",
         "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1", "--bf16", "false",
         "--gradient_checkpointing", "false", "--use_cpu", "true", "--max_new_tokens", "8", "--max_length", "256",
         "--calibration_sample_size", "4", "--save_strategy", "no", "--report_to", "none"],
        cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (out / "model.safetensors").exists() and "RASFT" in (out / "README.md").read_text()
    assert "RASFT finished 1 steps" in result.stdout


def test_gpu_configs_adapt_to_cpu_processes_only_without_a_gpu():
    """The launcher's CPU case: DeepSpeed's CPU accelerator, FSDP2 over gloo, DDP over gloo, fp32 each; the shipped
    GPU configs are untouched when a GPU is visible."""
    from rasft_trl.cli import cpu_launch_settings, resolve_accelerate_config

    expected = {"zero2": {"DS_ACCELERATOR": "cpu"}, "zero3": {"DS_ACCELERATOR": "cpu"}, "fsdp": {},
                "ddp": {"ACCELERATE_USE_CPU": "true"}}
    for name, env in expected.items():
        config = resolve_accelerate_config(name)
        flags, env_updates, note = cpu_launch_settings(config, has_gpu=False)
        assert flags == ["--mixed_precision", "no"] and env_updates == env and note.startswith("no GPU visible"), name
        assert cpu_launch_settings(config, has_gpu=True) == ([], {}, None), name
    assert "ZeRO-3" in cpu_launch_settings(resolve_accelerate_config("zero3"), has_gpu=False)[2]
    for name in ("cpu", "single_gpu"):
        assert cpu_launch_settings(resolve_accelerate_config(name), has_gpu=False) == ([], {}, None)


def test_deepspeed_configs_without_deepspeed_name_the_extra(monkeypatch, tmp_path):
    import importlib.util

    from rasft_trl.cli import cpu_launch_settings, resolve_accelerate_config

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    for has_gpu in (False, True):
        with pytest.raises(SystemExit, match=r"pip install 'rasft-trl\[deepspeed\]'"):
            cpu_launch_settings(resolve_accelerate_config("zero2"), has_gpu=has_gpu)
    fsdp1 = tmp_path / "fsdp1.yaml"
    fsdp1.write_text("distributed_type: FSDP\nfsdp_config:\n  fsdp_version: 1\n")
    with pytest.raises(SystemExit, match="FSDP2"):
        cpu_launch_settings(str(fsdp1), has_gpu=False)


def test_train_without_config_says_so_in_one_line():
    result = run_cli("train", "--accelerate_config", "cpu")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "rasft-trl train: --config RECIPE is required: a recipe file, or a shipped recipe's name (`rasft-trl "
        "recipes` lists them; smoke/tiny/config.yaml runs on a CPU)."]
    assert "--config RECIPE" in run_cli("train", "--help").stdout.split("\n\n")[0]  # in the usage line
