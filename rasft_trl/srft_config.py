"""Configuration of the SRFT trainer: the paper's four loss terms and their switches."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .rasft_config import RASFTConfig, document_fields
from .srft_losses import ROLLOUT_NORMALIZATIONS

ENTROPY_TOKENS = ("all", "rollouts", "demonstrations")


@dataclass
class SRFTConfig(RASFTConfig):
    r"""
    Configuration class for [`SRFTTrainer`]: Supervised Reinforcement Fine-Tuning (Fu et al.; `docs/srft.md`).

    SRFT trains in one stage on each problem's expert demonstration and on `num_rollouts` rollouts of the policy:
    entropy-weighted SFT on the demonstration (Eq. 8), off-policy RL on the demonstration with the demonstration in
    the rollout group (Eqs. 6, 7, 9, 10), entropy-weighted likelihood of the correct rollouts and minimized likelihood
    of the incorrect ones (Eq. 12). Every problem gets rollouts (no expert-loss window), and no loss term reads a
    reference model. The [`RASFTConfig`] fields of the rollouts, the reward functions, vLLM, filters, logging and
    training apply unchanged; `use_rollouts` is always on and `use_ratio` / `kl_weight` always off (values set for
    them are overwritten); the window, pool-weighting, ratio and token-factor fields have no effect. The paper gives
    no batch size, sampling temperature or optimizer for SRFT: those defaults are TRL's / verl's, marked below.

    Parameters:
        > Parameters whose defaults differ from [`RASFTConfig`]

        learning_rate (`float`, *optional*, defaults to `1e-6`):
            Initial learning rate (paper: fixed at 1e-6).
        lr_scheduler_type (`str`, *optional*, defaults to `"constant"`):
            Learning-rate schedule (paper: a fixed learning rate).
        warmup_steps (`float`, *optional*, defaults to `0`):
            Linear warm-up steps (the paper names none).
        max_new_tokens (`int`, *optional*, defaults to `8192`):
            Rollout length budget (paper: 8,192).
        max_length (`int`, *optional*, defaults to `16384`):
            Longest prompt + completion trained on (the paper's context window of 16,384 after its RoPE change, which
            holds a prompt and an 8,192-token rollout). A demonstration longer than this is cut (counted in
            `data/train_expert_truncated`); a rollout that does not fit is left out of its group's statistics and of
            every term (counted in `rollouts/too_long`), never kept in one and dropped from the other. The trainer
            warns at construction when the longest prompt plus `max_new_tokens` exceeds it.
        num_rollouts (`int`, *optional*, defaults to `8`):
            Rollouts `G` per problem (paper: 8). With one demonstration the group `G_aug` has `G + 1` members. Each
            micro-batch holds `per_device_train_batch_size` problems with `G + 1` sequences each.
        temperature (`float`, *optional*, defaults to `1.0`):
            Rollout sampling temperature (the paper gives none; 1.0 is verl's and TRL's GRPO default).
        top_p (`float`, *optional*, defaults to `1.0`):
            Rollout nucleus sampling (1.0: off, as in GRPO).
        repetition_penalty (`float`, *optional*, defaults to `1.0`):
            Rollout repetition penalty (1.0: off, as in GRPO).
        mask_truncated_completions (`bool`, *optional*, defaults to `False`):
            `False` (as in GRPO): a rollout cut at `max_new_tokens` is judged like any other, so an unfinished answer
            is a negative. `True` leaves truncated rollouts out of the positive and negative terms (they still count
            in the group's rewards, as TRL's GRPO does).

        > Parameters of the SRFT loss

        entropy_weight_sft (`bool`, *optional*, defaults to `True`):
            Weight the demonstration SFT term with `w_SFT = sft_weight_scale * exp(-H)` (Eq. 8). `False` fixes
            `w_SFT = 1.0`: the paper's ablation "SRFT w/o w_SFT" (Table 3).
        entropy_weight_rl (`bool`, *optional*, defaults to `True`):
            Weight the positive-rollout term with `w_RL = rl_weight_scale * exp(H)` (Eq. 12). `False` fixes
            `w_RL = 1.0`: the paper's ablation "SRFT w/o w_RL" (Table 3).
        sft_weight_scale (`float`, *optional*, defaults to `0.5`):
            The constant of `w_SFT` (paper: 0.5).
        rl_weight_scale (`float`, *optional*, defaults to `0.1`):
            The constant of `w_RL` (paper: 0.1).
        rollout_normalization (`str`, *optional*, defaults to `"per_term"`):
            What divides the positive and negative rollout terms: `"per_term"`, each its own token count of the step
            (Eq. 12 as written: an expectation over the correct rollouts plus one over the incorrect ones);
            `"shared"`, both the step's count of all rollout tokens (the first line of Eq. 11 read as one
            expectation over all rollouts, as verl's token mean does). Per term, a negative token weighs `n+ / n-`
            times its shared weight: 9x at 90% rollout accuracy, 1/9 at 10% (see docs/srft.md).
        negative_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the negative-rollout term `mean[log pi(y-)]`. 1.0 follows Eq. 12 as written (derived in Eq. 11
            from rewards in {+1, -1}); 0.0 is the reading with the paper's reward {1, 0} (Eq. A2), under which
            incorrect rollouts contribute nothing.
        demo_rl (`bool`, *optional*, defaults to `True`):
            Include the off-policy RL term on the demonstrations, `-mean_t[pi(y_t) * A_demo]` (Eqs. 9, 10, without
            clipping, `pi_beta = 1`). `False` leaves SFT on the demonstrations and the rollout terms.
        demo_reward (`float`, *optional*, defaults to `1.0`):
            Reward of the demonstration in its group (demonstrations are verified correct; the paper filters its data
            with Math-Verify).
        advantage_epsilon (`float`, *optional*, defaults to `1e-4`):
            Added to the group's reward std in the advantage z-score (the paper writes none; TRL's GRPO uses 1e-4). A
            group whose rewards are all equal has advantage 0.
        entropy_tokens (`str`, *optional*, defaults to `"all"`):
            Tokens over which the policy entropy `H` of the weights is averaged: `"all"` completion tokens of the
            micro-batch (spec: "averaged over the tokens of the batch"), only the `"rollouts"`, or only the
            `"demonstrations"`. `H` is computed in the training forward (the current policy), under no gradient, and
            averaged over all processes. It is an output of the fused LM head (tiles: `logprob_tile_tokens`,
            `logprob_tile_vocab`), so it is computed where the head's parameters are gathered (ZeRO-3, FSDP).
    """

    learning_rate: float = field(default=1e-6, metadata={"help": "Initial learning rate (paper: 1e-6)."})
    lr_scheduler_type: str = field(default="constant", metadata={"help": "Learning-rate schedule."})
    warmup_steps: float = field(default=0, metadata={"help": "Linear warm-up steps."})
    max_new_tokens: int = field(default=8192, metadata={"help": "Rollout length budget (paper: 8192)."})
    max_length: int = field(default=16384, metadata={"help": "Longest prompt + completion (paper's window: 16384)."})
    num_rollouts: int = field(default=8, metadata={"help": "Rollouts G per problem (paper: 8)."})
    temperature: float = field(default=1.0, metadata={"help": "Rollout sampling temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Rollout nucleus sampling."})
    repetition_penalty: float = field(default=1.0, metadata={"help": "Rollout repetition penalty."})
    mask_truncated_completions: bool = field(default=False, metadata={"help": "Leave truncated rollouts out."})
    entropy_weight_sft: bool = field(default=True, metadata={"help": "w_SFT = 0.5 exp(-H); False: 1.0."})
    entropy_weight_rl: bool = field(default=True, metadata={"help": "w_RL = 0.1 exp(H); False: 1.0."})
    sft_weight_scale: float = field(default=0.5, metadata={"help": "Constant of w_SFT."})
    rl_weight_scale: float = field(default=0.1, metadata={"help": "Constant of w_RL."})
    rollout_normalization: str = field(default="per_term", metadata={"help": "Token count of the rollout terms: "
                                                                       "per_term or shared."})
    negative_weight: float = field(default=1.0, metadata={"help": "Weight of the negative-rollout term."})
    demo_rl: bool = field(default=True, metadata={"help": "Include the off-policy RL term on demonstrations."})
    demo_reward: float = field(default=1.0, metadata={"help": "Reward of the demonstration in its group."})
    advantage_epsilon: float = field(default=1e-4, metadata={"help": "Added to the group reward std."})
    entropy_tokens: str = field(default="all", metadata={"help": "Tokens of the entropy H: all, rollouts, "
                                                                 "demonstrations."})

    def __post_init__(self):
        self.use_rollouts = True
        self.use_ratio = False
        self.kl_weight = 0.0
        super().__post_init__()
        for name in ("sft_weight_scale", "rl_weight_scale", "negative_weight", "demo_reward", "advantage_epsilon"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}.")
        if self.sft_weight_scale < 0 or self.rl_weight_scale < 0 or self.negative_weight < 0:
            raise ValueError("sft_weight_scale, rl_weight_scale and negative_weight must be >= 0.")
        if self.advantage_epsilon <= 0:
            raise ValueError(f"advantage_epsilon must be > 0, got {self.advantage_epsilon}.")
        if self.rollout_normalization not in ROLLOUT_NORMALIZATIONS:
            raise ValueError(f"rollout_normalization must be one of {ROLLOUT_NORMALIZATIONS}, got "
                             f"{self.rollout_normalization!r}.")
        if self.entropy_tokens not in ENTROPY_TOKENS:
            raise ValueError(f"entropy_tokens must be one of {ENTROPY_TOKENS}, got {self.entropy_tokens!r}.")
        for name in ("entropy_weight_sft", "entropy_weight_rl", "demo_rl"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}.")


document_fields(SRFTConfig, {"entropy_tokens": ENTROPY_TOKENS, "rollout_normalization": ROLLOUT_NORMALIZATIONS})
