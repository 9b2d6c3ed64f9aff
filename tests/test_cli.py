"""The smoke recipe through `accelerate launch` on the CPU (model swapped for the tiny test model)."""

import json
import os
import subprocess
import sys


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


def test_cli_help_lists_commands():
    result = subprocess.run([sys.executable, "-m", "rasft_trl.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "train" in result.stdout and "demo" in result.stdout
