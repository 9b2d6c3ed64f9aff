"""Run in a subprocess by test_resume.py: a RASFT run that is killed (SIGKILL, SIGINT) or resumed.

    python resume_worker.py MODEL OUT full              train 6 steps, checkpoints every 2
    python resume_worker.py MODEL OUT kill SIG STEP    the same, killing itself with SIG after optimizer step STEP
    python resume_worker.py MODEL OUT killsave STEP    SIGKILL half-way through writing checkpoint-STEP
    python resume_worker.py MODEL OUT resume           resume from the last checkpoint in OUT (`True`)

Losses by step and the optimizer steps this process ran go to OUT/losses.json and the final weights to OUT/final.pt."""

import json
import os
import signal
import sys

import torch
from datasets import Dataset
from tiny import math_rows
from transformers import TrainerCallback

from rasft_trl import RASFTConfig, RASFTTrainer


def content_verifier(prompts, completions, completion_ids=None, **columns):
    """Deterministic in the completion's tokens, so a resumed run judges alike."""
    return [float(sum(ids) % 2 == 0) for ids in completion_ids]


class StepsRun(TrainerCallback):
    def __init__(self):
        self.steps = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


class KillAfter(TrainerCallback):
    def __init__(self, sig: int, step: int):
        self.sig, self.step = sig, step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), self.sig)


def main(model_dir: str, out: str, mode: str, *rest: str) -> None:
    # as in a terminal: a runner started in the background may have left SIGINT ignored, which children inherit
    signal.signal(signal.SIGINT, signal.default_int_handler)
    torch.set_num_threads(1)
    args = RASFTConfig(
        output_dir=out, max_steps=6, per_device_train_batch_size=2, gradient_accumulation_steps=1,
        learning_rate=1e-2, warmup_steps=0, bf16=False, gradient_checkpointing=False, logging_steps=1,
        report_to="none", save_strategy="steps", save_steps=2, use_cpu=True, seed=0, num_rollouts=3,
        max_new_tokens=6, max_length=128, calibration_sample_size=8, mask_truncated_completions=False,
        # every problem in the window, measured again at every step: rollouts are drawn at every step
        window_start_quantiles=[0.0, 1.0], window_end_quantiles=[0.0, 1.0], window_recalibration_steps=1,
    )
    steps_run = StepsRun()
    callbacks = [steps_run] + ([KillAfter(getattr(signal, rest[0]), int(rest[1]))] if mode == "kill" else [])
    # 12 rows, batch 2: 6 steps in one epoch, so every checkpoint is in the middle of the epoch
    trainer = RASFTTrainer(model_dir, args, Dataset.from_dict(math_rows(12)), verifier=content_verifier,
                           callbacks=callbacks)
    if mode == "killsave":
        step = int(rest[0])
        save_scheduler = trainer._save_optimizer_and_scheduler

        def killed_half_way(output_dir):
            save_scheduler(output_dir)
            if trainer.state.global_step == step:  # weights and optimizer written; RNG and trainer state not
                os.kill(os.getpid(), signal.SIGKILL)

        trainer._save_optimizer_and_scheduler = killed_half_way
    trainer.train(resume_from_checkpoint=True if mode == "resume" else None)
    losses = {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}
    with open(os.path.join(out, "losses.json"), "w") as f:
        json.dump({"losses": losses, "steps_run": steps_run.steps}, f)
    torch.save({k: v.detach().clone() for k, v in trainer.model.state_dict().items()}, os.path.join(out, "final.pt"))


if __name__ == "__main__":
    main(*sys.argv[1:])
