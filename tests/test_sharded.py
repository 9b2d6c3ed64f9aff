"""DeepSpeed ZeRO-2 / ZeRO-3 and FSDP2 for real, on 2 CPU processes over gloo, launched as `rasft-trl train` launches
them on a machine without a GPU (DeepSpeed's CPU accelerator; FSDP2's `fully_shard` on CPU; fp32).

Each run must name the engine it really trained with (`sharding_engine`: the wrapped model is a DeepSpeed engine of
that ZeRO stage, or an FSDP2 module), so a silent fallback to plain data parallel fails.

Tolerance of "equal to one process": losses to a relative 1e-5 and weights to an absolute 1e-5 (measured: the first
loss identical, later ones within ~1e-7 relative). Not exact because the sharded runs sum gradients in another order
(a reduce-scatter / all-reduce over two processes of half-batches, against one process's sum), and float32 addition
is not associative; Adam then carries those last-bit differences into the next steps.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ENGINES = {"zero2": "deepspeed-zero2", "zero3": "deepspeed-zero3", "fsdp": "fsdp2"}
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-5

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    env.pop("DS_ACCELERATOR", None)  # the launcher must set it itself
    return env


def run_cli(*args, timeout=600):
    """`rasft-trl train ...` as a user types it (in a fresh process group, so a kill reaches every worker)."""
    command = [sys.executable, "-m", "rasft_trl.cli", "train", *args]
    return subprocess.run(command, env=cli_env(), capture_output=True, text=True, timeout=timeout)


def worker_command(engine: str, out_dir: str, model_dir: str, method="rasft", max_steps=3, save_steps=0,
                   resume="none", recalibrate=1) -> tuple[list[str], dict]:
    """`accelerate launch` of sharded_worker.py with the shipped accelerate config, adapted for CPU processes exactly as
    the `rasft-trl train` launcher adapts it."""
    from rasft_trl.cli import cpu_launch_settings, resolve_accelerate_config

    config = resolve_accelerate_config(engine)
    flags, env_updates, _ = cpu_launch_settings(config, has_gpu=False)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, *flags,
               "--num_processes", "2", "--main_process_port", str(free_port()),
               os.path.join(HERE, "sharded_worker.py"), model_dir, out_dir, method, str(max_steps), str(save_steps),
               resume, str(recalibrate)]
    env = dict(cli_env(), **env_updates, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return command, env


def failure(result) -> str:
    """What a failed launch said: its error lines first (the launcher's own traceback buries them), then the tail."""
    lines = (result.stdout + result.stderr).splitlines()
    errors = [line for line in lines if any(k in line for k in ("Error", "error:", "what()", "Abort", "terminate",
                                                                  "Exception"))]
    return "\n".join(errors[-40:]) + "\n...\n" + "\n".join(lines[-60:])


def run_worker(engine, out_dir, model_dir, **kwargs) -> dict:
    command, env = worker_command(engine, str(out_dir), model_dir, **kwargs)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, failure(result)
    return json.loads((out_dir / "result.json").read_text())


def weights(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(os.path.join(folder, "model.safetensors"))


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys() and a
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), atol=WEIGHT_ATOL, rtol=0), (
            name, float((a[name].float() - b[name].float()).abs().max()))


# ------------------------------------------------------------------ the recipe launch path, per engine


def engine_checkpoint_files(engine: str, checkpoint) -> list[str]:
    """Files only that engine writes: DeepSpeed's partitioned optimizer states (one per process), FSDP's state."""
    if engine.startswith("zero"):
        step = checkpoint.name.split("-")[1]
        return [f"global_step{step}/zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)]
    return ["pytorch_model_fsdp.bin", "optimizer.bin"]


@pytest.mark.parametrize("engine", list(ENGINES))
def test_smoke_recipe_trains_saves_and_resumes_under_each_engine(tmp_path, tiny_model_dir, engine):
    """`rasft-trl train --accelerate_config NAME --num_processes 2 --config smoke/tiny/config.yaml` (rollouts from
    the transformers backend): trains with the named engine, saves a model `from_pretrained` loads, and a checkpoint
    it wrote resumes and continues from the next step with the loss of the uninterrupted run."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    flags = ["--accelerate_config", engine, "--num_processes", "2", "--main_process_port", str(free_port()),
             "--config", "smoke/tiny/config.yaml", "--model_name_or_path", tiny_model_dir, "--output_dir", str(out),
             "--max_steps", "3", "--save_strategy", "steps", "--save_steps", "2"]
    result = run_cli(*flags)
    assert result.returncode == 0, failure(result)
    assert f"RASFT finished 3 steps ({ENGINES[engine]}, 2 processes)" in result.stdout
    assert "no GPU visible" in result.stderr
    for name in engine_checkpoint_files(engine, out / "checkpoint-2"):
        assert (out / "checkpoint-2" / name).is_file(), name
    trained = AutoModelForCausalLM.from_pretrained(out)
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    changed = [n for n, p in trained.named_parameters() if not torch.equal(p, initial.get_parameter(n))]
    assert len(changed) == len(list(initial.parameters())), "every parameter trains"
    first = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())["log_history"]

    shutil.rmtree(out / "checkpoint-3")  # as if the run had stopped after checkpoint-2
    flags[flags.index("--main_process_port") + 1] = str(free_port())
    resumed = run_cli(*flags, "--resume_from_checkpoint", "true")
    assert resumed.returncode == 0, failure(resumed)
    assert "finished 3 steps" in resumed.stdout and "window is calibrated again" not in resumed.stderr
    again = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())["log_history"]
    losses = {h["step"]: h["loss"] for h in first if "loss" in h}
    resumed_losses = {h["step"]: h["loss"] for h in again if "loss" in h}
    assert sorted(resumed_losses) == [1, 2, 3]  # steps 1-2 from the checkpoint, step 3 trained again
    assert resumed_losses[3] == pytest.approx(losses[3], rel=LOSS_RTOL)
    # the resumed process did not calibrate the window: it read the checkpoint's calibration
    assert "window/calibrations" not in [h for h in again if h.get("step") == 3][0]


# ------------------------------------------------------------------ every trainer under every engine

CASES = {
    "lora": ["--config", "smoke/tiny/config.yaml", "--use_peft", "true", "--lora_r", "4",
             "--lora_target_modules", "all-linear"],
    "srft": ["--method", "srft", "--config", "smoke/tiny/config.yaml"],
    "sft_kl": ["--method", "sft", "--config", "smoke/tiny/config.yaml", "--loss_type", "sft_kl"],
    "grpo": ["--method", "grpo", "--config", "Qwen2.5-Math-1.5B/grpo/config_numina.yaml", "--dtype", "float32",
             "--attn_implementation", "eager", "--dataset_name", "builtin:arithmetic", "--max_train_samples", "8",
             "--prompt_column", "prompt", "--answer_column", "answer", "--per_device_train_batch_size", "2",
             "--gradient_accumulation_steps", "1", "--bf16", "false", "--gradient_checkpointing", "false",
             "--use_cpu", "true", "--logging_steps", "1", "--max_completion_length", "8", "--num_generations", "2"],
}
NAMES = {"lora": "RASFT", "srft": "SRFT", "sft_kl": "SFT variants", "grpo": "GRPO"}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("engine", list(ENGINES))
def test_each_trainer_trains_under_each_engine(tmp_path, tiny_model_dir, engine, case):
    """RASFT with LoRA (adapter-disabled reference), SRFT (entropy from the fused head), SFT+KL (the KL reads both LM
    heads) and the GRPO recipe (TRL's GRPOTrainer), two steps each with the engine really in use."""
    out = tmp_path / "run"
    result = run_cli("--accelerate_config", engine, "--num_processes", "2", "--main_process_port", str(free_port()),
                     *CASES[case], "--model_name_or_path", tiny_model_dir, "--output_dir", str(out),
                     "--max_steps", "2", "--save_strategy", "no")
    assert result.returncode == 0, failure(result)
    assert f"{NAMES[case]} finished 2 steps ({ENGINES[engine]}, 2 processes)" in result.stdout
    saved = "adapter_model.safetensors" if case == "lora" else "model.safetensors"
    assert (out / saved).is_file()
    if case == "lora":
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(out)
        lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
        assert lora_b and any(p.abs().sum() > 0 for p in lora_b), "the adapter trained"


@pytest.mark.parametrize("engine", ["zero3", "fsdp"])
def test_rollouts_of_unequal_length_do_not_hang_sharded_weights(tmp_path, tiny_model_dir, engine):
    """The hard case for `generate` on sharded weights: one process's rollouts stop at the first token while the
    other's run 12 tokens, and one process has no prompt. Every forward of a sharded model may be a collective;
    the backend must keep the decoding steps together (a hang fails on the timeout)."""
    from rasft_trl.cli import cpu_launch_settings, resolve_accelerate_config

    config = resolve_accelerate_config(engine)
    flags, env_updates, _ = cpu_launch_settings(config, has_gpu=False)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, *flags,
               "--num_processes", "2", "--main_process_port", str(free_port()),
               os.path.join(HERE, "sharded_generate_worker.py"), tiny_model_dir, str(tmp_path)]
    env = dict(cli_env(), **env_updates, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, failure(result)
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert ranks[0]["engine"] == ranks[1]["engine"] == ENGINES[engine]
    assert ranks[0]["lengths"] == [12] * 6 and ranks[0]["second"] == [12] * 2
    assert ranks[1]["lengths"] == [] and ranks[1]["second"] == []
    # the process whose rollouts stopped at once ran every decoding step of the other one
    assert ranks[0]["decoding_forwards"] == ranks[1]["decoding_forwards"] == [12, 12, 12]
    # greedy rollouts through the engine equal those of the plain model loaded from disk: generation ran on the
    # real (gathered) weights
    from sharded_generate_worker import NEW_TOKENS, PROMPTS
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    eos, pad = plain.generation_config.eos_token_id, plain.generation_config.pad_token_id
    expected = [plain.generate(input_ids=torch.tensor([ids]), do_sample=False, max_new_tokens=NEW_TOKENS,
                               min_new_tokens=NEW_TOKENS, eos_token_id=eos, pad_token_id=pad)[0, len(ids):].tolist()
                for ids in PROMPTS]
    assert ranks[0]["greedy"] == expected


# ------------------------------------------------------------------ losses equal one process


@pytest.fixture(scope="module")
def single_process(tmp_path_factory, tiny_model_dir):
    """The single-process baselines on the same global batch (1 process x batch 4), in a fresh process."""
    results = {}
    for method in ("rasft", "sft_kl"):
        out = tmp_path_factory.mktemp(f"single-{method}")
        code = (f"import sharded_worker as w; w.run({tiny_model_dir!r}, {str(out)!r}, 4, 1, {method!r}, 3)")
        env = dict(cli_env(), PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-4000:]
        results[method] = (json.loads((out / "result.json").read_text()), weights(out))
    return results


@pytest.mark.parametrize("engine, method", [(e, "rasft") for e in ENGINES] + [("zero3", "sft_kl"),
                                                                                ("fsdp", "sft_kl")])
def test_sharded_losses_equal_one_process(tmp_path, tiny_model_dir, single_process, engine, method):
    """RASFT full fine-tuning (frozen reference, rollouts routed by a real window and trained on), 3 steps on 2
    processes x batch 1 x accumulation 2, against 1 process x batch 4: the same losses and weights (tolerance in the
    module doc). SFT+KL checks the gradient through the LM head called outside the forward."""
    sharded = run_worker(engine, tmp_path, tiny_model_dir, method=method)
    single, single_weights = single_process[method]
    assert sharded["engine"] == ENGINES[engine] and sharded["processes"] == 2
    assert single["engine"] == "single"
    if method == "rasft":
        assert sum(single["targets"]) > 0, "rollouts are trained on"
        assert sharded["rollout_problems"] == single["rollout_problems"]
    assert sharded["steps"] == single["steps"] == [1, 2, 3]
    assert sharded["losses"] == pytest.approx(single["losses"], rel=LOSS_RTOL)
    assert_same_weights(weights(tmp_path), single_weights)


# ------------------------------------------------------------------ kill, then resume, under ZeRO-3


def test_zero3_run_killed_after_a_checkpoint_resumes_exactly(tmp_path, tiny_model_dir):
    """SIGKILL every process of a ZeRO-3 run while it trains past its first checkpoint; the resumed run reads the
    window state from the checkpoint and ends where the uninterrupted run ends (losses of every step, weights)."""
    steps = 12
    kwargs = dict(max_steps=steps, save_steps=2, recalibrate=3)
    reference = run_worker("zero3", tmp_path / "uninterrupted", tiny_model_dir, **kwargs)
    assert reference["engine"] == "deepspeed-zero3" and len(reference["losses"]) == steps

    out = tmp_path / "killed"
    command, env = worker_command("zero3", str(out), tiny_model_dir, **kwargs)
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    launcher = psutil.Process(process.pid)
    deadline = time.monotonic() + 300
    workers = []
    try:
        while not (out / "checkpoint-2" / "trainer_state.json").is_file():
            assert process.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        # every process of the run at once (torch's elastic agent starts the training processes in sessions of
        # their own, so killing the launcher's process group would leave them training)
        workers = launcher.children(recursive=True)
        for victim in [launcher, *workers]:
            try:
                victim.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        process.wait()
        psutil.wait_procs(workers, timeout=30)
    assert len(workers) >= 2, "the training processes were running"
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    assert not (out / f"checkpoint-{steps}").exists() and not (out / "result.json").exists(), "killed mid-run"

    checkpoint = max(int(p.parent.name.split("-")[1]) for p in out.glob("checkpoint-*/trainer_state.json"))
    resumed = run_worker("zero3", out, tiny_model_dir, resume="last", **kwargs)
    assert resumed["steps"] == list(range(1, steps + 1))
    assert resumed["losses"] == pytest.approx(reference["losses"], rel=LOSS_RTOL)
    assert resumed["rollout_problems"] == reference["rollout_problems"]
    assert_same_weights(weights(out), weights(tmp_path / "uninterrupted"))
    # the resumed process took the window's calibration from the checkpoint: its first step calibrated only if the
    # uninterrupted run recalibrated there too (every 3 steps); its counter starts from 0
    if checkpoint % 3:
        assert resumed["calibrations"][checkpoint] == 0, (checkpoint, resumed["calibrations"])


# ------------------------------------------------------------------ SRFT: the entropy under sharding


@pytest.fixture(scope="module")
def srft_single_process(tmp_path_factory, tiny_model_dir):
    """SRFT on one process, batch 2 x accumulation 2: the micro-batches of 2 processes x batch 1 x accumulation 2."""
    out = tmp_path_factory.mktemp("single-srft")
    code = f"import srft_worker as w; w.run({tiny_model_dir!r}, {str(out)!r}, 2, 2, 2)"
    env = dict(cli_env(), PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((out / "result.json").read_text()), weights(out)


@pytest.mark.parametrize("engine", ["zero3", "fsdp"])
def test_srft_entropy_and_losses_under_sharding_equal_one_process(tmp_path, tiny_model_dir, srft_single_process,
                                                                   engine):
    """SRFT's entropy weights read the policy entropy from the fused LM head inside the forward (the head's weight
    read outside it is empty under ZeRO-3 and a shard under FSDP2): the entropy, every term, the losses and the
    weights of 2 sharded steps equal one process's."""
    from rasft_trl.cli import cpu_launch_settings, resolve_accelerate_config

    config = resolve_accelerate_config(engine)
    flags, env_updates, _ = cpu_launch_settings(config, has_gpu=False)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, *flags,
               "--num_processes", "2", "--main_process_port", str(free_port()),
               os.path.join(HERE, "srft_worker.py"), tiny_model_dir, str(tmp_path), "1", "2", "2"]
    env = dict(cli_env(), **env_updates, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, failure(result)
    sharded = json.loads((tmp_path / "result.json").read_text())
    single, single_weights = srft_single_process
    assert sharded["engine"] == ENGINES[engine] and sharded["processes"] == 2 and single["engine"] == "single"
    assert sharded["losses"] == pytest.approx(single["losses"], rel=LOSS_RTOL)
    for step_sharded, step_single in zip(sharded["terms"], single["terms"], strict=True):
        assert step_single["srft/entropy"] > 0
        for key, value in step_single.items():
            assert step_sharded[key] == pytest.approx(value, rel=LOSS_RTOL, abs=1e-7), key
    assert_same_weights(weights(tmp_path), single_weights)
