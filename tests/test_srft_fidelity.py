"""SRFT against the failures an audit injected and today's tests missed: the demonstration left out of its group's
statistics (exact advantages asserted), each micro-batch divided by its own token counts (gradient accumulation 2 vs
1), unjudged, truncated and too-long rollouts entering a term or a group, `negative_weight` not reaching the loss,
the per-term / shared rollout normalization, per-term metrics that are one process's share, and 2 processes against
1 on the same global batch. Rollouts are scripted (`srft_worker.ScriptedBackend`) so that every run trains on the
same ones."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
from datasets import Dataset
from srft_worker import ScriptedBackend, config, odd_length_correct, run
from tiny import math_rows

from rasft_trl import srft_losses
from rasft_trl.srft_trainer import DEMO, NEGATIVE, POSITIVE, SRFTTrainer

HERE = os.path.dirname(os.path.abspath(__file__))


def trainer_for(tmp_path, model_dir, rows=4, backend=None, reward=odd_length_correct, **overrides):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    args = config(str(tmp_path), overrides.pop("batch_size", 4), overrides.pop("accumulation", 1), 1, **overrides)
    return SRFTTrainer(model_dir, args, train_dataset=Dataset.from_dict(math_rows(rows)), processing_class=tokenizer,
                       reward_funcs=reward, generation_backend=backend or ScriptedBackend(tokenizer.eos_token_id))


def one_step(trainer, rows=4):
    batches, num_items = trainer._build_step([[trainer.train_dataset[i] for i in range(rows)]])
    return [trainer._prepare_input(b) for b in batches], num_items


def z_scores(rewards, eps=1e-4):
    mean = sum(rewards) / len(rewards)
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / (len(rewards) - 1))
    return [(r - mean) / (std + eps) for r in rewards]


# ---------------------------------------------------------------------------------------------- pure parts


def test_rollout_token_counts_per_term_and_shared():
    assert srft_losses.rollout_token_counts(90, 10) == (90.0, 10.0)
    assert srft_losses.rollout_token_counts(90, 10, "shared") == (100.0, 100.0)
    assert srft_losses.rollout_token_counts(0, 0) == (1.0, 1.0)
    # relative push on a negative token vs a positive one (w_RL = 1): n+ / n- per term, 1 shared; 9x at 90% accuracy
    per_term, shared = srft_losses.rollout_token_counts(90, 10), srft_losses.rollout_token_counts(90, 10, "shared")
    assert (per_term[0] / per_term[1]) / (shared[0] / shared[1]) == pytest.approx(9.0)
    with pytest.raises(ValueError, match="normalization must be one of"):
        srft_losses.rollout_token_counts(1, 1, "sequence")


# ---------------------------------------------------------------------------------------------- groups and terms


def test_advantages_are_exact_z_scores_over_the_group_with_its_demonstration(tmp_path, tiny_model_dir):
    trainer = trainer_for(tmp_path, tiny_model_dir)
    (batch,), _ = one_step(trainer)
    # scripted rollouts have lengths 2, 3, 4, 5: rewards 0, 1, 0, 1; the demonstration's reward is 1
    expected = z_scores([0.0, 1.0, 0.0, 1.0, 1.0])
    roles, advantages = batch["srft_role"].tolist(), batch["srft_advantage"].tolist()
    assert roles == [DEMO, NEGATIVE, POSITIVE, NEGATIVE, POSITIVE] * 4
    assert advantages == pytest.approx([expected[4], *expected[:4]] * 4, abs=1e-6)
    assert advantages[0] != pytest.approx(z_scores([0.0, 1.0, 0.0, 1.0])[1], abs=1e-3)  # not the rollouts alone


def test_unjudged_truncated_and_too_long_rollouts_stay_out_of_terms(tmp_path, tiny_model_dir):
    """Per prompt: a correct rollout, an unjudged one, a truncated one (no EOS), one longer than max_length. Only the
    first is trained on; the truncated one stays in the group's statistics (mask_truncated_completions, as GRPO),
    the unjudged and the too-long ones leave the group as well."""
    max_length = 48

    class Mixed(ScriptedBackend):
        def generate(self, prompt_ids, num_samples):
            out = []
            for p in prompt_ids:
                over = max_length - len(p) + 1
                out += [[5, self.eos], [6, 6, self.eos], [7] * 8, [8] * (over - 1) + [self.eos]]
            return out

    def reward(prompts, completions, completion_ids=None, **columns):
        return [None if ids[0] == 6 else 1.0 if ids[0] == 5 else 0.0 for ids in completion_ids]

    from transformers import AutoTokenizer

    eos = AutoTokenizer.from_pretrained(tiny_model_dir).eos_token_id
    trainer = trainer_for(tmp_path, tiny_model_dir, backend=Mixed(eos), reward=reward, max_length=max_length,
                          mask_truncated_completions=True)
    assert all(len(trainer.train_dataset[i]["prompt_ids"]) + 8 <= max_length for i in range(4))  # truncated fits
    (batch,), _ = one_step(trainer)
    assert batch["srft_role"].tolist() == [DEMO, POSITIVE] * 4
    expected = z_scores([1.0, 0.0, 1.0])  # correct, truncated (still in the group), demonstration
    assert batch["srft_advantage"].tolist() == pytest.approx([expected[2], expected[0]] * 4, abs=1e-6)
    counters = trainer._counters
    assert counters["rollouts/too_long"] == 4 and counters["rollouts/truncated_masked"] == 4
    assert counters["rollouts/unjudged"] == 4


def independent_terms(model, batch):
    """Each term's value from a plain forward (no package code): demonstration NLL sum, positive / negative sums."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        logps = torch.log_softmax(logits.float(), -1).gather(-1, batch["input_ids"][:, 1:].unsqueeze(-1)).squeeze(-1)
    mask = batch["completion_mask"].float()
    role = batch["srft_role"]
    return {r: float((logps * mask)[role == r].sum()) for r in (DEMO, POSITIVE, NEGATIVE)}


def test_negative_weight_and_the_rollout_normalization_reach_the_loss(tmp_path, tiny_model_dir):
    trainer = trainer_for(tmp_path, tiny_model_dir, entropy_weight_sft=False, entropy_weight_rl=False, demo_rl=False)
    (batch,), num_items = one_step(trainer)
    sums = independent_terms(trainer.model, batch)
    n_demo, n_pos, n_neg = batch["srft_counts"].tolist()
    assert n_pos > 0 and n_neg > 0 and n_pos != n_neg

    def loss(**settings):
        for name, value in settings.items():
            setattr(trainer.args, name, value)
        return trainer.compute_loss(trainer.model, batch, num_items_in_batch=num_items).item()

    base = -sums[DEMO] / n_demo - sums[POSITIVE] / n_pos  # w_SFT = w_RL = 1
    assert loss(negative_weight=1.0) == pytest.approx(base + sums[NEGATIVE] / n_neg, rel=1e-5)
    assert loss(negative_weight=0.0) == pytest.approx(base, rel=1e-5)
    assert loss(negative_weight=0.5) == pytest.approx(base + 0.5 * sums[NEGATIVE] / n_neg, rel=1e-5)
    shared = n_pos + n_neg
    assert loss(negative_weight=1.0, rollout_normalization="shared") == pytest.approx(
        -sums[DEMO] / n_demo + (-sums[POSITIVE] + sums[NEGATIVE]) / shared, rel=1e-5)


# ---------------------------------------------------------------------------------------------- step totals


def test_gradient_accumulation_two_gives_the_gradients_of_one(tmp_path, tiny_model_dir):
    """Entropy weights fixed (the entropy is a micro-batch statistic, so its weights differ between splits)."""
    fixed = dict(entropy_weight_sft=False, entropy_weight_rl=False)
    _, one, grads_one = run(tiny_model_dir, str(tmp_path / "one"), 4, 1, **fixed)
    _, two, grads_two = run(tiny_model_dir, str(tmp_path / "two"), 2, 2, **fixed)
    assert one["losses"] == pytest.approx(two["losses"], rel=1e-6)
    for key in ("srft/loss_demo_sft", "srft/loss_demo_rl", "srft/loss_pos", "srft/loss_neg"):
        assert one["terms"][0][key] == pytest.approx(two["terms"][0][key], rel=1e-5, abs=1e-7), key
    assert grads_one.keys() == grads_two.keys() and grads_one
    for name in grads_one:
        torch.testing.assert_close(grads_two[name], grads_one[name], atol=1e-6, rtol=1e-5, msg=name)


def test_two_processes_give_the_loss_gradients_and_term_totals_of_one(tmp_path, tiny_model_dir):
    """2 processes x batch 1 x accumulation 2 against 1 process x batch 2 x accumulation 2: the same micro-batches
    (problems {0, 1}, then {2, 3}), so the same entropy weights; the loss, the gradients and the logged per-term
    values (step totals over processes, not one process's share) agree."""
    _, single, single_grads = run(tiny_model_dir, str(tmp_path / "single"), 2, 2)
    grads_path = tmp_path / "ddp.pt"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29537",
               os.path.join(HERE, "srft_worker.py"), tiny_model_dir, str(tmp_path / "ddp"), "1", "2", "1",
               str(grads_path)]
    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""), CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    import json

    ddp = json.loads((tmp_path / "ddp" / "result.json").read_text())
    assert ddp["processes"] == 2 and single["processes"] == 1
    assert ddp["losses"] == pytest.approx(single["losses"], rel=1e-5)
    for key, value in single["terms"][0].items():
        assert ddp["terms"][0][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    ddp_grads = torch.load(grads_path)
    for name in single_grads:
        torch.testing.assert_close(ddp_grads[name], single_grads[name], atol=1e-6, rtol=1e-4, msg=name)


# ---------------------------------------------------------------------------------------------- settings


def test_top_k_none_means_no_top_k(tmp_path):
    args = config(str(tmp_path), 1, 1, 1, top_k=None, generation_kwargs={"top_k": None, "min_p": 0.1})
    assert args.top_k == 0 and args.generation_kwargs == {"top_k": 0, "min_p": 0.1}
    with pytest.raises(ValueError, match="top_k must be an integer >= 0"):
        config(str(tmp_path), 1, 1, 1, top_k=-1)


def test_top_k_none_reaches_the_rollout_sampler_as_no_top_k(tmp_path, tiny_model_dir):
    """The transformers backend's sampling config: top_k 0 (off), not None, which `generate` would replace with
    transformers' default top-k of 50."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    trainer = SRFTTrainer(tiny_model_dir, config(str(tmp_path), 1, 1, 1, top_k=None, generation_kwargs={"top_k": None}),
                          train_dataset=Dataset.from_dict(math_rows(2)), processing_class=tokenizer,
                          reward_funcs=odd_length_correct)
    assert trainer.generation_backend.generation_config.top_k == 0


def test_srft_defaults_follow_the_paper_and_the_docs_example_fits(tmp_path):
    from rasft_trl import SRFTConfig

    defaults = SRFTConfig(output_dir=str(tmp_path), use_cpu=True)
    assert defaults.max_new_tokens == 8192 and defaults.max_length >= 8192 + 1024
    assert defaults.rollout_normalization == "per_term"
    doc = open(os.path.join(HERE, "..", "docs", "srft.md")).read()
    example = doc[doc.index("args = SRFTConfig("):].split("\n")[0]
    values = dict(item.split("=") for item in example[len("args = SRFTConfig("):-1].replace(" ", "").split(",")
                  if "=" in item)
    max_new = int(values.get("max_new_tokens", defaults.max_new_tokens))
    max_length = int(values.get("max_length", defaults.max_length))
    assert max_new + 1024 <= max_length, example  # a 1,024-token prompt and a full rollout fit
