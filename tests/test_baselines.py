"""Expert-only baselines (SFT, SFT+KL, DFT, ASFT, ProFiT) on the shared trainer."""

import pytest
import torch
from datasets import Dataset
from test_rasft_trainer import make_args, trainable_snapshot
from tiny import math_rows

from rasft_trl.baselines import LOSS_TYPES, SFTVariantConfig, SFTVariantTrainer


def variant_args(tmp_path, loss_type, **overrides):
    base = make_args(tmp_path).to_dict()
    keep = {k: base[k] for k in ("output_dir", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
                                 "learning_rate", "warmup_steps", "bf16", "gradient_checkpointing", "logging_steps",
                                 "save_strategy", "use_cpu", "max_length", "seed")}
    keep.update(report_to="none", loss_type=loss_type, **overrides)
    return SFTVariantConfig(**keep)


def dense_logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()


@pytest.mark.parametrize("loss_type", sorted(LOSS_TYPES))
def test_every_loss_type_trains(tmp_path, tiny_model_dir, loss_type):
    data = math_rows(8)
    data.pop("answer")  # expert-only methods need no verifier column
    trainer = SFTVariantTrainer(tiny_model_dir, variant_args(tmp_path, loss_type), Dataset.from_dict(data))
    assert (trainer.ref_model is not None) == LOSS_TYPES[loss_type][1]
    before = trainable_snapshot(trainer.model)
    trainer.train()
    for name, param in trainer.model.named_parameters():
        assert not torch.equal(before[name], param), f"{loss_type}: {name} did not change"
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all("rollouts/drawn" not in h for h in logs)
    if LOSS_TYPES[loss_type][1]:
        assert all(h["kl/mean"] >= 0 for h in logs)


@pytest.mark.parametrize("loss_type", sorted(LOSS_TYPES))
def test_per_batch_loss_matches_the_formula(tmp_path, tiny_model_dir, loss_type):
    args = variant_args(tmp_path, loss_type, per_device_train_batch_size=4, gradient_accumulation_steps=1,
                        profit_threshold=0.004, kl_weight=0.3 if LOSS_TYPES[loss_type][1] else None)
    trainer = SFTVariantTrainer(tiny_model_dir, args, Dataset.from_dict(math_rows(4)))
    torch.manual_seed(1)
    with torch.no_grad():  # move the policy away from the reference so that the KL is not zero
        for param in trainer.model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    batches, num_items = trainer._build_step([[trainer.train_dataset[i] for i in range(4)]])
    batch = batches[0]
    loss = trainer.compute_loss(trainer.model, batch, num_items_in_batch=num_items).item()

    logits = dense_logits(trainer.model, batch)  # [B, T-1, V]
    logp_all = logits.log_softmax(-1)
    logp = logp_all.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)  # [B, T-1]
    mask = batch["completion_mask"].float()
    p = logp.exp()
    if loss_type in ("sft", "sft_kl"):
        expected = -(logp * mask).sum() / mask.sum()  # mean NLL over target tokens
    elif loss_type in ("dft", "asft"):
        expected = -(p * logp * mask).sum() / mask.sum()  # DFT: -sg(p) log p, token mean
    else:  # profit: -log p over kept tokens (p >= 0.004), averaged over the kept tokens
        kept = (p >= 0.004).float() * mask
        assert 0 < kept.sum() < mask.sum()  # the threshold really selects
        assert int(num_items) == int(kept.sum())
        expected = -(logp * kept).sum() / kept.sum()
    if LOSS_TYPES[loss_type][1]:
        log_q = dense_logits(trainer.ref_model, batch).log_softmax(-1)
        kl = (log_q.exp() * (log_q - logp_all)).sum(-1)  # KL(ref || policy) per position
        assert (kl * mask).sum() > 0
        expected = expected + 0.3 * (kl * mask).sum() / mask.sum()
    assert loss == pytest.approx(expected.item(), rel=1e-4)


def test_profit_falls_back_to_sft_when_no_token_survives(tmp_path, tiny_model_dir):
    args = variant_args(tmp_path, "profit", profit_threshold=1.0, per_device_train_batch_size=4,
                        gradient_accumulation_steps=1)
    trainer = SFTVariantTrainer(tiny_model_dir, args, Dataset.from_dict(math_rows(4)))
    batches, num_items = trainer._build_step([[trainer.train_dataset[i] for i in range(4)]])
    batch = batches[0]
    assert int(num_items) == int(batch["completion_mask"].sum())  # plain SFT normalizer
    assert torch.equal(batch["token_mask"], batch["completion_mask"])
    assert trainer._counters["profit/fallback_steps"] == 1
    logp = dense_logits(trainer.model, batch).log_softmax(-1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    mask = batch["completion_mask"].float()
    loss = trainer.compute_loss(trainer.model, batch, num_items_in_batch=num_items).item()
    assert loss == pytest.approx((-(logp * mask).sum() / mask.sum()).item(), rel=1e-5)


def test_dft_matches_trl_sft_trainer_on_the_same_batch(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from rasft_trl.data import Trajectory, collate_trajectories

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    data = {"prompt": ["What is 2 + 3?", "Add 10 and 32."], "completion": [" 2 + 3 = 5, so \\boxed{5}", " \\boxed{42}"]}
    trl_args = SFTConfig(output_dir=str(tmp_path / "trl"), loss_type="dft", per_device_train_batch_size=2,
                         bf16=False, use_cpu=True, report_to="none", gradient_checkpointing=False)
    trl_trainer = SFTTrainer(tiny_model_dir, args=trl_args, train_dataset=Dataset.from_dict(data),
                             processing_class=tokenizer)
    trl_batch = next(iter(trl_trainer.get_train_dataloader()))
    trl_loss = trl_trainer.compute_loss(trl_trainer.model, trl_batch).item()

    # The same token ids through our trainer: split each row at its first completion token.
    ours = SFTVariantTrainer(tiny_model_dir, variant_args(tmp_path, "dft"), Dataset.from_dict(math_rows(2)),
                             processing_class=tokenizer)
    trajectories = []
    for ids, attn, labels in zip(trl_batch["input_ids"], trl_batch["attention_mask"], trl_batch["labels"]):
        ids, cmask = ids[attn.bool()].tolist(), labels[attn.bool()] != -100
        start = int(cmask.nonzero()[0])
        end = int(cmask.nonzero()[-1]) + 1
        trajectories.append(Trajectory(ids[:start], ids[start:end], 0, True))
    batch = collate_trajectories(trajectories, tokenizer.pad_token_id)
    batch["seq_coef"] = torch.ones(len(trajectories))
    our_loss = ours.compute_loss(ours.model, batch).item()
    assert our_loss == pytest.approx(trl_loss, rel=1e-5)


def test_config_rejects_kl_weight_on_a_loss_without_kl(tmp_path):
    with pytest.raises(ValueError, match="kl_weight=0.1 only applies"):
        variant_args(tmp_path, "dft", kl_weight=0.1)
    with pytest.raises(ValueError, match="loss_type must be one of"):
        variant_args(tmp_path, "bogus")
