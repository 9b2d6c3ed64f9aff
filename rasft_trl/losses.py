"""Pure loss math of RASFT and its token-factor variants.

Plain tensors in, tensors out: nothing here calls a model. Shapes: `N` trajectories (rows), `T` target
positions; `mask` is 1 on target tokens (completion tokens), 0 on prompt and padding.

Equations refer to the RASFT paper (arXiv 2606.07006) as restored in the project's method page:
section 2 (solvability), 3 (candidate pool), 4 (inverse ratio), 5 (token weight and objective).
"""

from __future__ import annotations

from typing import Callable

import torch


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Sum of `values` where `mask` is set. `values`, `mask`: [N, T] -> [N]."""
    return (values * mask).sum(dim=dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Mean of `values` over the masked positions; a row without any masked position gives 0. [N, T] -> [N]."""
    mask = mask.to(values.dtype)
    return masked_sum(values, mask, dim) / mask.sum(dim=dim).clamp(min=1.0)


def sequence_nll(per_token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Difficulty score `L(x) = mean_t(-logp_t)` of a sequence (section 1). [N, T] -> [N]."""
    return -masked_mean(per_token_logps.detach(), mask)


def solvability(correct: torch.Tensor) -> torch.Tensor:
    """`s(x) = (1/K) sum_k 1[rollout k correct]` (section 2). `correct`: [P, K] bool -> [P] float."""
    return correct.float().mean(dim=-1)


def inverse_sequence_ratio(
    per_token_logps: torch.Tensor,
    ref_per_token_logps: torch.Tensor,
    mask: torch.Tensor,
    clip: tuple[float, float] | None = (0.4, 1.1),
    log_ratio_clamp: float = 20.0,
) -> torch.Tensor:
    """Length-normalized inverse importance ratio against the frozen reference (section 4).

    `rho(y) = exp(clamp(mean_t(logq_t - logp_t), -c, c))`, then clipped to `clip` (`None`: unclipped).
    The ratio is a stop-gradient weight: the result carries no gradient.

    Args:
        per_token_logps: [N, T] policy log-probs `logp_t`.
        ref_per_token_logps: [N, T] reference log-probs `logq_t`.
        mask: [N, T] target-token mask.
        clip: `(eps_low, eps_high)`; paper: `(0.4, 1.1)`.
        log_ratio_clamp: `c`, clamp of the mean log-ratio before `exp`.

    Returns:
        [N] ratios.
    """
    log_ratio = masked_mean(ref_per_token_logps.detach() - per_token_logps.detach(), mask)  # [N]
    rho = torch.exp(log_ratio.clamp(-log_ratio_clamp, log_ratio_clamp))  # [N]
    if clip is not None:
        rho = rho.clamp(clip[0], clip[1])
    return rho


def ratio_clip_fractions(rho: torch.Tensor, clip: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Fractions of unclipped ratios `rho` [N] below `clip[0]` and above `clip[1]` (for logging)."""
    if rho.numel() == 0:
        zero = rho.new_zeros(())
        return zero, zero
    return (rho < clip[0]).float().mean(), (rho > clip[1]).float().mean()


def expert_weight(solvability: torch.Tensor, w_min: float = 1.0, w_max: float = 3.0) -> torch.Tensor:
    """Expert weight falling linearly with solvability (section 3): `w_E = w_max - s (w_max - w_min)`."""
    return w_max - solvability * (w_max - w_min)


def pool_coefficients(
    group_ids: torch.Tensor,
    is_expert: torch.Tensor,
    solvability: torch.Tensor,
    w_min: float = 1.0,
    w_max: float = 3.0,
    w_rollout: float = 1.0,
    adaptive: bool = True,
) -> torch.Tensor:
    """Trajectory coefficients `alpha_k = w_k / sum_{j in P(x)} w_j` of the candidate pools (section 3).

    Rows sharing a group id form one pool `P(x) = {y_E} U {correct rollouts}`. Expert rows get
    `expert_weight(s)`, rollout rows `w_rollout`; each pool is normalized to sum to 1, so a pool holding only
    its expert gets coefficient 1. With `adaptive=False` (ablation "w/o adaptivity") the expert gets
    `w_rollout` too, i.e. every member of a pool weighs the same.

    Args:
        group_ids: [N] int, pool id of each row (any integers; rows of a pool need not be contiguous).
        is_expert: [N] bool, whether the row is the expert demonstration.
        solvability: [N] float, solvability `s(x)` of the row's problem (only read on expert rows).
        w_min, w_max, w_rollout: weights of section 3.
        adaptive: difficulty-adaptive expert weight (default) or equal weights.

    Returns:
        [N] coefficients, no gradient.
    """
    solvability = solvability.detach().float()
    if adaptive:
        w_expert = expert_weight(solvability, w_min, w_max)  # [N]
    else:
        w_expert = torch.full_like(solvability, w_rollout)
    weights = torch.where(is_expert, w_expert, torch.full_like(solvability, w_rollout))  # [N]
    _, pool_index = torch.unique(group_ids, return_inverse=True)  # [N] in [0, P)
    pool_totals = torch.zeros(int(pool_index.max()) + 1 if pool_index.numel() else 0, dtype=weights.dtype,
                              device=weights.device).index_add_(0, pool_index, weights)  # [P]
    return weights / pool_totals[pool_index]


def token_factor(
    per_token_logps: torch.Tensor, kind: str = "dft", profit_threshold: float = 0.1
) -> torch.Tensor:
    """Per-token factor of the objective (section 5, transfer variants of Table 2). [N, T] -> [N, T], no grad.

    - `"dft"`: `sg(p_t)` (Dynamic Fine-Tuning; RASFT's default),
    - `"sft"`: 1,
    - `"profit"`: `1[p_t >= profit_threshold]` (ProFiT's probability-guided token selection).
    """
    probs = per_token_logps.detach().exp()
    if kind == "dft":
        return probs
    if kind == "sft":
        return torch.ones_like(probs)
    if kind == "profit":
        return (probs >= profit_threshold).to(probs.dtype)
    raise ValueError(f"Unknown token factor {kind!r}; expected 'dft', 'sft' or 'profit'.")


def sequence_mean_coefficients(seq_coef: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Coefficients for sequence-mean aggregation: `coef / T_k`, so that `rasft_loss` averages each trajectory's
    tokens before weighting; divide by the number of problems instead of tokens. [N], [N, T] -> [N]."""
    return seq_coef / mask.to(seq_coef.dtype).sum(dim=-1).clamp(min=1.0)


def rasft_loss(
    per_token_logps: torch.Tensor,
    ref_per_token_logps: torch.Tensor | None,
    mask: torch.Tensor,
    seq_coef: torch.Tensor,
    ratio_clip: tuple[float, float] = (0.4, 1.1),
    token_factor: str = "dft",
    profit_threshold: float = 0.1,
    num_items_in_batch: int | torch.Tensor | None = None,
    log_ratio_clamp: float = 20.0,
) -> torch.Tensor:
    """RASFT objective (paper Eq. 2): `L = -sum_k sum_t alpha_k * f(p_{k,t}) * rho_c(y_k) * logp_{k,t} / Z`.

    `alpha_k` (`seq_coef`), the token factor `f` and the clipped ratio `rho_c` are stop-gradient weights; only
    `logp` carries gradient. `Z` is `num_items_in_batch` when given (the token count of the whole optimizer step,
    across gradient-accumulation steps and processes), else the number of target tokens in this batch.

    Args:
        per_token_logps: [N, T] policy log-probs at temperature 1, with gradient.
        ref_per_token_logps: [N, T] frozen-reference log-probs, or `None` for `rho = 1` (ablation "w/o ratio").
        mask: [N, T] target-token mask.
        seq_coef: [N] trajectory coefficients `alpha_k` (see [`pool_coefficients`]).
        ratio_clip: `(eps_low, eps_high)` clip of the inverse ratio.
        token_factor: `"dft"`, `"sft"` or `"profit"` (see [`token_factor`]).
        profit_threshold: threshold of the `"profit"` factor.
        num_items_in_batch: normalizer `Z`; defaults to `mask.sum()`.
        log_ratio_clamp: clamp of the mean log-ratio before `exp`.

    Returns:
        Scalar loss.
    """
    mask = mask.to(per_token_logps.dtype)
    factor = _token_factor(per_token_logps, token_factor, profit_threshold)  # [N, T]
    if ref_per_token_logps is None:
        rho = torch.ones_like(seq_coef, dtype=per_token_logps.dtype)  # [N]
    else:
        rho = inverse_sequence_ratio(per_token_logps, ref_per_token_logps, mask, ratio_clip, log_ratio_clamp)  # [N]
    weights = (seq_coef.detach().to(per_token_logps.dtype) * rho)[:, None] * factor  # [N, T]
    normalizer = mask.sum().clamp(min=1.0) if num_items_in_batch is None else num_items_in_batch
    return -(weights * per_token_logps * mask).sum() / normalizer


_token_factor = token_factor


def chunked_reverse_kl(
    hidden: torch.Tensor,
    ref_hidden: torch.Tensor,
    head: Callable[[torch.Tensor], torch.Tensor],
    ref_head_weight: torch.Tensor,
    mask: torch.Tensor,
    ref_head_bias: torch.Tensor | None = None,
    chunk_size: int = 256,
) -> torch.Tensor:
    """Full-vocabulary `KL(pi_ref(.|ctx) || pi_theta(.|ctx))` at every target position (SFT+KL, ASFT).

    `sum_v q_v (log q_v - log p_v)` with `p = softmax(head(hidden))`, `q = softmax(ref_hidden W_ref^T + b_ref)`, at
    temperature 1. Positions are processed in chunks of `chunk_size` and each chunk is recomputed in the backward
    pass (activation checkpointing), so the peak memory holds one `[chunk, V]` block of each model rather than two
    full `[N, T, V]` tensors. The policy side is a callable (the LM-head module) rather than its weight, so that a
    sharded head (DeepSpeed ZeRO-3) is gathered by its own hooks in the forward and again in the recomputation.

    Args:
        hidden: [N, T, H] policy hidden states feeding the LM head (with gradient).
        ref_hidden: [N, T, H] reference hidden states (no gradient needed).
        head: the policy's LM head, `[C, H] -> [C, V]` logits (with gradient).
        ref_head_weight: [V, H] reference LM-head weight (full, not sharded); ref_head_bias: optional [V].
        mask: [N, T] positions to score (others get 0).
        chunk_size: positions per chunk.

    Returns:
        [N, T] per-position KL, zero outside `mask`.
    """
    from torch.utils.checkpoint import checkpoint

    flat_mask = mask.reshape(-1).bool()  # [N*T]
    h = hidden.reshape(-1, hidden.size(-1))[flat_mask]  # [M, H]
    h_ref = ref_hidden.reshape(-1, ref_hidden.size(-1))[flat_mask].detach()  # [M, H]
    out = hidden.new_zeros(flat_mask.shape, dtype=torch.float32)  # [N*T]
    ref_bias = None if ref_head_bias is None else ref_head_bias.detach()
    pieces = []
    for start in range(0, h.size(0), chunk_size):
        pieces.append(
            checkpoint(
                _kl_block, h[start : start + chunk_size], h_ref[start : start + chunk_size], head,
                ref_head_weight.detach(), ref_bias, use_reentrant=False,
            )
        )
    if pieces:
        out = out.masked_scatter(flat_mask, torch.cat(pieces))
    return out.view(mask.shape)


def _kl_block(h, h_ref, head, ref_weight, ref_bias) -> torch.Tensor:
    """KL(q || p) of one chunk of positions. [C, H] -> [C]."""
    log_p = head(h).float().log_softmax(-1)  # [C, V]
    with torch.no_grad():
        log_q = torch.nn.functional.linear(h_ref, ref_weight, ref_bias).float().log_softmax(-1)  # [C, V]
    return (log_q.exp() * (log_q - log_p)).sum(-1)


def kl_penalty(
    per_token_kl: torch.Tensor, mask: torch.Tensor, kl_weight: float, num_items_in_batch: int | torch.Tensor | None
) -> torch.Tensor:
    """`beta * sum_t KL_t / Z` with the same normalizer `Z` as [`rasft_loss`]. [N, T] -> scalar."""
    mask = mask.to(per_token_kl.dtype)
    normalizer = mask.sum().clamp(min=1.0) if num_items_in_batch is None else num_items_in_batch
    return kl_weight * (per_token_kl * mask).sum() / normalizer


def kept_token_mask(per_token_logps: torch.Tensor, mask: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """ProFiT's probability-guided selection: target tokens with `p_t >= threshold`. [N, T] -> [N, T] long."""
    return ((per_token_logps.detach().exp() >= threshold) & mask.bool()).long()


def group_advantage_coefficients(
    group_ids: torch.Tensor,
    is_expert: torch.Tensor,
    solvability: torch.Tensor,
    num_incorrect: torch.Tensor,
    w_min: float = 1.0,
    w_max: float = 3.0,
    tanh_scale: float = 0.4,
    max_incorrect: int = 3,
    rollout_clip: tuple[float, float] = (0.02, 0.15),
    rollout_scale: float = 0.25,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Trajectory coefficients of the reference implementation (`pool_weighting="group_advantage"`, section 3).

    Per problem with `c >= 1` correct rollouts: rewards `r = [w_E, 1 (x c), 0 (x min(#incorrect, max_incorrect))]`,
    `a = tanh(tanh_scale * z(r)) / (1 + c)` with `z` the z-score over the group (population std + `eps`); the expert
    gets `a_E`, each correct rollout `rollout_scale * clip(a_R, *rollout_clip)`. A problem without a correct
    rollout keeps `alpha_E = 1`. Coefficients do not sum to 1.

    Args:
        group_ids, is_expert, solvability: as in [`pool_coefficients`] ([N]).
        num_incorrect: [N] number of verified-incorrect rollouts of the row's problem.

    Returns:
        [N] coefficients, no gradient.
    """
    coef = torch.ones(group_ids.shape, dtype=torch.float32)
    for group in torch.unique(group_ids).tolist():
        rows = (group_ids == group).nonzero().flatten()
        expert_rows = rows[is_expert[rows]]
        correct = len(rows) - len(expert_rows)
        if correct == 0:
            continue
        w_expert = float(expert_weight(solvability[expert_rows[0]].float(), w_min, w_max))
        incorrect = min(int(num_incorrect[expert_rows[0]]), max_incorrect)
        rewards = torch.tensor([w_expert] + [1.0] * correct + [0.0] * incorrect)
        z = (rewards - rewards.mean()) / (rewards.std(unbiased=False) + eps)
        advantages = torch.tanh(tanh_scale * z) / (1 + correct)
        coef[expert_rows] = advantages[0]
        coef[rows[~is_expert[rows]]] = rollout_scale * advantages[1].clamp(*rollout_clip)
    return coef
