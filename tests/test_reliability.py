"""Non-finite training is stopped or skipped, never saved; config values that make no sense are refused."""

import math
import os

import pytest
import torch
from datasets import Dataset
from test_rasft_trainer import make_args
from tiny import math_rows

from rasft_trl import RASFTConfig, RASFTTrainer


def expert_only(tmp_path, **overrides):
    return make_args(tmp_path, use_rollouts=False, max_steps=3, gradient_accumulation_steps=1, **overrides)


def test_a_huge_learning_rate_stops_training_before_nonfinite_weights(tmp_path, tiny_model_dir):
    args = expert_only(tmp_path, learning_rate=1e10, save_strategy="steps", save_steps=1)
    trainer = RASFTTrainer(tiny_model_dir, args, Dataset.from_dict(math_rows(8)))
    with pytest.raises(FloatingPointError, match=r"Non-finite .* at optimizer step \d"):
        trainer.train()
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    for folder in os.listdir(args.output_dir):  # whatever was saved before the error holds finite weights
        from safetensors.torch import load_file

        weights = load_file(os.path.join(args.output_dir, folder, "model.safetensors"))
        assert all(torch.isfinite(t).all() for t in weights.values()), folder


def test_skip_policy_drops_the_update_and_counts_it(tmp_path, tiny_model_dir, monkeypatch):
    trainer = RASFTTrainer(tiny_model_dir, expert_only(tmp_path, on_nonfinite="skip"),
                           Dataset.from_dict(math_rows(8)))
    real = trainer.compute_loss
    calls = []

    def nan_at_step_2(model, inputs, **kwargs):
        loss = real(model, inputs, **kwargs)
        calls.append(trainer.state.global_step)
        return loss * float("nan") if trainer.state.global_step == 1 else loss

    monkeypatch.setattr(trainer, "compute_loss", nan_at_step_2)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    snapshots = []
    from transformers import TrainerCallback

    class Snap(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            snapshots.append({n: p.detach().clone() for n, p in trainer.model.named_parameters()})

    trainer.add_callback(Snap())
    trainer.train()
    assert trainer.state.global_step == 3
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    # step 2's update was dropped: its weights equal step 1's; steps 1 and 3 changed them
    assert all(torch.equal(snapshots[0][n], snapshots[1][n]) for n in before)
    assert any(not torch.equal(before[n], snapshots[0][n]) for n in before)
    assert any(not torch.equal(snapshots[1][n], snapshots[2][n]) for n in before)
    logged = [h for h in trainer.state.log_history if "train/nonfinite_skipped" in h]
    assert logged[-1]["train/nonfinite_skipped"] == 1


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        (dict(w_max=math.inf), ValueError, "w_max must be a finite number"),
        (dict(w_rollout=math.nan), ValueError, "w_rollout must be a finite number"),
        (dict(kl_weight=math.inf), ValueError, "kl_weight must be a finite number"),
        (dict(temperature=math.inf), ValueError, "temperature must be a finite number"),
        (dict(group_adv_rollout_clip_high=math.inf), ValueError, "group_adv_rollout_clip_high must be a finite"),
        (dict(window_start_quantiles=[0.0, math.nan]), ValueError, "window_start_quantiles must hold finite"),
        (dict(learning_rate=math.inf), ValueError, "learning_rate must be a finite number"),
        (dict(correct_threshold=-1.0), ValueError, "correct_threshold must be > 0"),
        (dict(correct_threshold=0.0), ValueError, "correct_threshold must be > 0"),
        (dict(use_rollouts="false"), TypeError, "use_rollouts must be a bool .* 'false'"),
        (dict(use_ratio=1), TypeError, "use_ratio must be a bool"),
        (dict(gradient_accumulation_steps=0), ValueError, "gradient_accumulation_steps must be >= 1"),
        (dict(on_nonfinite="ignore"), ValueError, "on_nonfinite must be 'error' or 'skip'"),
    ],
)
def test_config_refuses_values_that_make_no_sense(tmp_path, overrides, error, message):
    with pytest.raises(error, match=message):
        RASFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", **overrides)


# ---------------------------------------------------------------------------------------------------- silent mistakes


@pytest.mark.parametrize(
    "column, value, message",
    [
        ("prompt", ["What is 1+1?", "Answer briefly."], r"Column 'prompt', row \d: message 0 .* is a str .*not a chat"),
        ("prompt", [{"role": "user"}], r"Column 'prompt', row \d: message 0 of the prompt has no 'content'"),
        ("prompt", [{"content": "What is 1+1?"}], r"Column 'prompt', row \d: message 0 of the prompt has no 'role'"),
        ("prompt", 7, r"Column 'prompt', row \d: the prompt is a int"),
        ("completion", 3, r"Column 'completion', row \d: the expert completion is a int"),
        ("completion", [{"role": "assistant", "content": "  "}], r"Column 'completion', row \d: .*last message is empty"),
    ],
)
def test_malformed_prompts_and_completions_name_row_and_column(tmp_path, tiny_model_dir, column, value, message):
    data = math_rows(4)
    rows = [dict(zip(data, values)) for values in zip(*data.values())]
    for row in rows:  # Arrow cannot mix types in a column: every row gets the malformed value
        row[column] = value
    with pytest.raises(ValueError, match=message):
        RASFTTrainer(tiny_model_dir, make_args(tmp_path), Dataset.from_list(rows))


def test_an_empty_dataset_says_so(tmp_path, tiny_model_dir):
    empty = Dataset.from_dict({k: [] for k in math_rows(2)})
    with pytest.raises(ValueError, match="has no rows"):
        RASFTTrainer(tiny_model_dir, make_args(tmp_path), empty)


def test_use_vllm_without_vllm_fails_at_construction(tmp_path, tiny_model_dir):
    pytest.importorskip("trl")
    from trl.import_utils import is_vllm_available

    if is_vllm_available():
        pytest.skip("vLLM is installed here")
    with pytest.raises(ImportError, match="use_vllm=True needs vLLM"):
        RASFTTrainer(tiny_model_dir, make_args(tmp_path, use_vllm=True), Dataset.from_dict(math_rows(4)))


def test_nan_rewards_count_as_unjudged(tmp_path, tiny_model_dir):
    def nan_verifier(prompts, completions, **kwargs):
        return [float("nan")] * len(completions)

    trainer = RASFTTrainer(tiny_model_dir, make_args(tmp_path, max_steps=1), Dataset.from_dict(math_rows(4)),
                           verifier=nan_verifier)
    trainer.train()
    log = next(h for h in trainer.state.log_history if "rollouts/drawn" in h)
    assert log["rollouts/drawn"] > 0 and log["rollouts/unjudged"] == log["rollouts/drawn"]
    assert log["rollouts/targets"] == 0


def test_a_hanging_verifier_is_bounded_and_training_goes_on(tmp_path, tiny_model_dir):
    import threading

    release = threading.Event()

    def hanging_verifier(prompts, completions, **kwargs):
        release.wait(60)
        return [1.0] * len(completions)

    args = make_args(tmp_path, max_steps=2, verifier_timeout=0.5, window_recalibration_steps=1)
    trainer = RASFTTrainer(tiny_model_dir, args, Dataset.from_dict(math_rows(8)), verifier=hanging_verifier)
    try:
        trainer.train()
    finally:
        release.set()
    logs = [h for h in trainer.state.log_history if "rollouts/drawn" in h]
    assert trainer.state.global_step == 2 and logs[-1]["verifier/call_timeouts"] == 2
    assert logs[-1]["rollouts/unjudged"] == sum(h["rollouts/drawn"] for h in logs) > 0  # a running count


def _checkpoint(tmp_path, tiny_model_dir, **overrides):
    args = make_args(tmp_path / "first", max_steps=1, save_strategy="steps", save_steps=1, **overrides)
    RASFTTrainer(tiny_model_dir, args, Dataset.from_dict(math_rows(8)), verifier=lambda prompts, completions, **k:
                 [0.0] * len(completions)).train()
    return os.path.join(args.output_dir, "checkpoint-1")


def _resume(tmp_path, tiny_model_dir, checkpoint, **overrides):
    args = make_args(tmp_path / "second", max_steps=2, **overrides)
    trainer = RASFTTrainer(tiny_model_dir, args, Dataset.from_dict(math_rows(8)),
                           verifier=lambda prompts, completions, **k: [0.0] * len(completions))
    trainer.train(resume_from_checkpoint=checkpoint)
    return trainer


def test_resume_state_problems_are_visible(tmp_path, tiny_model_dir, caplog):
    checkpoint = _checkpoint(tmp_path, tiny_model_dir)
    state = os.path.join(checkpoint, "rasft_state.json")
    saved = open(state).read()
    # damaged state file: a clear error naming it
    open(state, "w").write(saved[: len(saved) // 2])
    with pytest.raises(ValueError, match=r"rasft_state.json is damaged"):
        _resume(tmp_path, tiny_model_dir, checkpoint)
    # changed quantiles: a warning, and the window is calibrated again with the new ones
    open(state, "w").write(saved)
    with caplog.at_level("WARNING", logger="rasft_trl"):
        trainer = _resume(tmp_path, tiny_model_dir, checkpoint, window_start_quantiles=[0.1, 0.9])
    assert "window quantiles changed" in caplog.text
    assert trainer._calibrated_at == 1  # calibrated again at the first resumed step
    caplog.clear()
    # no state file: a warning that the window is calibrated on the trained policy
    os.remove(state)
    with caplog.at_level("WARNING", logger="rasft_trl"):
        _resume(tmp_path / "again", tiny_model_dir, checkpoint)
    assert "has no rasft_state.json" in caplog.text


def test_last_complete_checkpoint_skips_a_half_written_save(tmp_path, caplog):
    import json

    from rasft_trl.rasft_trainer import checkpoint_problem, last_complete_checkpoint

    def checkpoint(step, files):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for name, text in files.items():
            (folder / name).write_text(text)
        return str(folder)

    good = {"trainer_state.json": json.dumps({"global_step": 1}), "rasft_state.json": "{}"}
    two = checkpoint(2, good)
    checkpoint(10, {"trainer_state.json": json.dumps({"global_step": 10})})  # killed before rasft_state.json
    checkpoint(12, {"model.safetensors": "x"})  # killed while writing the weights
    checkpoint(14, {**good, "trainer_state.json": '{"global_st'})  # killed while writing trainer_state.json
    (tmp_path / "checkpoint-20-tmp").mkdir()
    with caplog.at_level("WARNING", logger="rasft_trl"):
        assert last_complete_checkpoint(str(tmp_path), needs_rasft_state=True) == two
    assert all(f"checkpoint-{s}" in caplog.text for s in (10, 12, 14))
    assert last_complete_checkpoint(str(tmp_path), needs_rasft_state=False).endswith("checkpoint-10")
    assert "trainer_state.json is damaged" in checkpoint_problem(str(tmp_path / "checkpoint-14"), False)
    assert last_complete_checkpoint(str(tmp_path / "nothing"), True) is None


def test_resuming_from_an_incomplete_checkpoint_is_an_error(tmp_path, tiny_model_dir):
    checkpoint = _checkpoint(tmp_path, tiny_model_dir)
    os.remove(os.path.join(checkpoint, "trainer_state.json"))
    # transformers alone would load the weights and silently start again at step 0
    with pytest.raises(ValueError, match=r"Cannot resume from .*trainer_state.json is missing"):
        _resume(tmp_path, tiny_model_dir, checkpoint)
    with pytest.raises(ValueError, match=r"No complete checkpoint found"):
        _resume(tmp_path, tiny_model_dir, True)


def test_bool_check_survives_the_argument_parser(tmp_path):
    """transformers' parser rewrites inherited fields' types in place (`str | bool` -> `bool`); TrainingArguments
    fields keep their own rules (`include_num_input_tokens_seen="no"` is valid) and ours stay strict."""
    from trl import TrlParser

    TrlParser((RASFTConfig,))
    config = RASFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    assert config.include_num_input_tokens_seen in ("no", False)
    with pytest.raises(TypeError, match="use_rollouts must be a bool"):
        RASFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", use_rollouts="false")
