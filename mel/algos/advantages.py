"""Advantage estimators, registered by name. All take ``(rewards [N], group_ids [N], norm_by_std, eps)`` and return
one advantage per sample ``[N]`` that every token of the sample gets; an estimator ignores the arguments it has no
use for.

- ``grpo`` (Shao et al., 2024): for the G samples of one prompt with rewards r_1..r_G,
      A_i = (r_i - mean(r)) / (std(r) + eps)          (norm_by_std=True)
      A_i =  r_i - mean(r)                            (norm_by_std=False, Dr.GRPO)
  Departures from the paper: none; the std is the unbiased sample std (``torch.std`` default, as in verl's GRPO
  estimator), so a group of identical rewards gets advantage 0 exactly.
- ``reinforce_pp`` (REINFORCE++, Hu 2025): global advantage normalization, the same formula over the WHOLE batch,
  groups ignored: A_i = (r_i - mean(r)) / (std(r) + eps). A batch of identical rewards (std 0) gets zeros.
  Departures from the paper: outcome reward only, so the return of every token is the sample's reward; the paper's
  per-token KL penalty is not folded into the reward (our KL is the separate k3 loss term ``kl_coef``); the mean and
  the (unbiased) std are taken over samples, not over tokens as in OpenRLHF/verl's token-level whitening (which
  weights long samples more); ``norm_by_std=False`` centres without scaling, as for ``grpo``.
- ``rejection`` (RFT, rejection-sampling fine-tuning): A_i = 1 if r_i > 0 else 0, so that with the ``nll`` policy
  loss each passing sample is trained on by plain maximum likelihood.
"""
from __future__ import annotations

from typing import Callable

import torch

from mel.registry import Registry

AdvantageFn = Callable[..., torch.Tensor]
ADVANTAGE_ESTIMATORS: Registry[AdvantageFn] = Registry("advantage estimator")


@ADVANTAGE_ESTIMATORS.register("grpo")
def grpo_advantages(
    rewards: torch.Tensor,  # [N] one scalar reward per sample
    group_ids: torch.Tensor,  # [N] integer id of the prompt each sample answers
    norm_by_std: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:  # [N]
    """Group-normalized advantages, vectorized over groups of any (possibly unequal) sizes."""
    rewards = rewards.to(torch.float64)
    _, inverse = torch.unique(group_ids, return_inverse=True)  # [N] group index 0..K-1
    num_groups = int(inverse.max()) + 1 if inverse.numel() else 0
    counts = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, inverse, torch.ones_like(rewards))  # [K]
    sums = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, inverse, rewards)  # [K]
    means = sums / counts  # [K]
    centred = rewards - means[inverse]  # [N]
    if not norm_by_std:
        return centred.to(torch.float32)
    sq = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, inverse, centred**2)  # [K]
    # Unbiased std; a group of one sample has no spread (std 0 -> advantage 0).
    std = torch.where(counts > 1, (sq / (counts - 1).clamp(min=1)).sqrt(), torch.zeros_like(sq))  # [K]
    group_std = std[inverse]  # [N]
    scaled = torch.where(group_std > 0, centred / (group_std + eps), torch.zeros_like(centred))  # [N]
    return scaled.to(torch.float32)


@ADVANTAGE_ESTIMATORS.register("reinforce_pp")
def reinforce_pp_advantages(
    rewards: torch.Tensor,  # [N] one scalar reward per sample
    group_ids: torch.Tensor,  # [N] ignored: the normalization is over the whole batch
    norm_by_std: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:  # [N]
    """Rewards whitened over the whole batch (REINFORCE++'s global advantage normalization)."""
    rewards = rewards.to(torch.float64)  # [N]
    if rewards.numel() == 0:
        return rewards.to(torch.float32)
    centred = rewards - rewards.mean()  # [N]
    if not norm_by_std:
        return centred.to(torch.float32)
    # Unbiased std; one sample, or identical rewards, have no spread (std 0 -> advantage 0).
    std = float(centred.pow(2).sum() / (rewards.numel() - 1)) ** 0.5 if rewards.numel() > 1 else 0.0
    if std == 0.0:
        return torch.zeros_like(centred, dtype=torch.float32)  # [N]
    return (centred / (std + eps)).to(torch.float32)  # [N]


@ADVANTAGE_ESTIMATORS.register("rejection")
def rejection_advantages(
    rewards: torch.Tensor,  # [N] one scalar reward per sample
    group_ids: torch.Tensor,  # [N] ignored
    norm_by_std: bool = True,  # ignored
    eps: float = 1e-6,  # ignored
) -> torch.Tensor:  # [N]
    """RFT's rejection sampling as an advantage: 1 for a passing sample (reward > 0), 0 otherwise."""
    return (rewards > 0).to(torch.float32)  # [N]


def compute_advantages(name: str, rewards: torch.Tensor, group_ids: torch.Tensor, **kwargs) -> torch.Tensor:
    return ADVANTAGE_ESTIMATORS.get(name)(rewards, group_ids, **kwargs)
