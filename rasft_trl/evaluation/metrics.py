"""Scores of an evaluation run: mean accuracy over samples and the unbiased pass@k estimator.

Pure functions (standard library only). pass@k follows Chen et al. (2021), "Evaluating Large Language Models Trained
on Code", Sec. 2.1: with `n` samples of which `c` are correct,

    pass@k = 1 - C(n - c, k) / C(n, k),

computed as a product to stay exact for large `n` (their Figure 3 formulation).
"""

from __future__ import annotations

from collections.abc import Sequence


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased estimate of pass@k for one problem with `num_correct` of `num_samples` samples correct.

    Args:
        num_samples: samples drawn for the problem (`n`).
        num_correct: samples judged correct (`c`, `0 <= c <= n`).
        k: budget (`1 <= k <= n`).

    Returns:
        `1 - C(n-c, k) / C(n, k)`: the probability that at least one of `k` samples drawn without replacement from
        the `n` is correct.
    """
    if not 0 <= num_correct <= num_samples:
        raise ValueError(f"num_correct must be in [0, {num_samples}], got {num_correct}.")
    if not 1 <= k <= num_samples:
        raise ValueError(f"k must be in [1, {num_samples}], got {k}.")
    if num_samples - num_correct < k:  # every k-subset holds a correct sample
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    fail = 1.0
    for i in range(num_samples - num_correct + 1, num_samples + 1):
        fail *= 1.0 - k / i
    return 1.0 - fail


def pass_at_k_curve(correct_per_problem: Sequence[Sequence[bool]]) -> dict[int, float]:
    """Mean pass@k over problems for every `k` from 1 to the smallest sample count of any problem.

    Args:
        correct_per_problem: for each problem, the verdict (correct or not) of each of its samples.

    Returns:
        `{k: mean over problems of pass@k}`; empty when there are no problems.
    """
    if not correct_per_problem:
        return {}
    n_min = min(len(samples) for samples in correct_per_problem)
    if n_min == 0:
        raise ValueError("Every problem needs at least one sample.")
    return {
        k: sum(pass_at_k(len(s), sum(bool(x) for x in s), k) for s in correct_per_problem) / len(correct_per_problem)
        for k in range(1, n_min + 1)
    }


def mean_accuracy(correct_per_problem: Sequence[Sequence[bool]]) -> float:
    """Fraction of all samples judged correct (the paper's "mean accuracy over 16 decoding runs").

    With the same number of samples per problem this equals the mean over problems of `c / n` (= pass@1).
    """
    total = sum(len(samples) for samples in correct_per_problem)
    if total == 0:
        return 0.0
    return sum(sum(bool(x) for x in samples) for samples in correct_per_problem) / total


def accuracy_interval(
    correct_per_problem: Sequence[Sequence[bool]], confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> dict[str, float | None]:
    """Standard error and a percentile-bootstrap interval of the mean accuracy, with problems as the unit.

    The samples of one problem are not independent (they share its difficulty), so both resample problems: the
    standard error is `sd(a_i) / sqrt(n)` over the per-problem accuracies `a_i = c_i / n_i` (sample sd, `n - 1`),
    and the interval is the `(1 - confidence) / 2` and `(1 + confidence) / 2` quantiles of the mean accuracy over
    `resamples` bootstrap draws of `n` problems with replacement (seeded: the same numbers on every run).

    Returns:
        `{"stderr": ..., "ci_low": ..., "ci_high": ...}`; `None` values with fewer than two problems.
    """
    import math
    import random

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    per_problem = [(sum(bool(x) for x in s), len(s)) for s in correct_per_problem if len(s)]
    n = len(per_problem)
    if n < 2:
        return {"stderr": None, "ci_low": None, "ci_high": None}
    rates = [c / m for c, m in per_problem]
    mean = sum(rates) / n
    stderr = math.sqrt(sum((r - mean) ** 2 for r in rates) / (n - 1) / n)
    rng = random.Random(seed)
    means = sorted(  # mean accuracy over all samples of the drawn problems (= mean_accuracy of the draw)
        (lambda draw: sum(per_problem[i][0] for i in draw) / sum(per_problem[i][1] for i in draw))(
            [rng.randrange(n) for _ in range(n)]
        )
        for _ in range(resamples)
    )
    low = means[int(math.floor((1 - confidence) / 2 * (resamples - 1)))]
    high = means[int(math.ceil((1 + confidence) / 2 * (resamples - 1)))]
    return {"stderr": stderr, "ci_low": low, "ci_high": high}
