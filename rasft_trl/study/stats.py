"""Statistics of a study: mean and 95% Student-t interval over seeds, and paired differences by seed."""

from __future__ import annotations

import math

#: two-sided 95% Student-t quantiles by degrees of freedom (1.96 beyond the table)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 19: 2.093, 29: 2.045}


def t95(degrees_of_freedom: int) -> float:
    """Two-sided 95% Student-t quantile (the next smaller tabulated degree of freedom: conservative)."""
    known = [d for d in T95 if d <= degrees_of_freedom]
    return T95[max(known)] if known else float("nan")


def mean_interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its two-sided 95% Student-t interval over `values` (0 for a single value)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_interval needs at least one value.")
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, t95(n - 1) * sd / math.sqrt(n)


def paired_difference(a: dict[int, float], b: dict[int, float]) -> dict | None:
    """`a - b` paired by seed (same seed = same initialization, data order and sampling): mean, 95% interval
    half-width, the seeds used and the per-seed differences; `None` when no seed has both."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    diffs = [a[s] - b[s] for s in seeds]
    mean, half = mean_interval(diffs)
    return {"mean": mean, "ci95": half, "seeds": seeds, "per_seed": diffs,
            "excludes_zero": len(seeds) > 1 and abs(mean) > half}
