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
