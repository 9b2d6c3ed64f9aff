"""Rollouts are sampled exactly as configured, truncated rollouts are never targets by default, and the
`max_new_tokens` documentation says what the trainer does (issue: the demo's rollouts never engaged)."""

import dataclasses

import pytest
import torch
from datasets import Dataset
from test_rasft_trainer import PatternVerifier, make_args
from tiny import math_rows
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from rasft_trl import RASFTConfig, RASFTTrainer
from rasft_trl.generation import SamplingSettings
from rasft_trl.generation.transformers_backend import TransformersGeneration


def processors_used(model_dir, sampling: SamplingSettings, checkpoint_defaults: dict):
    """Run the transformers backend on a tiny model whose generation_config carries `checkpoint_defaults`, and
    return the logits processors `generate` really built."""
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    for key, value in checkpoint_defaults.items():
        setattr(model.generation_config, key, value)
    seen = []
    original = model._get_logits_processor

    def recording(*args, **kwargs):
        processors = original(*args, **kwargs)
        seen.append(list(processors))
        return processors

    model._get_logits_processor = recording
    backend = TransformersGeneration(model, Accelerator(cpu=True), sampling, pad_token_id=2, eos_token_ids=[2])
    out = backend.generate([[5, 6, 7], [8, 9]], num_samples=2)
    assert len(out) == 4 and all(1 <= len(ids) <= sampling.max_new_tokens for ids in out)
    assert model.generation_config.top_k == checkpoint_defaults.get("top_k", model.generation_config.top_k)
    (processors,) = seen
    return processors


def describe(processors) -> list[tuple]:
    values = {
        RepetitionPenaltyLogitsProcessor: lambda p: p.penalty,
        TemperatureLogitsWarper: lambda p: p.temperature,
        TopPLogitsWarper: lambda p: p.top_p,
        TopKLogitsWarper: lambda p: p.top_k,
        MinPLogitsWarper: lambda p: p.min_p,
    }
    return [(type(p).__name__, pytest.approx(values[type(p)](p))) for p in processors]


# A checkpoint whose generation_config.json sets its own sampling defaults; none of them may leak into rollouts.
CHECKPOINT = dict(top_k=20, min_p=0.3, typical_p=0.5, no_repeat_ngram_size=2, temperature=0.2)


def test_top_k_zero_stays_disabled_and_checkpoint_defaults_do_not_leak(tiny_model_dir):
    sampling = SamplingSettings(temperature=0.9, top_p=0.95, top_k=0, repetition_penalty=1.1, max_new_tokens=4)
    assert describe(processors_used(tiny_model_dir, sampling, CHECKPOINT)) == [
        ("RepetitionPenaltyLogitsProcessor", 1.1),
        ("TemperatureLogitsWarper", 0.9),
        ("TopPLogitsWarper", 0.95),
    ]
    # without any checkpoint defaults the old code still added transformers' global top-k of 50
    assert "TopKLogitsWarper" not in [name for name, _ in describe(processors_used(tiny_model_dir, sampling, {}))]


def test_every_configured_sampling_knob_reaches_generate(tiny_model_dir):
    sampling = SamplingSettings(
        temperature=0.7, top_p=0.8, top_k=7, repetition_penalty=1.3, max_new_tokens=3, min_p=0.05
    )
    names = dict(describe(processors_used(tiny_model_dir, sampling, CHECKPOINT)))
    assert names == {
        "RepetitionPenaltyLogitsProcessor": 1.3,
        "TemperatureLogitsWarper": 0.7,
        "TopKLogitsWarper": 7,
        "TopPLogitsWarper": 0.8,
        "MinPLogitsWarper": 0.05,
    }


def test_sampling_settings_come_from_the_config(tmp_path):
    args = RASFTConfig(output_dir=str(tmp_path), report_to="none", bf16=False, use_cpu=True, top_k=0, min_p=0.1)
    settings = SamplingSettings.from_config(args)
    assert dataclasses.astuple(settings) == (0.9, 0.95, 0, 1.1, 1024, 0.1)
    with pytest.raises(ValueError, match="min_p"):
        RASFTConfig(output_dir=str(tmp_path), report_to="none", bf16=False, use_cpu=True, min_p=1.5)


class FixedBackend:
    """Per problem: K rollouts alternating 'finished' (ends with EOS) and 'truncated' (no EOS)."""

    def __init__(self, eos: int, length: int = 4):
        self.eos, self.length = eos, length

    def generate(self, prompt_ids, num_samples):
        body = list(range(10, 10 + self.length - 1))
        return [body + ([self.eos] if k % 2 == 0 else [99]) for _ in prompt_ids for k in range(num_samples)]

    def sync_weights(self):
        pass


def build_step(tmp_path, tiny_model_dir, **overrides):
    args = make_args(tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=1, max_steps=1,
                     num_rollouts=3, **overrides)
    trainer = RASFTTrainer(tiny_model_dir, args, Dataset.from_dict(math_rows(4)), verifier=PatternVerifier([1.0]),
                           generation_backend=None)
    trainer._generation_backend = FixedBackend(trainer.eos_token_id, overrides.get("max_new_tokens", 6))
    trainer.state.max_steps = 1
    batches, _ = trainer._build_step([[trainer.train_dataset[i] for i in range(4)]])
    return trainer, batches[0]


def test_truncated_rollouts_are_not_targets_by_default(tmp_path, tiny_model_dir):
    assert RASFTConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True).mask_truncated_completions
    trainer, batch = build_step(tmp_path, tiny_model_dir, mask_truncated_completions=True)
    # every rollout verifies, but samples 1 of each problem ran out of tokens: pool = expert + samples 0 and 2
    assert batch["is_expert"].tolist() == [True, False, False] * 4
    eos = trainer.eos_token_id
    rollouts = [ids for ids, expert in zip(batch["input_ids"], batch["is_expert"]) if not expert]
    assert all(eos in ids.tolist() for ids in rollouts)
    # s = 2/3 (the truncated rollout is a failure): w_E = 3 - (2/3) * 2 = 5/3 -> [5/11, 3/11, 3/11]
    assert trainer._metrics["pool/mean_solvability"][-1] == pytest.approx(2 / 3)
    assert batch["seq_coef"][:3].tolist() == pytest.approx([5 / 11, 3 / 11, 3 / 11])
    assert trainer._metrics["rollouts/truncated"][-1] == 4
    assert trainer._metrics["rollouts/truncated_correct"][-1] == 4
    assert trainer._metrics["rollouts/accuracy"][-1] == pytest.approx(8 / 12)


def test_truncated_rollouts_can_be_kept_as_before(tmp_path, tiny_model_dir):
    trainer, batch = build_step(tmp_path, tiny_model_dir, mask_truncated_completions=False)
    assert batch["is_expert"].tolist() == [True, False, False, False] * 4
    assert trainer._metrics["pool/mean_solvability"][-1] == pytest.approx(1.0)
    assert trainer._metrics["rollouts/truncated"][-1] == 4


def test_max_new_tokens_is_not_capped_by_max_length_and_the_docs_say_so(tmp_path, tiny_model_dir):
    # prompts are ~20-30 tokens, experts ~15: max_length 60 fits every expert but no 40-token rollout
    trainer, batch = build_step(tmp_path, tiny_model_dir, max_length=60, max_new_tokens=40,
                                mask_truncated_completions=False)
    assert batch["is_expert"].all()  # no rollout fitted: the generation budget was not reduced by the prompt
    assert trainer._counters["rollouts/correct_too_long"] == 12
    help_text = {f.name: f.metadata["help"] for f in dataclasses.fields(RASFTConfig)}["max_new_tokens"]
    for text in (help_text, RASFTConfig.__doc__):
        assert "capped by `max_length`" not in text and "rollouts/correct_too_long" in text
