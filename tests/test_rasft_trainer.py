"""Trainer tests on a tiny random model built offline (saved and reloaded, so it has a path)."""

import pytest
import torch
from datasets import Dataset
from ddp_worker import GradCapture
from tiny import math_rows
from transformers import AutoModelForCausalLM

from rasft_trl import RASFTConfig, RASFTTrainer


class PatternVerifier:
    """A controllable verifier in TRL's reward-function form: the i-th completion it ever sees gets pattern[i]."""

    def __init__(self, pattern):
        self.pattern, self.seen, self.columns = list(pattern), 0, None

    def __call__(self, prompts, completions, completion_ids=None, **columns):
        self.columns = columns
        out = [self.pattern[(self.seen + i) % len(self.pattern)] for i in range(len(completions))]
        self.seen += len(completions)
        return out


def make_args(tmp_path, **overrides):
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        max_steps=2,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        learning_rate=1e-2,
        warmup_steps=0,
        bf16=False,
        gradient_checkpointing=False,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        num_rollouts=3,
        max_new_tokens=6,
        max_length=128,
        calibration_sample_size=8,
        # every problem inside the window, so each step draws rollouts
        window_start_quantiles=[0.0, 1.0],
        window_end_quantiles=[0.0, 1.0],
        seed=0,
        # the tiny random model never emits EOS within 6 tokens: let its truncated rollouts be targets here
        # (the default, masking them, is tested in test_rollout_sampling.py)
        mask_truncated_completions=False,
    )
    defaults.update(overrides)
    return RASFTConfig(**defaults)


def full_logps(model, batch):
    """Independent per-token log-probs: full logits, log_softmax, gather. -> [B, T-1]."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    logps = torch.log_softmax(logits.float(), dim=-1)
    return logps.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1) * batch["completion_mask"]


def trainable_snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_full_finetuning_trains_every_parameter_and_logs_pool_stats(tmp_path, tiny_model_dir):
    verifier = PatternVerifier([1.0, 0.0, 0.0])
    trainer = RASFTTrainer(tiny_model_dir, make_args(tmp_path), Dataset.from_dict(math_rows(8)), verifier=verifier)
    assert trainer.ref_model is not None
    before = trainable_snapshot(trainer.model)
    ref_before = {n: p.detach().clone() for n, p in trainer.ref_model.named_parameters()}
    trainer.train()
    for name, param in trainer.model.named_parameters():
        assert not torch.equal(before[name], param), f"{name} did not change"
    for name, param in trainer.ref_model.named_parameters():
        assert torch.equal(ref_before[name], param), f"reference parameter {name} changed"
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2
    for log in logs:
        assert log["window/below_frac"] + log["window/in_frac"] + log["window/above_frac"] == pytest.approx(1.0)
        for key in ("rollouts/drawn", "pool/expert_coef_mean", "tokens/expert", "tokens/rollout", "ratio/mean",
                    "ratio/clip_low_frac", "ratio/clip_high_frac", "time/generation_share", "window/low"):
            assert key in log
    # first step: the policy is the initial model, so every problem sits inside the [Q(0), Q(1)] window
    for log in logs[:1]:
        assert log["window/in_frac"] == 1.0 and log["rollouts/problems"] == 4 and log["rollouts/drawn"] == 12
        assert log["rollouts/accuracy"] == pytest.approx(1 / 3)
        assert log["pool/mean_solvability"] == pytest.approx(1 / 3)
        # s = 1/3: w_E = 3 - 2/3 = 7/3, one correct rollout -> alpha_E = (7/3) / (10/3) = 0.7
        assert log["pool/expert_coef_mean"] == pytest.approx(0.7)
        assert log["pool/mean_size"] == pytest.approx(2.0)
        assert log["tokens/rollout"] > 0 and log["tokens/expert"] > 0
    assert verifier.columns is not None and "answer" in verifier.columns


def test_lora_trains_adapter_only_without_reference_copy(tmp_path, tiny_qwen_dir):
    from peft import LoraConfig

    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = RASFTTrainer(
        tiny_qwen_dir, make_args(tmp_path), Dataset.from_dict(math_rows(8)), verifier=PatternVerifier([1.0, 0.0]),
        peft_config=peft_config,
    )
    assert trainer.ref_model is None  # the reference is the adapter-disabled model
    trainable = trainable_snapshot(trainer.model)
    assert trainable and all("lora_" in n for n in trainable)
    frozen = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if not p.requires_grad}
    trainer.train()
    for name, param in trainer.model.named_parameters():
        if name in trainable:
            assert not torch.equal(trainable[name], param), f"{name} did not change"
        else:
            assert torch.equal(frozen[name], param), f"frozen {name} changed"
    assert any("pool/mean_solvability" in h for h in trainer.state.log_history)


def test_lora_reference_equals_initial_model(tmp_path, tiny_model_dir):
    from peft import LoraConfig

    from rasft_trl.data import Trajectory, collate_trajectories

    trainer = RASFTTrainer(
        tiny_model_dir, make_args(tmp_path), Dataset.from_dict(math_rows(8)), verifier=PatternVerifier([1.0]),
        peft_config=LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    trainer.train()
    rows = trainer.train_dataset
    trajs = [Trajectory(rows[i]["prompt_ids"], rows[i]["completion_ids"], i, True) for i in range(4)]
    batch = collate_trajectories(trajs, trainer.processing_class.pad_token_id)
    ref = torch.cat(trainer._run_reference(trajs))
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    expected = full_logps(initial, batch)[batch["completion_mask"].bool()]
    assert torch.allclose(ref, expected, atol=1e-5)
    # control: the trained policy (adapter on) no longer matches the initial model
    policy = torch.cat([lp[m.bool()] for lp, b in trainer._score(trainer.model, trajs) for m in [b["completion_mask"]]])
    assert not torch.allclose(policy, expected, atol=1e-4)


def test_pools_coefficients_and_loss_match_the_spec(tmp_path, tiny_model_dir):
    # 4 problems, K = 3, completions verified in order [p0s0, p0s1, p0s2, p1s0, ...]:
    # p0: 2/3 correct, p1: 0/3, p2: 3/3, p3: 1/3
    pattern = [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, None]
    verifier = PatternVerifier(pattern)
    args = make_args(tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=1, max_steps=1)
    trainer = RASFTTrainer(tiny_model_dir, args, Dataset.from_dict(math_rows(4)), verifier=verifier)
    trainer.state.max_steps = 1
    raw = [[trainer.train_dataset[i] for i in range(4)]]
    batches, num_items = trainer._build_step(raw)
    batch = batches[0]
    assert batch["is_expert"].tolist() == [True, False, False, True, True, False, False, False, True, False]
    # s = 2/3: w_E = 3 - (2/3)*2 = 5/3, + 2 rollouts -> [5/11, 3/11, 3/11]
    # s = 0:   expert alone -> [1]
    # s = 1:   w_E = 1, + 3 rollouts -> [1/4] * 4
    # s = 1/3: w_E = 7/3, + 1 rollout -> [0.7, 0.3]   (the None reward is "cannot judge": not correct)
    expected_coef = [5 / 11, 3 / 11, 3 / 11, 1.0, 0.25, 0.25, 0.25, 0.25, 0.7, 0.3]
    assert torch.allclose(batch["seq_coef"], torch.tensor(expected_coef), atol=1e-6)
    assert int(num_items) == int(batch["completion_mask"].sum())
    # Loss against an independent computation: full logits; the policy is still the reference, so rho = 1.
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    logp = full_logps(initial, batch)
    mask = batch["completion_mask"].float()
    assert torch.allclose(batch["ref_logps"] * mask, logp, atol=1e-5)
    expected_loss = -(batch["seq_coef"][:, None] * logp.exp() * logp * mask).sum() / num_items
    loss = trainer.compute_loss(trainer.model, batch, num_items_in_batch=num_items)
    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-4)
    assert trainer._metrics["ratio/mean"][-1] == pytest.approx(1.0, abs=1e-5)
    assert trainer._metrics["rollouts/accuracy"][-1] == pytest.approx(6 / 12)


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean"])
def test_gradient_accumulation_gives_the_same_gradients(tmp_path, tiny_model_dir, aggregation):
    grads = []
    for batch_size, accumulation in [(4, 1), (2, 2)]:
        capture = GradCapture()
        args = make_args(
            tmp_path / f"{batch_size}x{accumulation}", per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation, max_steps=1, loss_aggregation=aggregation, max_grad_norm=0.0,
        )
        trainer = RASFTTrainer(
            tiny_model_dir, args, Dataset.from_dict(math_rows(4)), verifier=PatternVerifier([1.0, 0.0, 1.0, 0.0, 0.0]),
            callbacks=[capture],
        )
        trainer.train()
        assert trainer.state.log_history[0]["tokens/rollout"] > 0  # rollouts took part
        grads.append(capture.grads)
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4), name


def test_expert_reference_logps_are_cached(tmp_path, tiny_model_dir):
    trainer = RASFTTrainer(
        tiny_model_dir, make_args(tmp_path, max_steps=2, num_train_epochs=2), Dataset.from_dict(math_rows(4)),
        verifier=PatternVerifier([0.0]),
    )
    trainer.train()
    assert sorted(trainer._expert_ref_cache) == [0, 1, 2, 3]


def test_ablation_without_ratio_loads_no_reference(tmp_path, tiny_model_dir):
    trainer = RASFTTrainer(
        tiny_model_dir, make_args(tmp_path, use_ratio=False, use_rollouts=False, token_factor="sft"),
        Dataset.from_dict(math_rows(8)), verifier=PatternVerifier([1.0]),
    )
    assert trainer.ref_model is None
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert all("rollouts/drawn" not in h and "ratio/mean" not in h for h in logs)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("answer"), r"missing the column\(s\) \['answer'\]"),
        (lambda d: d["completion"].__setitem__(3, "  "), r"'completion', row 3: the expert completion is empty"),
        (lambda d: d.__setitem__("answer", [int(a) for a in d["answer"]]), r"'answer', row 0: expected a string, "
         r"got int"),
        (lambda d: d.__setitem__("answer", [None if i == 5 else a for i, a in enumerate(d["answer"])]),
         r"'answer', row 5: expected a string, got NoneType"),
        (lambda d: d["prompt"].__setitem__(2, [{"role": "user", "content": "9" * 400}]), r"'prompt', row 2: the "
         r"prompt is \d+ tokens long"),
    ],
)
def test_bad_input_is_rejected_before_training(tmp_path, tiny_model_dir, mutate, message):
    data = math_rows(8)
    mutate(data)
    with pytest.raises(ValueError, match=message):
        RASFTTrainer(tiny_model_dir, make_args(tmp_path), Dataset.from_dict(data), verifier="math")


# Ablations (Table 2 blocks 1-3), transfer variants (block 4) and the reference-implementation weighting, on the
# fixed batch of test_pools_coefficients_and_loss_match_the_spec (s = 2/3, 0, 1, 1/3). The policy is moved away
# from the reference so that the ratio is not 1.
S = [2 / 3, 0.0, 1.0, 1 / 3]
VARIANTS = {
    # w/o adaptivity: every pool member weighs the same -> 1/3 x3, 1, 1/4 x4, 1/2 x2
    "no_adaptivity": (dict(adaptive_weights=False), [1 / 3] * 3 + [1.0] + [0.25] * 4 + [0.5] * 2),
    # w/o rollouts: expert only, fixed weight 1
    "no_rollouts": (dict(use_rollouts=False), [1.0] * 4),
    # w/o ratio: the paper's coefficients, rho = 1
    "no_ratio": (dict(use_ratio=False), [5 / 11, 3 / 11, 3 / 11, 1.0, 0.25, 0.25, 0.25, 0.25, 0.7, 0.3]),
    "full": (dict(), [5 / 11, 3 / 11, 3 / 11, 1.0, 0.25, 0.25, 0.25, 0.25, 0.7, 0.3]),
    "factor_sft": (dict(token_factor="sft"), [5 / 11, 3 / 11, 3 / 11, 1.0, 0.25, 0.25, 0.25, 0.25, 0.7, 0.3]),
    "factor_profit": (dict(token_factor="profit", profit_threshold=0.004),
                      [5 / 11, 3 / 11, 3 / 11, 1.0, 0.25, 0.25, 0.25, 0.25, 0.7, 0.3]),
    "group_advantage": (dict(pool_weighting="group_advantage"), None),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_ablations_and_variants_change_the_loss_as_the_spec_says(tmp_path, tiny_model_dir, variant):
    from rasft_trl import losses

    overrides, expected_coef = VARIANTS[variant]
    pattern = [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, None]
    args = make_args(tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=1, max_steps=1, **overrides)
    trainer = RASFTTrainer(tiny_model_dir, args, Dataset.from_dict(math_rows(4)), verifier=PatternVerifier(pattern))
    trainer.state.max_steps = 1
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(3)
    with torch.no_grad():
        for param in trainer.model.parameters():
            param.add_(0.02 * torch.randn_like(param))
    # the expert-loss window is calibrated on the initial policy; routing must still select all four problems
    trainer._calibration = __import__("rasft_trl").curriculum.WindowCalibration((0.0, 1e9), (0.0, 1e9), 1e9, 4)
    batches, num_items = trainer._build_step([[trainer.train_dataset[i] for i in range(4)]])
    batch = batches[0]
    if expected_coef is None:  # group_advantage: hand-derived per problem
        # p0: w_E = 5/3, rewards [5/3, 1, 1, 0]; p1: no correct -> 1; p2: w_E = 1, rewards [1, 1, 1, 1] -> z = 0;
        # p3: w_E = 7/3, rewards [7/3, 1, 0] (the None reward is neither correct nor incorrect)
        expected_coef = losses.group_advantage_coefficients(
            torch.tensor([0, 0, 0, 1, 2, 2, 2, 2, 3, 3]), batch["is_expert"],
            torch.tensor([S[0]] * 3 + [S[1]] + [S[2]] * 4 + [S[3]] * 2), torch.tensor([1] * 3 + [3] + [0] * 4 + [1] * 2),
        ).tolist()
        assert expected_coef[4:8] == pytest.approx([0.0, 0.25 * 0.02, 0.25 * 0.02, 0.25 * 0.02])  # tanh(0) = 0
        # p0: mean 0.91667, population std sqrt(1.41667 / 4) = 0.59512, z_E = 0.75 / 0.59512 = 1.26025,
        # tanh(0.4 * 1.26025) = 0.46534, / (1 + 2) = 0.15511
        assert expected_coef[0] == pytest.approx(0.15511, abs=1e-4)
    assert batch["seq_coef"].tolist() == pytest.approx(expected_coef, abs=1e-6)

    logp = full_logps(trainer.model, batch)
    ref = full_logps(reference, batch)
    mask = batch["completion_mask"].float()
    p = logp.exp()
    factor = {"dft": p, "sft": torch.ones_like(p), "profit": (p >= 0.004).float()}[args.token_factor]
    if args.use_ratio:
        rho = torch.exp(((ref - logp) * mask).sum(1) / mask.sum(1)).clamp(0.4, 1.1)  # [N]
        assert not torch.allclose(rho, torch.ones_like(rho))  # the ratio really acts on this batch
    else:
        rho = torch.ones(len(mask))
    expected = -(batch["seq_coef"][:, None] * factor * rho[:, None] * logp * mask).sum() / num_items
    loss = trainer.compute_loss(trainer.model, batch, num_items_in_batch=num_items)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


def test_rollout_filters_drop_and_count(tmp_path, tiny_model_dir):
    class ShortBackend:
        def generate(self, prompt_ids, num_samples):
            return [[5] if k == 0 else [6, 7, 8, 9] for _ in prompt_ids for k in range(num_samples)]

        def sync_weights(self):
            pass

    verifier = PatternVerifier([1.0])  # everything that reaches the verifier is correct
    args = make_args(tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=1, max_steps=1,
                     filter_min_rollout_tokens=2, filter_near_duplicate_threshold=0.82)
    trainer = RASFTTrainer(tiny_model_dir, args, Dataset.from_dict(math_rows(4)), verifier=verifier,
                           generation_backend=ShortBackend())
    trainer.state.max_steps = 1
    batches, _ = trainer._build_step([[trainer.train_dataset[i] for i in range(4)]])
    # per problem: sample 0 too short, samples 1-2 identical -> sample 2 near-duplicate: one correct rollout left
    assert trainer._counters["filters/too_short"] == 4 and trainer._counters["filters/near_duplicate"] == 4
    assert verifier.seen == 4
    assert batches[0]["is_expert"].tolist() == [True, False] * 4
    assert trainer._metrics["pool/mean_solvability"][-1] == pytest.approx(1 / 3)


@pytest.mark.parametrize("every, expected", [(0, 1), (1, 3), (2, 2)])
def test_window_recalibration_schedule(tmp_path, tiny_model_dir, every, expected):
    calibrations = []
    trainer = RASFTTrainer(
        tiny_model_dir, make_args(tmp_path, max_steps=3, window_recalibration_steps=every, save_strategy="steps",
                                  save_steps=3),
        Dataset.from_dict(math_rows(12)), verifier=PatternVerifier([1.0, 0.0]),
    )
    original = trainer._calibrate

    def recording():
        calibrations.append(trainer.state.global_step)
        return original()

    trainer._calibrate = recording
    trainer.train()
    assert len(calibrations) == expected and calibrations[0] == 0
    assert calibrations == list(range(0, 3, every))[:expected] if every else calibrations == [0]
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert logs[-1]["window/calibrations"] == expected
    import json
    import os

    state = json.loads(open(os.path.join(trainer.args.output_dir, "checkpoint-3", "rasft_state.json")).read())
    assert state["calibrated_at"] == calibrations[-1]


def test_logprob_tiles_change_memory_not_results(tmp_path, tiny_model_dir):
    """Smaller tiles of TRL's fused log-prob kernel (the CPU setting of docs/benchmarks.md) give the same step, and
    TRL's values are back after training."""
    import trl.kernels.chunked_logprob as kernel

    def losses(name, **tiles):
        args = make_args(tmp_path / name, gradient_accumulation_steps=1, **tiles)
        trainer = RASFTTrainer(tiny_model_dir, args, Dataset.from_dict(math_rows(8)),
                               verifier=PatternVerifier([1.0, 0.0]))
        trainer.train()
        return [h["loss"] for h in trainer.state.log_history if "loss" in h]

    default = losses("default")
    tiled = losses("tiled", logprob_tile_tokens=7, logprob_tile_vocab=64)  # several tiles in both directions
    assert tiled == pytest.approx(default, rel=1e-5)
    assert kernel.TOKEN_CHUNK_SIZE == 4096


def test_cpu_training_picks_cpu_sized_logprob_tiles(tmp_path, tiny_model_dir):
    """`None` tiles mean CPU-sized ones on the CPU (TRL's GPU-sized 4096 x 32768 elsewhere); explicit values win."""
    import trl.kernels.chunked_logprob as kernel
    import trl.trainer.utils as trl_utils
    from transformers import TrainerCallback

    from rasft_trl.rasft_config import CPU_LOGPROB_TILES

    config = RASFTConfig(output_dir=str(tmp_path / "c"), bf16=False)
    assert config.logprob_tiles_on("cpu") == CPU_LOGPROB_TILES == (512, 8192)
    assert config.logprob_tiles_on("cuda") == (None, None)
    explicit = RASFTConfig(output_dir=str(tmp_path / "e"), bf16=False, logprob_tile_tokens=4096,
                           logprob_tile_vocab=32768)
    assert explicit.logprob_tiles_on("cpu") == (4096, 32768)

    seen = []

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.append((kernel.TOKEN_CHUNK_SIZE, trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE))

    trainer = RASFTTrainer(tiny_model_dir, make_args(tmp_path / "t", gradient_accumulation_steps=1),
                           Dataset.from_dict(math_rows(8)), verifier=PatternVerifier([1.0, 0.0]), callbacks=[Record()])
    trainer.train()
    assert seen and set(seen) == {CPU_LOGPROB_TILES}
    assert (kernel.TOKEN_CHUNK_SIZE, trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE) == (4096, 32768)  # TRL's, restored
