"""What RASFT's mechanism did in one run, read from a Trainer's `log_history` (shared by the demo's report and the
study tool)."""

from __future__ import annotations

import math
from typing import Any


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
    """Rollout tokens generated over the run: `completions/mean_length` x `rollouts/drawn` summed over the logged
    steps (the compute every rollout method pays, whether or not it trains on the rollout); None when no step logs
    both (expert-only methods, or a log written before `rollouts/drawn` existed)."""
    steps = [e for e in training_logs(log_history) if "completions/mean_length" in e and "rollouts/drawn" in e]
    if not steps:
        return None
    return sum(float(e["completions/mean_length"]) * float(e["rollouts/drawn"]) for e in steps)
