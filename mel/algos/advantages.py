"""Advantage estimators, registered by name.

GRPO (Shao et al., 2024): for the G samples of one prompt with rewards r_1..r_G,
    A_i = (r_i - mean(r)) / (std(r) + eps)          (norm_by_std=True)
    A_i =  r_i - mean(r)                            (norm_by_std=False, Dr.GRPO)
and every token of sample i gets A_i. Departures from the paper: none; the std is the unbiased sample std
(``torch.std`` default, as in verl's GRPO estimator), so a group of identical rewards gets advantage 0 exactly.
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


def compute_advantages(name: str, rewards: torch.Tensor, group_ids: torch.Tensor, **kwargs) -> torch.Tensor:
    return ADVANTAGE_ESTIMATORS.get(name)(rewards, group_ids, **kwargs)
