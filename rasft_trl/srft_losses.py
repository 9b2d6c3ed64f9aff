"""Pure loss math of SRFT (Fu et al., "SRFT: a single-stage method with supervised and reinforcement fine-tuning
for reasoning"), the project's second method.

Plain tensors in, tensors out: nothing here calls a model. Shapes: `N` trajectories (rows), `T` target positions;
`mask` is 1 on the completion tokens a term trains on, 0 elsewhere. Equation numbers are the paper's (the project's
`docs/srft.md` restores them):

- Eq. 8: entropy-weighted SFT on demonstrations, `L1 = w_SFT * mean[-log pi(y_E | x)]`, `w_SFT = 0.5 sg(exp(-H))`.
- Eqs. 6, 7, 9, 10: off-policy RL on demonstrations. The demonstration joins the rollout group (`G_aug`), advantages
  are z-scores over `G_aug`, the ratio is `pi_theta / pi_beta` with `pi_beta = 1` and no clipping:
  `L2 = -mean_t[pi_theta(y_t | .) * A_demo]`.
- Eq. 12, positive rollouts: `L3 = w_RL * mean[-log pi(y+ | x)]`, `w_RL = 0.1 sg(exp(H))`.
- Eq. 12, negative rollouts: `L4 = mean[log pi(y- | x)]` (weight 1 as written; see `negative_term`).
- Eq. 13: `L = L1 + L2 + L3 + L4`.

"mean" is a token mean over the term's tokens of the whole optimizer step: each term takes the step's token count of
its own set (`num_tokens`) so that gradient accumulation and several processes give the loss of the whole step. The
two rollout terms may instead share one count, all rollout tokens of the step (`rollout_token_counts`).
"""

from __future__ import annotations

import math

import torch

from .losses import masked_sum


def entropy_weights(
    mean_entropy: float,
    sft_scale: float = 0.5,
    rl_scale: float = 0.1,
    entropy_sft: bool = True,
    entropy_rl: bool = True,
) -> tuple[float, float]:
    """`(w_SFT, w_RL)` of Eqs. 8 and 12 from the policy's mean entropy `H` (a stop-gradient scalar).

    `w_SFT = sft_scale * exp(-H)`: an uncertain policy (high entropy) imitates less. `w_RL = rl_scale * exp(H)`: it
    learns more from its own correct rollouts. The paper's ablation (Table 3) fixes a weight to the constant 1.0:
    `entropy_sft=False` gives `w_SFT = 1`, `entropy_rl=False` gives `w_RL = 1`.
    """
    w_sft = sft_scale * math.exp(-mean_entropy) if entropy_sft else 1.0
    w_rl = rl_scale * math.exp(mean_entropy) if entropy_rl else 1.0
    return w_sft, w_rl


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Group z-scores over the augmented group `G_aug = rollouts U demonstrations` (Eqs. 6, 7).

    `A_k = (R_k - mean(R over G_aug)) / (std(R over G_aug) + eps)`, std with Bessel's correction as in TRL's GRPO,
    over the judged members of each group (NaN marks an unjudged rollout, which gets advantage 0 and is left out of
    the statistics). A group whose rewards are all equal (or with one judged member) has advantages 0.

    Args:
        rewards: [P, M] rewards of the `M` members of each of `P` groups (rollouts and the demonstration(s)).
        eps: added to the std (the paper writes none; TRL uses 1e-4).

    Returns:
        [P, M] float32 advantages, no gradient.
    """
    rewards = rewards.float()
    judged = ~torch.isnan(rewards)  # [P, M]
    count = judged.sum(-1, keepdim=True)  # [P, 1]
    values = torch.where(judged, rewards, torch.zeros_like(rewards))
    mean = values.sum(-1, keepdim=True) / count.clamp(min=1)  # [P, 1]
    squares = torch.where(judged, (rewards - mean) ** 2, torch.zeros_like(rewards))
    std = (squares.sum(-1, keepdim=True) / (count - 1).clamp(min=1)).sqrt()  # [P, 1]
    advantages = (values - mean) / (std + eps)
    return torch.where(judged & (count > 1), advantages, torch.zeros_like(advantages))


ROLLOUT_NORMALIZATIONS = ("per_term", "shared")


def rollout_token_counts(
    num_positive: float, num_negative: float, normalization: str = "per_term"
) -> tuple[float, float]:
    """The token counts that divide the positive and the negative rollout term (Eq. 12) of a step.

    - `"per_term"`: each term by its own count, `(n+, n-)`, Eq. 12 as written: two expectations, one over the correct
      rollouts and one over the incorrect ones.
    - `"shared"`: both by all rollout tokens, `(n+ + n-, n+ + n-)`, the first line of Eq. 11 as one expectation over
      all rollouts (and verl's token mean over a batch, which the authors built on).

    Relative to a positive token, a negative token is pushed `n+ / (w_RL n-)` times as hard per term and `1 / w_RL`
    times shared: the per-term push on negatives grows with rollout accuracy (at 90% accuracy and equal lengths,
    9x the shared one; at 10%, 1/9).

    Returns:
        `(positive count, negative count)`, each at least 1.
    """
    if normalization not in ROLLOUT_NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {ROLLOUT_NORMALIZATIONS}, got {normalization!r}.")
    if normalization == "shared":
        both = max(float(num_positive) + float(num_negative), 1.0)
        return both, both
    return max(float(num_positive), 1.0), max(float(num_negative), 1.0)


def _normalizer(mask: torch.Tensor, num_tokens: float | torch.Tensor | None) -> torch.Tensor | float:
    """The step's token count of a term, or the micro-batch's when `num_tokens` is None (at least 1)."""
    if num_tokens is None:
        return mask.sum().clamp(min=1.0)
    return max(float(num_tokens), 1.0)


def _weighted_nll(
    per_token_logps: torch.Tensor, mask: torch.Tensor, weight: float, num_tokens: float | None
) -> torch.Tensor:
    """`weight * sum_t(-log p_t) / n` over the masked tokens. `per_token_logps`, `mask`: [N, T] -> scalar."""
    mask = mask.to(per_token_logps.dtype)
    return weight * -masked_sum(per_token_logps, mask).sum() / _normalizer(mask, num_tokens)


def demo_sft_term(
    per_token_logps: torch.Tensor, mask: torch.Tensor, w_sft: float, num_tokens: float | None = None
) -> torch.Tensor:
    """Eq. 8: `w_SFT * sum_t(-log pi(y_t)) / n` over the demonstration tokens. `per_token_logps`, `mask`: [N, T]."""
    return _weighted_nll(per_token_logps, mask, w_sft, num_tokens)


def demo_rl_term(
    per_token_logps: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor, num_tokens: float | None = None
) -> torch.Tensor:
    """Eqs. 9, 10 without clipping, `pi_beta = 1`: `-sum_t pi_theta(y_t) * A / n` over the demonstration tokens.

    The ratio `r_t = pi_theta(y_t | .)` is a probability with gradient (`d r_t = r_t d log pi`), so the gradient
    per token is `-A * pi_theta(y_t) * grad log pi_theta(y_t) / n`: confident tokens of a demonstration that beats its
    group are pushed hardest.

    Args:
        per_token_logps: [N, T] log-probs (with gradient); mask: [N, T]; advantages: [N] `A_demo` per row.
    """
    mask = mask.to(per_token_logps.dtype)
    ratio = per_token_logps.exp()  # [N, T]
    return -masked_sum(ratio * advantages.to(ratio.dtype).unsqueeze(-1), mask).sum() / _normalizer(mask, num_tokens)


def positive_term(
    per_token_logps: torch.Tensor, mask: torch.Tensor, w_rl: float, num_tokens: float | None = None
) -> torch.Tensor:
    """Eq. 12, first part: `w_RL * sum_t(-log pi(y+_t)) / n` over the tokens of correct rollouts."""
    return _weighted_nll(per_token_logps, mask, w_rl, num_tokens)


def negative_term(
    per_token_logps: torch.Tensor, mask: torch.Tensor, weight: float = 1.0, num_tokens: float | None = None
) -> torch.Tensor:
    """Eq. 12, second part: `weight * sum_t log pi(y-_t) / n` over the tokens of incorrect rollouts.

    Minimizing it lowers the likelihood of incorrect rollouts. Eq. 11 derives it from the on-policy objective with
    rewards in {+1, -1}; with the paper's reward {1, 0} (Eq. A2) the same derivation gives no negative term at all.
    `weight=1` follows Eq. 12 as written; `weight=0` is the {1, 0} reading.
    """
    mask = mask.to(per_token_logps.dtype)
    return weight * masked_sum(per_token_logps, mask).sum() / _normalizer(mask, num_tokens)
