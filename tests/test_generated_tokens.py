"""The study's compute column, rollout tokens generated, under the logging a GPU recipe uses (`logging_steps` > 1):
the trainers' running total `rollouts/generated_tokens` against the tokens really sampled, across a resume, and
GRPO's (TRL's trainer) total added by the recipe script's callback."""

import json

import pytest
from datasets import Dataset
from test_rasft_trainer import PatternVerifier, make_args
from tiny import math_rows

from rasft_trl import RASFTTrainer
from rasft_trl.study.mechanism import generated_tokens


def spy_on_sampling(trainer, sampled):
    """Record, per sampling call (one per optimizer step), the lengths of the rollouts the trainer samples (the real
    sampler runs; this only reads its output)."""
    real = trainer._sample_and_verify

    def counting(*args, **kwargs):
        out = real(*args, **kwargs)
        sampled.append([len(ids) for ids in out[0]])
        return out

    trainer._sample_and_verify = counting


def training_entries(history):
    return [h for h in history if "loss" in h]


def test_rasft_running_total_counts_every_sampled_token_when_logging_every_other_step(tmp_path, tiny_model_dir):
    sampled = []
    # learning rate 0: the policy stays the initial model, so every problem stays in the window and draws rollouts
    args = make_args(tmp_path, max_steps=4, logging_steps=2, learning_rate=0.0)
    trainer = RASFTTrainer(tiny_model_dir, args, Dataset.from_dict(math_rows(16)), verifier=PatternVerifier([1.0, 0.0]))
    spy_on_sampling(trainer, sampled)
    trainer.train()
    logs = training_entries(trainer.state.log_history)
    assert len(logs) == 2 and len(sampled) == 4 and all(sampled)  # every step drew rollouts
    truth = sum(map(sum, sampled))
    assert logs[0]["rollouts/generated_tokens"] == sum(map(sum, sampled[:2]))
    assert logs[-1]["rollouts/generated_tokens"] == truth
    assert generated_tokens(trainer.state.log_history) == truth
    # the interval means undercount (two logged entries stand for four steps): why the running total exists
    product = sum(e["completions/mean_length"] * e["rollouts/drawn"] for e in logs)
    assert product == pytest.approx(truth / 2, rel=0.05)


def test_rasft_running_total_goes_on_after_a_resume(tmp_path, tiny_model_dir):
    rows = Dataset.from_dict(math_rows(16))
    first, second = [], []
    args = make_args(tmp_path, max_steps=4, save_strategy="steps", save_steps=2, learning_rate=0.0)
    trainer = RASFTTrainer(tiny_model_dir, args, rows, verifier=PatternVerifier([1.0, 0.0]))
    spy_on_sampling(trainer, first)
    trainer.train()
    full = training_entries(trainer.state.log_history)[-1]["rollouts/generated_tokens"]
    assert len(first) == 4 and full == sum(map(sum, first))
    resumed = RASFTTrainer(tiny_model_dir, args, rows, verifier=PatternVerifier([1.0, 0.0]))
    spy_on_sampling(resumed, second)
    resumed.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))
    assert len(second) == 2  # steps 3 and 4 only
    logs = training_entries(resumed.state.log_history)
    assert logs[-1]["rollouts/generated_tokens"] == sum(map(sum, first[:2])) + sum(map(sum, second))


def test_grpo_script_logs_the_running_total(tmp_path, tiny_model_dir, capsys):
    from test_first_hour import script_flags

    from rasft_trl.scripts import grpo

    out = tmp_path / "run"
    flags = script_flags("grpo", tiny_model_dir, out)
    flags[flags.index("--max_steps") + 1] = "4"
    flags[flags.index("--logging_steps") + 1] = "2"
    grpo.main(*grpo.make_parser().parse_args_and_config(flags))
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    logs = training_entries(history)
    assert len(logs) == 2
    for entry in logs:
        # the tiny random model never stops early: every completion is max_completion_length = 4 tokens
        assert entry["completions/min_length"] == entry["completions/max_length"] == 4
        assert entry["rollouts/drawn"] == 2 and entry["rollouts/accuracy"] == entry["reward"]
    assert [e["rollouts/generated_tokens"] for e in logs] == [2 * 2 * 4, 4 * 2 * 4]  # steps x completions x length
    assert generated_tokens(history) == 4 * 2 * 4
