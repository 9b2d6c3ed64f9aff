"""pass@k (unbiased estimator, Chen et al. 2021) and mean accuracy on hand-computed cases."""

from math import comb

import pytest

from rasft_trl.evaluation.metrics import mean_accuracy, pass_at_k, pass_at_k_curve


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (5, 2, 1, 2 / 5),  # c / n
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (5, 2, 3, 1 - 1 / 10),  # 1 - C(3,3)/C(5,3) = 1 - 1/10
        (5, 2, 4, 1.0),  # n - c = 3 < 4: every 4-subset holds a correct sample
        (5, 0, 3, 0.0),
        (16, 16, 1, 1.0),
        (16, 1, 8, 0.5),  # 1 - C(15,8)/C(16,8) = 1 - 8/16
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    ],
)
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_the_binomial_formula_on_a_grid():
    for n in range(1, 21):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - comb(n - c, k) / comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12), (n, c, k)


def test_pass_at_k_is_stable_for_large_n():
    # comb(1000, 500) overflows a float; the product form does not
    assert pass_at_k(1000, 1, 500) == pytest.approx(0.5)
    assert 0 < pass_at_k(1000, 3, 10) < 1


@pytest.mark.parametrize("n, c, k", [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_pass_at_k_rejects_impossible_inputs(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_curve_and_mean_accuracy_over_problems():
    # problem A: 1 of 2 correct, problem B: 2 of 2 -> pass@1 = (0.5 + 1) / 2, pass@2 = (1 + 1) / 2
    verdicts = [[True, False], [True, True]]
    assert pass_at_k_curve(verdicts) == {1: pytest.approx(0.75), 2: pytest.approx(1.0)}
    assert mean_accuracy(verdicts) == pytest.approx(0.75)
    # unequal sample counts: k only up to the smallest n; accuracy is over samples
    assert set(pass_at_k_curve([[True], [False, False, True]])) == {1}
    assert mean_accuracy([[True], [False, False, True]]) == pytest.approx(2 / 4)
    assert pass_at_k_curve([]) == {} and mean_accuracy([]) == 0.0


def test_accuracy_interval_by_hand_and_against_the_normal_approximation():
    import math
    import random

    from rasft_trl.evaluation.metrics import accuracy_interval

    # per-problem accuracies 0.5, 1, 0: mean 0.5, sample sd 0.5, standard error 0.5 / sqrt(3)
    hand = accuracy_interval([[True, False], [True, True], [False, False]])
    assert hand["stderr"] == pytest.approx(0.5 / math.sqrt(3))
    assert 0 <= hand["ci_low"] <= 0.5 <= hand["ci_high"] <= 1
    same = accuracy_interval([[True, False]] * 5)
    assert same == {"stderr": 0.0, "ci_low": 0.5, "ci_high": 0.5}
    assert accuracy_interval([[True]]) == {"stderr": None, "ci_low": None, "ci_high": None}
    # 400 problems, one sample each at p = 0.3: the bootstrap interval is close to mean +/- 1.96 s.e.
    rng = random.Random(1)
    draws = [[rng.random() < 0.3] for _ in range(400)]
    result = accuracy_interval(draws)
    mean = sum(d[0] for d in draws) / 400
    assert result["stderr"] == pytest.approx(math.sqrt(mean * (1 - mean) / 399), rel=1e-9)
    assert result["ci_low"] == pytest.approx(mean - 1.96 * result["stderr"], abs=0.01)
    assert result["ci_high"] == pytest.approx(mean + 1.96 * result["stderr"], abs=0.01)
    assert accuracy_interval(draws) == result  # seeded
