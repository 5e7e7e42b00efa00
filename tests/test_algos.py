"""The RL math (GRPO, REINFORCE++, RFT) against values worked out by hand, and vectorized code against slow loop
references."""
from __future__ import annotations

import math

import pytest
import torch

from mel.algos import (
    ADVANTAGE_ESTIMATORS,
    BASE_ALGORITHMS,
    POLICY_LOSSES,
    BaseAlgorithm,
    aggregate_loss,
    clipped_policy_loss,
    compute_advantages,
    grpo_advantages,
    kl_k3,
    loss_token_weights,
    nll_policy_loss,
    reinforce_pp_advantages,
    rejection_advantages,
)


def test_grpo_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2])
    adv = grpo_advantages(rewards, groups, norm_by_std=True, eps=0.0)
    # group 0: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = sqrt(1/3); (1 - 0.5) / sqrt(1/3) = sqrt(3)/2
    h = math.sqrt(3) / 2
    assert adv.tolist() == pytest.approx([h, -h, -h, h, 0, 0, 0, 0], abs=1e-6)
    dr = grpo_advantages(rewards, groups, norm_by_std=False)
    assert dr.tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0], abs=1e-7)


def test_grpo_advantages_match_loop_reference():
    gen = torch.Generator().manual_seed(0)
    rewards = torch.randint(0, 2, (40,), generator=gen).float() + torch.rand(40, generator=gen)
    groups = torch.randint(0, 7, (40,), generator=gen) * 3  # ids need not be contiguous
    vectorized = grpo_advantages(rewards, groups, norm_by_std=True)
    for i in range(40):  # slow, readable reference
        members = [rewards[j].item() for j in range(40) if groups[j] == groups[i]]
        mean = sum(members) / len(members)
        std = math.sqrt(sum((m - mean) ** 2 for m in members) / (len(members) - 1)) if len(members) > 1 else 0.0
        assert vectorized[i].item() == pytest.approx((rewards[i].item() - mean) / (std + 1e-6), rel=1e-5, abs=1e-6)


def test_unknown_estimator_lists_known_ones():
    with pytest.raises(KeyError, match="known: grpo"):
        compute_advantages("nope", torch.zeros(2), torch.zeros(2))


def test_reinforce_pp_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0])
    # whole batch: mean 0.6, unbiased std sqrt((3 * 0.4^2 + 2 * 0.6^2) / 4) = sqrt(0.3)
    s = math.sqrt(0.3)
    expected = [0.4 / s, -0.6 / s, -0.6 / s, 0.4 / s, 0.4 / s]
    adv = reinforce_pp_advantages(rewards, torch.tensor([0, 0, 1, 1, 1]), norm_by_std=True, eps=0.0)
    assert adv.tolist() == pytest.approx(expected, abs=1e-6)
    # groups are ignored: GRPO would give group 1 = [0, 1, 1] its own normalization
    other_groups = compute_advantages("reinforce_pp", rewards, torch.tensor([3, 1, 4, 1, 5]), eps=0.0)
    assert other_groups.tolist() == pytest.approx(expected, abs=1e-6)
    with_eps = reinforce_pp_advantages(rewards, torch.zeros(5), eps=0.1)
    assert with_eps[0].item() == pytest.approx(0.4 / (s + 0.1), abs=1e-6)
    centred = reinforce_pp_advantages(rewards, torch.zeros(5), norm_by_std=False)
    assert centred.tolist() == pytest.approx([0.4, -0.6, -0.6, 0.4, 0.4], abs=1e-6)


@pytest.mark.parametrize("rewards", [[1.0, 1.0, 1.0], [0.0, 0.0], [0.7]])
def test_reinforce_pp_advantages_without_spread_are_zero(rewards):
    adv = reinforce_pp_advantages(torch.tensor(rewards), torch.zeros(len(rewards)))
    assert adv.tolist() == [0.0] * len(rewards)


def test_rejection_advantages_by_hand():
    adv = rejection_advantages(torch.tensor([1.0, 0.0, -1.0, 0.5, 1e-9]), torch.tensor([0, 0, 1, 1, 2]))
    assert adv.tolist() == [1.0, 0.0, 0.0, 1.0, 1.0]
    assert adv.dtype == torch.float32


def test_advantage_estimators_are_registered():
    assert ADVANTAGE_ESTIMATORS.names() == ["grpo", "reinforce_pp", "rejection"]


def test_base_algorithms():
    assert BASE_ALGORITHMS.get("grpo") == BaseAlgorithm("grpo", "clipped", passing_only=False)
    assert BASE_ALGORITHMS.get("reinforce_pp") == BaseAlgorithm("reinforce_pp", "clipped", passing_only=False)
    assert BASE_ALGORITHMS.get("rft") == BaseAlgorithm("rejection", "nll", passing_only=True)
    for name in BASE_ALGORITHMS:  # every part names a registered piece
        algo = BASE_ALGORITHMS.get(name)
        assert algo.advantage in ADVANTAGE_ESTIMATORS and algo.policy_loss in POLICY_LOSSES


def test_unknown_base_algorithm_lists_known_ones():
    with pytest.raises(KeyError, match="known: grpo, reinforce_pp, rft"):
        BASE_ALGORITHMS.get("ppo")


def test_nll_policy_loss_by_hand():
    logprobs = torch.tensor([[-1.0, -2.0], [-0.5, -4.0]], requires_grad=True)
    old = torch.tensor([[-9.0, 9.0], [0.0, 0.0]])  # ignored: no ratio
    loss, clip_frac = nll_policy_loss(logprobs, old, torch.tensor([1.0, 0.0]), torch.ones(2, 2), clip_eps=0.2)
    assert loss.tolist() == [[1.0, 2.0], [0.0, 0.0]]
    assert clip_frac.item() == 0.0
    loss.sum().backward()
    assert logprobs.grad.tolist() == [[-1.0, -1.0], [0.0, 0.0]]  # d(-A logp)/dlogp = -A
    assert POLICY_LOSSES.get("nll") is nll_policy_loss
    assert POLICY_LOSSES.get("clipped") is clipped_policy_loss


def test_clipped_policy_loss_by_hand():
    old = torch.zeros(2, 2)
    logprobs = torch.tensor([[0.1, 0.3], [-0.3, 0.3]])
    adv = torch.tensor([1.0, -1.0])
    mask = torch.ones(2, 2)
    loss, clip_frac = clipped_policy_loss(logprobs, old, adv, mask, clip_eps=0.2)
    # A=+1: ratio e^0.1 inside the range -> -e^0.1; ratio e^0.3 = 1.3499 -> clipped to 1.2 -> -1.2
    # A=-1: ratio e^-0.3 = 0.7408 -> min(-0.7408, -0.8) = -0.8 -> loss 0.8 (clipped);
    #       ratio e^0.3 -> min(-1.3499, -1.2) = -1.3499 -> loss 1.3499 (unclipped, the pessimistic side)
    expected = torch.tensor([[-math.exp(0.1), -1.2], [0.8, math.exp(0.3)]])
    assert torch.allclose(loss, expected, atol=1e-6)
    assert clip_frac.item() == pytest.approx(0.5)


def test_policy_gradient_at_ratio_one_is_minus_advantage_times_score():
    logprobs = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    loss, _ = clipped_policy_loss(logprobs, logprobs.detach(), torch.tensor([0.7]), torch.ones(1, 2))
    loss.sum().backward()
    assert logprobs.grad[0].tolist() == pytest.approx([-0.7, -0.7])


def test_kl_k3_by_hand():
    kl = kl_k3(torch.tensor([[-1.0, -1.0]]), torch.tensor([[-2.0, -1.0]]))
    assert kl[0].tolist() == pytest.approx([math.exp(-1) + 1 - 1, 0.0], abs=1e-7)


def test_kl_k3_clamp_bounds_the_estimate_and_its_gradient():
    """ref - logp = 4: k3 = e^4 - 5 = 49.6; clamped at 10 (verl's low_var_kl bound) it is 10 with no gradient; a
    token under the bound is unchanged, gradient included."""
    logprobs = torch.tensor([[-1.0, -1.0]], requires_grad=True)
    ref = torch.tensor([[3.0, -1.5]])
    kl = kl_k3(logprobs, ref, clamp=10.0)
    assert kl[0].tolist() == pytest.approx([10.0, math.exp(-0.5) + 0.5 - 1], abs=1e-6)
    assert kl_k3(logprobs, ref)[0, 0].item() == pytest.approx(math.exp(4) - 5, abs=1e-4)
    kl.sum().backward()
    assert logprobs.grad[0].tolist() == pytest.approx([0.0, 1 - math.exp(-0.5)], abs=1e-6)  # d/dlogp: 1 - e^(r)


@pytest.mark.parametrize("mode,expected", [
    ("token-mean", 15 / 5),
    ("seq-mean-token-mean", (6 / 3 + 9 / 2) / 2),
    ("seq-mean-token-sum-norm", 15 / (2 * 4)),
])
def test_loss_aggregation_by_hand(mode, expected):
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    assert aggregate_loss(loss, mask, mode, max_len=4).item() == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_micro_batch_weights_sum_to_the_whole_batch_loss(mode):
    gen = torch.Generator().manual_seed(1)
    loss = torch.randn(6, 5, generator=gen)
    mask = (torch.rand(6, 5, generator=gen) > 0.3).float()
    mask[:, 0] = 1
    whole = aggregate_loss(loss, mask, mode, max_len=5)
    parts = sum(
        (loss[s] * loss_token_weights(mode, mask[s], 6, float(mask.sum()), 5)).sum()
        for s in (slice(0, 2), slice(2, 5), slice(5, 6))
    )
    assert parts.item() == pytest.approx(whole.item(), rel=1e-6)


def test_loss_matches_loop_reference():
    """The whole vectorized loss (clip + k3 + seq-mean-token-mean) against a per-token Python loop."""
    gen = torch.Generator().manual_seed(2)
    n, length, eps, beta = 4, 6, 0.2, 0.1
    lp = torch.randn(n, length, generator=gen) * 0.2 - 1
    old = lp + torch.randn(n, length, generator=gen) * 0.2
    ref = lp + torch.randn(n, length, generator=gen) * 0.2
    adv = torch.randn(n, generator=gen)
    mask = (torch.rand(n, length, generator=gen) > 0.2).float()
    mask[:, 0] = 1
    pg, _ = clipped_policy_loss(lp, old, adv, mask, eps)
    vectorized = aggregate_loss(pg + beta * kl_k3(lp, ref), mask, "seq-mean-token-mean")
    total = 0.0
    for i in range(n):
        seq, count = 0.0, 0
        for t in range(length):
            if mask[i, t] == 0:
                continue
            r = math.exp(lp[i, t] - old[i, t])
            a = adv[i].item()
            surrogate = min(r * a, max(min(r, 1 + eps), 1 - eps) * a)
            d = (ref[i, t] - lp[i, t]).item()
            seq += -surrogate + beta * (math.exp(d) - d - 1)
            count += 1
        total += seq / count
    assert vectorized.item() == pytest.approx(total / n, rel=1e-5)
