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
