import math

import pytest
import torch

from rasft_trl import losses


def test_inverse_sequence_ratio_hand_derived():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 0, 0]])
    logp = torch.tensor([[-1.0, -2.0, 9.0], [-0.5, -0.5, -0.5], [-30.0, 0, 0], [0.0, 0, 0]])
    ref = torch.tensor([[-1.5, -2.5, 9.0], [0.0, 0.0, 0.0], [0.0, 0, 0], [-30.0, 0, 0]])
    # row 0: mean(-0.5, -0.5) = -0.5 -> exp = 0.60653 (inside [0.4, 1.1])
    # row 1: mean(0.5, 0.5, 0.5) = 0.5 -> exp = 1.64872 -> clipped to 1.1
    # row 2: 30 -> clamped to 20 -> exp(20) = 4.85165e8 -> clipped to 1.1
    # row 3: -30 -> clamped to -20 -> exp(-20) = 2.06115e-9 -> clipped to 0.4
    rho = losses.inverse_sequence_ratio(logp, ref, mask, clip=(0.4, 1.1))
    assert torch.allclose(rho, torch.tensor([math.exp(-0.5), 1.1, 1.1, 0.4]), atol=1e-6)
    raw = losses.inverse_sequence_ratio(logp, ref, mask, clip=None)
    assert torch.allclose(raw, torch.tensor([math.exp(-0.5), math.exp(0.5), math.exp(20), math.exp(-20)]), rtol=1e-5)
    low, high = losses.ratio_clip_fractions(raw, (0.4, 1.1))
    assert low.item() == pytest.approx(0.25) and high.item() == pytest.approx(0.5)


def test_inverse_sequence_ratio_carries_no_gradient():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    rho = losses.inverse_sequence_ratio(logp, torch.zeros(1, 2), torch.ones(1, 2))
    assert not rho.requires_grad


def test_expert_weight():
    # w_max - s (w_max - w_min) with (1, 3): s=0 -> 3, s=0.5 -> 2, s=1 -> 1
    assert torch.allclose(losses.expert_weight(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([3.0, 2.0, 1.0]))
    # (w_min, w_max) = (0.5, 2.5), s = 0.25 -> 2.5 - 0.25 * 2 = 2.0
    assert losses.expert_weight(torch.tensor(0.25), 0.5, 2.5).item() == pytest.approx(2.0)


def test_pool_coefficients_hand_derived():
    group = torch.tensor([0, 0, 0, 1, 2, 2])
    is_expert = torch.tensor([True, False, False, True, True, False])
    s = torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.0, 2 / 3, 2 / 3])
    coef = losses.pool_coefficients(group, is_expert, s, w_min=1.0, w_max=3.0, w_rollout=1.0)
    # pool 0: w_E = 3 - (1/3) * 2 = 7/3, rollouts 1, 1 -> total 13/3 -> [7/13, 3/13, 3/13]
    # pool 1: expert alone -> 1
    # pool 2: w_E = 3 - (2/3) * 2 = 5/3, rollout 1 -> total 8/3 -> [5/8, 3/8]
    expected = torch.tensor([7 / 13, 3 / 13, 3 / 13, 1.0, 5 / 8, 3 / 8])
    assert torch.allclose(coef, expected, atol=1e-6)
    # every pool sums to 1
    sums = torch.zeros(3).index_add_(0, group, coef)
    assert torch.allclose(sums, torch.ones(3))


def test_pool_coefficients_non_contiguous_groups_and_rollout_weight():
    group = torch.tensor([5, 9, 5])
    is_expert = torch.tensor([True, True, False])
    s = torch.tensor([0.0, 1.0, 0.0])
    coef = losses.pool_coefficients(group, is_expert, s, w_min=1.0, w_max=3.0, w_rollout=2.0)
    # group 5: w_E = 3, rollout 2 -> [3/5, 2/5]; group 9: alone -> 1
    assert torch.allclose(coef, torch.tensor([0.6, 1.0, 0.4]))


def test_pool_coefficients_without_adaptivity():
    group = torch.tensor([0, 0, 0, 1, 1])
    is_expert = torch.tensor([True, False, False, True, False])
    s = torch.tensor([2 / 3, 2 / 3, 2 / 3, 0.0, 0.0])
    coef = losses.pool_coefficients(group, is_expert, s, adaptive=False)
    # every member weighs w_rollout = 1: pool 0 -> 1/3 each, pool 1 -> 1/2 each
    assert torch.allclose(coef, torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.5, 0.5]))


def test_token_factors():
    logp = torch.log(torch.tensor([[0.5, 0.05]]))
    assert torch.allclose(losses.token_factor(logp, "dft"), torch.tensor([[0.5, 0.05]]))
    assert torch.equal(losses.token_factor(logp, "sft"), torch.ones(1, 2))
    assert torch.equal(losses.token_factor(logp, "profit", 0.1), torch.tensor([[1.0, 0.0]]))
    with pytest.raises(ValueError, match="'bogus'"):
        losses.token_factor(logp, "bogus")


LOG_HALF, LOG_QUARTER = math.log(0.5), math.log(0.25)


@pytest.mark.parametrize(
    "factor, expected",
    [
        # dft: -(0.5 * log 0.5 + 0.25 * log 0.25) / 2 = (0.34657 + 0.34657) / 2 = 0.34657
        ("dft", -(0.5 * LOG_HALF + 0.25 * LOG_QUARTER) / 2),
        # sft: -(log 0.5 + log 0.25) / 2 = (0.69315 + 1.38629) / 2 = 1.03972
        ("sft", -(LOG_HALF + LOG_QUARTER) / 2),
        # profit (0.3): only the first token survives: -log 0.5 / 2 = 0.34657
        ("profit", -LOG_HALF / 2),
    ],
)
def test_rasft_loss_token_factors_without_ratio(factor, expected):
    logp = torch.tensor([[LOG_HALF, LOG_QUARTER]])
    loss = losses.rasft_loss(logp, None, torch.ones(1, 2), torch.ones(1), token_factor=factor, profit_threshold=0.3)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_rasft_loss_with_ratio_coefficients_and_normalizer():
    logp = torch.tensor([[LOG_HALF, LOG_QUARTER, 0.0], [LOG_HALF, 0.0, 0.0]])
    ref = torch.tensor([[math.log(0.25), math.log(0.125), 0.0], [LOG_HALF, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    coef = torch.tensor([0.6, 0.4])
    # row 0: rho = exp(mean(log .5, log .5)) = 0.5; dft sum = 0.5*log.5 + 0.25*log.25 = -0.69315
    #        contribution = 0.6 * 0.5 * -0.69315 = -0.20794
    # row 1: rho = exp(0) = 1; dft sum = 0.5 * log .5 = -0.34657; contribution = 0.4 * -0.34657 = -0.13863
    # token mean over 3 tokens: (0.20794 + 0.13863) / 3 = 0.11552; with num_items_in_batch = 10: 0.034657
    loss = losses.rasft_loss(logp, ref, mask, coef)
    assert loss.item() == pytest.approx((0.6 * 0.5 * 0.693147 + 0.4 * 0.346574) / 3, rel=1e-5)
    loss10 = losses.rasft_loss(logp, ref, mask, coef, num_items_in_batch=10)
    assert loss10.item() == pytest.approx((0.6 * 0.5 * 0.693147 + 0.4 * 0.346574) / 10, rel=1e-5)
    # a ratio outside the clip range is clipped: ref far above policy -> rho clipped to 1.1
    loss_clip = losses.rasft_loss(logp[:1], ref[:1] + 5.0, mask[:1], torch.ones(1))
    assert loss_clip.item() == pytest.approx(1.1 * 0.693147 / 2, rel=1e-5)


def test_rasft_loss_gradient_flows_only_through_logp():
    logp = torch.tensor([[LOG_HALF, LOG_QUARTER]], requires_grad=True)
    ref = torch.tensor([[math.log(0.25), math.log(0.125)]])
    coef = torch.tensor([0.8], requires_grad=True)
    loss = losses.rasft_loss(logp, ref, torch.ones(1, 2), coef)
    loss.backward()
    # d/dlogp_t = -coef * sg(p_t) * sg(rho) / Z = -0.8 * [0.5, 0.25] * 0.5 / 2 = [-0.1, -0.05]
    assert torch.allclose(logp.grad, torch.tensor([[-0.1, -0.05]]), atol=1e-6)
    assert coef.grad is None or torch.all(coef.grad == 0)


def test_sequence_mean_coefficients():
    coef = torch.tensor([0.5, 0.5])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    assert torch.allclose(losses.sequence_mean_coefficients(coef, mask), torch.tensor([0.125, 0.25]))


def test_sequence_nll_and_solvability():
    logp = torch.tensor([[-1.0, -3.0, 5.0]])
    assert losses.sequence_nll(logp, torch.tensor([[1, 1, 0]])).item() == pytest.approx(2.0)
    correct = torch.tensor([[True, False, True], [False, False, False]])
    assert torch.allclose(losses.solvability(correct), torch.tensor([2 / 3, 0.0]))


def test_chunked_reverse_kl_matches_dense_and_its_gradient():
    torch.manual_seed(0)
    N, T, H, V = 2, 5, 8, 11
    hidden = torch.randn(N, T, H, requires_grad=True)
    ref_hidden = torch.randn(N, T, H)
    weight = torch.randn(V, H, requires_grad=True)
    ref_weight = torch.randn(V, H)
    mask = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    kl = losses.chunked_reverse_kl(hidden, ref_hidden, lambda h: h @ weight.T, ref_weight, mask, chunk_size=2)
    # dense reference: sum_v q (log q - log p) at every position, masked
    log_p = (hidden @ weight.T).log_softmax(-1)
    log_q = (ref_hidden @ ref_weight.T).log_softmax(-1)
    dense = (log_q.exp() * (log_q - log_p)).sum(-1) * mask
    assert torch.allclose(kl, dense, atol=1e-5)
    assert torch.all(kl[mask.bool()] > 0) and torch.all(kl[~mask.bool()] == 0)
    kl.sum().backward()
    g_hidden, g_weight = hidden.grad.clone(), weight.grad.clone()
    hidden.grad, weight.grad = None, None
    dense.sum().backward()
    assert torch.allclose(g_hidden, hidden.grad, atol=1e-5) and torch.allclose(g_weight, weight.grad, atol=1e-5)


def test_chunked_reverse_kl_is_zero_for_identical_models():
    hidden = torch.randn(1, 4, 6)
    weight = torch.randn(9, 6)
    kl = losses.chunked_reverse_kl(hidden, hidden, lambda h: h @ weight.T, weight, torch.ones(1, 4))
    assert torch.allclose(kl, torch.zeros(1, 4), atol=1e-6)


def test_group_advantage_coefficients_hand_derived():
    # one problem, s = 1/3 (1 of 3 correct), 2 incorrect: w_E = 3 - (1/3) * 2 = 7/3
    # rewards [7/3, 1, 0, 0]: mean 0.83333, deviations [1.5, 0.16667, -0.83333, -0.83333],
    # population std sqrt(3.66667 / 4) = 0.95743; z = [1.56670, 0.17408, -0.87039, -0.87039]
    # tanh(0.4 z) = [0.55576, 0.06952, ...]; / (1 + 1): expert 0.27788, rollout 0.03476
    # rollout: clip to [0.02, 0.15] -> 0.03476, * 0.25 = 0.008690
    # second problem: no correct rollout -> expert 1
    group = torch.tensor([0, 0, 1])
    is_expert = torch.tensor([True, False, True])
    s = torch.tensor([1 / 3, 1 / 3, 0.0])
    wrong = torch.tensor([2, 2, 3])
    coef = losses.group_advantage_coefficients(group, is_expert, s, wrong)
    assert coef.tolist() == pytest.approx([0.27788, 0.008690, 1.0], abs=1e-5)
    # many incorrect rollouts are capped at 3 in the group
    capped = losses.group_advantage_coefficients(group, is_expert, s, torch.tensor([9, 9, 3]))
    three = losses.group_advantage_coefficients(group, is_expert, s, torch.tensor([3, 3, 3]))
    assert torch.allclose(capped, three)
