"""Resuming a RASFT run from a checkpoint continues exactly like the uninterrupted run (CPU, fixed seed, rollouts
drawn at every step)."""

import os

import pytest
import torch
from datasets import Dataset
from test_rasft_trainer import make_args
from tiny import math_rows

from rasft_trl import RASFTTrainer


def content_verifier(prompts, completions, completion_ids=None, **columns):
    """Deterministic in the completion's text (not in the call order), so a resumed run judges alike. The prompts
    are conversational, so each completion comes as TRL passes it: `[{"role": "assistant", "content": text}]`."""
    return [float(sum(map(ord, c[0]["content"])) % 2 == 0) for c in completions]


def run(tmp_path, model_dir, name, resume=None, **overrides):
    # the window is measured again at every step, so that every step routes problems to rollouts
    args = make_args(tmp_path / name, max_steps=4, gradient_accumulation_steps=1, save_strategy="steps", save_steps=2,
                     window_recalibration_steps=1,
                     **overrides)
    trainer = RASFTTrainer(model_dir, args, Dataset.from_dict(math_rows(8)), verifier=content_verifier)
    trainer.train(resume_from_checkpoint=resume)
    losses = {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}
    drawn = {h["step"]: h["rollouts/drawn"] for h in trainer.state.log_history if "rollouts/drawn" in h}
    return trainer, losses, drawn


def test_mid_epoch_resume_matches_the_uninterrupted_run(tmp_path, tiny_model_dir):
    # 8 rows, batch 2: 4 steps in one epoch; checkpoint-2 is in the middle of the epoch
    full, full_losses, full_drawn = run(tmp_path, tiny_model_dir, "full")
    checkpoint = os.path.join(full.args.output_dir, "checkpoint-2")
    assert os.path.isdir(checkpoint) and all(full_drawn[s] > 0 for s in (3, 4))
    resumed, losses, drawn = run(tmp_path, tiny_model_dir, "resumed", resume=checkpoint)
    assert {3, 4} <= set(losses)
    for step in (3, 4):
        assert losses[step] == full_losses[step], (step, losses[step], full_losses[step])
    for (name, a), b in zip(full.model.named_parameters(), resumed.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), name


def test_epoch_boundary_resume_matches_the_uninterrupted_run(tmp_path, tiny_model_dir):
    # 4 rows, batch 2, 2 epochs: checkpoint-2 is at the end of the first epoch
    def run4(name, resume=None):
        args = make_args(tmp_path / name, max_steps=4, num_train_epochs=2, gradient_accumulation_steps=1,
                         save_strategy="steps", save_steps=2, window_recalibration_steps=1)
        trainer = RASFTTrainer(tiny_model_dir, args, Dataset.from_dict(math_rows(4)), verifier=content_verifier)
        trainer.train(resume_from_checkpoint=resume)
        return trainer, {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}

    full, full_losses = run4("full")
    resumed, losses = run4("resumed", os.path.join(full.args.output_dir, "checkpoint-2"))
    # equal to float round-off: the resumed run rebuilds its cache of expert reference log-probs in other batches
    assert [losses[s] for s in (3, 4)] == pytest.approx([full_losses[s] for s in (3, 4)], rel=1e-6, abs=0)
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)


HERE = os.path.dirname(os.path.abspath(__file__))


def worker(model_dir, out, *mode):
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, os.path.join(HERE, "resume_worker.py"), model_dir, str(out), *mode],
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("uninterrupted")
    result = worker(tiny_model_dir, out, "full")
    assert result.returncode == 0, result.stderr[-4000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kill, resumed_from", [
    (("kill", "SIGKILL", "3"), 2),  # killed after step 3: checkpoint-2 is the last
    (("kill", "SIGINT", "5"), 4),  # Ctrl-C after step 5
    (("killsave", "4"), 2),  # killed while writing checkpoint-4: the half-written folder is skipped
])
def test_killed_run_resumes_like_the_uninterrupted_run(tmp_path, tiny_model_dir, uninterrupted, kill, resumed_from):
    import json

    killed = worker(tiny_model_dir, tmp_path, *kill)
    assert killed.returncode != 0 and not (tmp_path / "losses.json").exists(), killed.stderr[-2000:]
    if kill[0] == "killsave":
        assert (tmp_path / "checkpoint-4").is_dir() and not (tmp_path / "checkpoint-4" / "trainer_state.json").exists()
    result = worker(tiny_model_dir, tmp_path, "resume")
    assert result.returncode == 0, result.stderr[-4000:]
    full_losses = json.loads((uninterrupted / "losses.json").read_text())["losses"]
    record = json.loads((tmp_path / "losses.json").read_text())
    # it resumed (a run from scratch would match too): only the steps after its checkpoint ran in this process
    assert record["steps_run"] == list(range(resumed_from + 1, 7))
    losses = record["losses"]  # the checkpoint's log history holds the earlier steps
    assert sorted(int(s) for s in losses) == list(range(1, 7))
    for step, loss in losses.items():
        assert loss == full_losses[step], (step, loss, full_losses[step])
    full, final = torch.load(uninterrupted / "final.pt"), torch.load(tmp_path / "final.pt")
    assert full.keys() == final.keys()
    for name in full:
        assert torch.allclose(full[name], final[name], atol=1e-6, rtol=0), name
    if kill[0] == "killsave":
        assert "Skipping" in result.stderr and "checkpoint-4" in result.stderr
