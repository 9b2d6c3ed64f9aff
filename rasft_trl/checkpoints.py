"""Checkpoints of the trainers (RASFT, SRFT, the baselines): what is saved beside transformers' state, and resuming.

transformers writes `trainer_state.json` last; RASFT writes its `rasft_state.json` (the expert-loss window's
calibration) atomically just before it, so a checkpoint that has both is complete. `checkpoint_problem` says why a
folder is not a complete checkpoint, `last_complete_checkpoint` picks the latest complete one of an output folder
(`resume_from_checkpoint=True`), and `CheckpointMixin` holds the trainer's overrides: the window's state saved and
loaded with the optimizer, the refusal to save non-finite weights, and the RNG state of a mid-epoch resume restored
before the step's rollouts are drawn.
"""

from __future__ import annotations

import json
import logging
import os
import shutil

import torch

from . import curriculum


logger = logging.getLogger(__name__)
STATE_FILE = "rasft_state.json"


def checkpoint_problem(folder: str, needs_rasft_state: bool) -> str | None:
    """Why `folder` is not a complete checkpoint, or None. transformers writes `trainer_state.json` last (RASFT's
    `rasft_state.json` just before it), so a save killed half-way leaves it missing or truncated."""
    if not os.path.isdir(folder):
        return "it is not a folder"
    names = ["trainer_state.json"] + ([STATE_FILE] if needs_rasft_state else [])
    for name in names:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            return f"{name} is missing (the save was interrupted?)"
        try:
            with open(path) as f:
                json.load(f)
        except (OSError, ValueError) as exc:
            return f"{name} is damaged ({type(exc).__name__}: {exc})"
    return None


def last_complete_checkpoint(output_dir: str, needs_rasft_state: bool) -> str | None:
    """The `checkpoint-<step>` folder of `output_dir` with the highest step that is complete (see
    `checkpoint_problem`); incomplete later ones are skipped with a warning. None if there is none."""
    if not os.path.isdir(output_dir):
        return None
    steps = sorted(
        (int(name.split("-", 1)[1]), name)
        for name in os.listdir(output_dir)
        if name.startswith("checkpoint-") and name.split("-", 1)[1].isdigit()
        and os.path.isdir(os.path.join(output_dir, name))
    )
    for _, name in reversed(steps):
        folder = os.path.join(output_dir, name)
        problem = checkpoint_problem(folder, needs_rasft_state)
        if problem is None:
            return folder
        logger.warning(f"Skipping {folder} when resuming: {problem}.")
    return None


def resolve_resume_checkpoint(resume_from_checkpoint, output_dir: str, needs_rasft_state: bool):
    """`train`'s `resume_from_checkpoint`, checked: `True` becomes the last *complete* checkpoint in `output_dir`
    (an error if there is none), a folder that is not a complete checkpoint is an error naming what is missing."""
    if resume_from_checkpoint is True:
        resume_from_checkpoint = last_complete_checkpoint(output_dir, needs_rasft_state)
        if resume_from_checkpoint is None:
            raise ValueError(f"No complete checkpoint found in output_dir ({output_dir}) to resume from.")
    elif isinstance(resume_from_checkpoint, (str, os.PathLike)):
        problem = checkpoint_problem(str(resume_from_checkpoint), needs_rasft_state=False)
        if problem is not None:
            raise ValueError(f"Cannot resume from {resume_from_checkpoint}: {problem}.")
    return resume_from_checkpoint


class CheckpointMixin:
    """The trainer's checkpoint and saving overrides (before `_BaseTrainer` in the bases; the final model's card is
    written by `save_model`). Reads `_calibration`, `_calibrated_at`, `_rng_checkpoint` and `_uses_window`, which
    the trainer sets."""

    def _init_training_state(self, max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint,
                             trial):
        epochs_trained, steps_in_epoch = super()._init_training_state(
            max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial
        )
        # transformers skips `steps_in_epoch` batches and restores the RNG state after the first `get_batch_samples`
        self._rng_checkpoint = resume_from_checkpoint if steps_in_epoch > 0 else None
        return epochs_trained, steps_in_epoch

    def _restore_resume_rng(self) -> None:
        """Mid-epoch resume: transformers restores the checkpoint's RNG state only *after* the first
        `get_batch_samples` (the skipped batches must not consume it), but the trainer draws that step's rollouts
        there. Restore it now, before any sampling, and turn transformers' later restore into a no-op (see
        `_load_rng_state`)."""
        if self._rng_checkpoint is not None:
            super()._load_rng_state(self._rng_checkpoint)

    def _load_rng_state(self, checkpoint):
        if self._rng_checkpoint is not None and checkpoint == self._rng_checkpoint:
            self._rng_checkpoint = None  # already restored in `get_batch_samples`, before the rollouts were drawn
            return
        super()._load_rng_state(checkpoint)

    def _save_checkpoint(self, model, trial):
        bad = [name for name, param in self.model.named_parameters() if not torch.isfinite(param.detach()).all()]
        if bad:
            raise FloatingPointError(
                f"Refusing to save checkpoint-{self.state.global_step}: {len(bad)} parameter tensors hold NaN or "
                f"inf (first: {bad[0]})."
            )
        super()._save_checkpoint(model, trial)
        if self.args.save_only_model:  # no RNG state saved (see `_save_rng_state`): the window's state goes last
            self._save_rasft_state(os.path.join(self._get_output_dir(trial), f"checkpoint-{self.state.global_step}"))

    def _save_rng_state(self, output_dir: str) -> None:
        super()._save_rng_state(output_dir)
        # before trainer_state.json, the file transformers writes last: a checkpoint that has it is complete
        self._save_rasft_state(output_dir)

    def _save_rasft_state(self, folder: str) -> None:
        """The expert-loss window's calibration, written atomically (a killed save leaves no truncated file)."""
        if self._calibration is None or not self.args.should_save:
            return
        state = {"calibration": self._calibration.to_dict(), "calibrated_at": self._calibrated_at,
                 "quantiles": self._window_quantiles()}
        partial = os.path.join(folder, STATE_FILE + ".partial")
        with open(partial, "w") as f:
            json.dump(state, f)
        os.replace(partial, os.path.join(folder, STATE_FILE))

    def _window_quantiles(self) -> dict[str, list[float]]:
        args = self.args
        return {"window_start_quantiles": list(args.window_start_quantiles),
                "window_end_quantiles": list(args.window_end_quantiles),
                "hard_probe_max_quantile": [args.hard_probe_max_quantile]}

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if not checkpoint or not self.args.use_rollouts or not self._uses_window:
            return
        path = os.path.join(checkpoint, STATE_FILE)
        if not os.path.isfile(path):
            logger.warning(
                f"{checkpoint} has no {STATE_FILE}: the expert-loss window is calibrated again, on the trained "
                "policy, so routing differs from the uninterrupted run."
            )
            return
        try:
            with open(path) as f:
                state = json.load(f)
            calibration = curriculum.WindowCalibration.from_dict(state["calibration"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"{path} is damaged ({type(exc).__name__}: {exc}). Delete it to calibrate the window again on the "
                "trained policy, or resume from another checkpoint."
            ) from exc
        saved = state.get("quantiles")
        if saved is not None and saved != self._window_quantiles():
            logger.warning(
                f"The window quantiles changed since {checkpoint} was saved ({saved} -> {self._window_quantiles()}): "
                "the window is calibrated again with the new quantiles, on the trained policy."
            )
            return
        self._calibration = calibration
        self._calibrated_at = state.get("calibrated_at", 0)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        """As `Trainer.save_model`, plus TRL's model card (`README.md`: RASFT, the base model, the citation)."""
        super().save_model(output_dir, _internal_call=_internal_call)
        output_dir = output_dir or self.args.output_dir
        if _internal_call or not self.is_world_process_zero():
            return
        self.write_model_card(output_dir)

    def write_model_card(self, output_dir: str, dataset_name: str | None = None) -> None:
        """TRL's model card for `output_dir` (naming the method, the base model, the dataset and the paper; a local
        model or dataset as text, see `rasft_trl.model_card`)."""
        name = self.args.hub_model_id.split("/")[-1] if self.args.hub_model_id else os.path.basename(
            os.path.normpath(output_dir))
        self.create_model_card(model_name=name, dataset_name=dataset_name)
        card = os.path.join(self.args.output_dir, "README.md")
        if os.path.abspath(output_dir) != os.path.abspath(self.args.output_dir) and os.path.isfile(card):
            os.makedirs(output_dir, exist_ok=True)
            shutil.copyfile(card, os.path.join(output_dir, "README.md"))
            self.rewrite_card(output_dir)
