"""Contrastive pairs (MEL section 3.2; MEL-Code section 3.2): per prompt, partition the group into Y+ (passed) and
Y- (failed); when both are non-empty draw (y+, y-) pairs from Y+ x Y- without replacement.

- ``pairs_per_prompt = 1`` is MEL-Code's single sampled pair; larger values draw several distinct pairs, as MEL's
  candidate pool P_x does (MEL uses every pair it can afford; we cap the count to bound the extraction cost).
- Without contrast (the ``no_contrastive`` ablation, the Self-Critique baseline) the draw is of failing rollouts
  alone (y+ is None), from every group that has one.
- p_pair = share of prompts whose group has both Y+ and Y- (MEL-Code section 4.2).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Pair:
    prompt_index: int
    pair_index: int  # 0.. within the prompt
    plus: int | None  # sample index of y+ (None without contrast)
    minus: int  # sample index of y-


def draw_pairs(passed: Sequence[bool], prompt_index: int, k: int, rng: random.Random, contrastive: bool = True
               ) -> list[Pair]:
    """Up to ``k`` distinct pairs (or failing samples) from one group, in a seeded random order."""
    plus = [i for i, p in enumerate(passed) if p]
    minus = [i for i, p in enumerate(passed) if not p]
    if contrastive:
        if not plus or not minus:
            return []
        candidates: list[tuple[int | None, int]] = [(a, b) for a in plus for b in minus]
    else:
        candidates = [(None, b) for b in minus]
    chosen = rng.sample(candidates, min(k, len(candidates)))
    return [Pair(prompt_index, j, a, b) for j, (a, b) in enumerate(chosen)]


def group_outcomes(prompt_index: Sequence[int], passed: Sequence[bool]) -> dict[int, list[bool]]:
    """``{prompt_index: [passed of sample 0, 1, ...]}`` (samples in the order given)."""
    groups: dict[int, list[bool]] = {}
    for g, p in zip(prompt_index, passed):
        groups.setdefault(g, []).append(bool(p))
    return groups


def p_pair(groups: dict[int, list[bool]]) -> float:
    """Share of prompts with both a passing and a failing sample."""
    return sum(any(v) and not all(v) for v in groups.values()) / max(len(groups), 1)
