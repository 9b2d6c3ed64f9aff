"""What RASFT's mechanism did in one run, read from a Trainer's `log_history` (shared by the demo's report and the
study tool)."""

from __future__ import annotations

import math
from typing import Any

GENERATED = "rollouts/generated_tokens"  # running total of rollout tokens generated (all processes)


def training_logs(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-step training entries of a Trainer's `log_history` (those with a `loss`), summary rows dropped."""
    return [entry for entry in log_history if "loss" in entry and "step" in entry]


def series(log_history: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """`(steps, values)` of one logged metric; entries without it (or with a non-finite value) are skipped."""
    steps, values = [], []
    for entry in training_logs(log_history):
        value = entry.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            steps.append(int(entry["step"]))
            values.append(float(value))
    return steps, values


def window_means(log_history: list[dict[str, Any]], key: str, fraction: float = 0.2) -> tuple[float, float] | None:
    """Mean of a logged metric over the first and over the last `fraction` of the training steps (at least one
    step each; steps that did not log it are skipped). `None` when the metric was never logged."""
    _, values = series(log_history, key)
    if not values:
        return None
    n = max(1, int(len(values) * fraction))
    return sum(values[:n]) / n, sum(values[-n:]) / n


def mechanism_summary(log_history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What RASFT's mechanism did in one run, from its log history; `None` for a run that drew no rollouts (SRFT's
    and GRPO's logs give the rollout numbers; their expert-coefficient entries are `None`).

    Keys: rollout accuracy and mean expert coefficient over the first / last fifth of the steps and over all steps,
    the fewest problems routed to rollouts in any step, and the correct rollouts used as training targets.
    """
    steps = training_logs(log_history)
    if not any("rollouts/problems" in entry or "rollouts/drawn" in entry for entry in steps):
        return None
    _, accuracy = series(log_history, "rollouts/accuracy")
    _, routed = series(log_history, "rollouts/problems")
    _, targets = series(log_history, "rollouts/targets")
    _, truncated = series(log_history, "rollouts/truncated")
    _, drawn = series(log_history, "rollouts/drawn")
    return {
        "steps": len(steps),
        "rollout_accuracy_first_last": window_means(log_history, "rollouts/accuracy"),
        "rollout_accuracy_mean": sum(accuracy) / len(accuracy) if accuracy else None,
        "expert_coef_first_last": window_means(log_history, "pool/expert_coef_mean"),
        "solvability_first_last": window_means(log_history, "pool/mean_solvability"),
        "min_problems_routed": min(routed) if len(routed) == len(steps) else 0,
        "rollouts_drawn": sum(drawn),
        "rollout_targets": sum(targets),
        "rollouts_truncated": sum(truncated),
    }


def rollout_tokens(log_history: list[dict[str, Any]]) -> float:
    """Rollout tokens trained on as targets over the run (`tokens/rollout` summed over the logged steps: RASFT's
    correct pool members; 0 for trainers that do not log it)."""
    return sum(entry.get("tokens/rollout", 0) for entry in training_logs(log_history))


def generated_tokens(log_history: list[dict[str, Any]]) -> float | None:
    """Rollout tokens generated over the run (the compute every rollout method pays, whether or not it trains on the
    rollout): the last logged running total `rollouts/generated_tokens`; for a log written before that key existed,
    `completions/mean_length` x `rollouts/drawn` summed over the logged steps (right only when every optimizer step
    was logged, `logging_steps=1`). None when no step logs either (expert-only methods)."""
    steps = training_logs(log_history)
    totals = [e[GENERATED] for e in steps if isinstance(e.get(GENERATED), (int, float))]
    if totals:
        return float(totals[-1])
    steps = [e for e in steps if "completions/mean_length" in e and "rollouts/drawn" in e]
    if not steps:
        return None
    products = (float(e["completions/mean_length"]) * float(e["rollouts/drawn"]) for e in steps)
    return sum(p for p in products if math.isfinite(p))  # NaN: an interval that drew no rollout


def grpo_rollout_fields(entry: dict[str, Any], completions_per_step: int, previous: dict[str, Any] | None
                        ) -> dict[str, Any]:
    """The rollout keys the RASFT-family trainers log, for one training entry of TRL's GRPOTrainer (which logs
    none of them), so a study compares GRPO's compute with theirs:

    - `rollouts/drawn`: the completions of one optimizer step (per-device batch x accumulation x processes);
    - `rollouts/accuracy`: GRPO's mean `reward` (the fraction verified correct when the verifier is the only reward);
    - `rollouts/generated_tokens`: running total, `previous`'s plus `completions/mean_length` x drawn x the optimizer
      steps since `previous` (the training entry before this one; None for the first). GRPO's logged mean length
      is the interval's mean over equally sized generation batches, so the product is the interval's tokens.

    Keys the entry already has are not returned."""
    steps = int(entry.get("step", 0)) - int(previous.get("step", 0) if previous else 0)
    total = float(previous.get(GENERATED, 0.0)) if previous else 0.0
    length = entry.get("completions/mean_length")
    if isinstance(length, (int, float)) and math.isfinite(length):
        total += float(length) * completions_per_step * max(steps, 0)
    fields: dict[str, Any] = {"rollouts/drawn": completions_per_step, GENERATED: total}
    if "reward" in entry:
        fields["rollouts/accuracy"] = entry["reward"]
    return {key: value for key, value in fields.items() if key not in entry}
