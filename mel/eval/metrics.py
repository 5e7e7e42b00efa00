"""The papers' evaluation metrics, computed from per-sample pass/fail outcomes.

- **Pass@1 (greedy)**: one sample per problem at temperature 0; a problem scores 1 if it passed.
- **Avg@n**: n samples per problem at a set temperature (papers: n = 8, T = 0.6); a problem scores c / n, the share
  of its samples that passed (the unbiased estimate of sampled pass@1).
- **Pass@k**: the unbiased estimator of Chen et al. (2021, "Evaluating Large Language Models Trained on Code"):
  from n >= k samples of which c passed, ``pass@k = 1 - C(n - c, k) / C(n, k)``, the probability that at least one
  of k samples drawn without replacement from the n passes. Computed exactly with integer binomials.

A benchmark's score is the mean of its problems' scores (`benchmark_scores`); the per-problem values are kept for the
paired bootstrap (`mel.eval.stats`).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from math import comb


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with ``c`` passing samples out of ``n`` (needs ``0 <= c <= n`` and
    ``1 <= k <= n``)."""
    if not (0 <= c <= n):
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got c={c}, n={n}")
    if not (1 <= k <= n):
        raise ValueError(f"pass_at_k: need 1 <= k <= n (n={n} samples), got k={k}")
    if n - c < k:
        return 1.0
    return float(1 - Fraction(comb(n - c, k), comb(n, k)))


@dataclass(frozen=True)
class Sampling:
    """How a benchmark is sampled. ``temperature == 0`` is greedy decoding (one sample, metric ``pass@1``); otherwise
    ``samples`` per problem, with metrics ``avg@<samples>`` and ``pass@k`` for each k in ``ks`` (1 < k <= samples)."""

    temperature: float = 0.0
    samples: int = 1
    ks: tuple[int, ...] = ()
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"sampling temperature must be >= 0, got {self.temperature}")
        if self.samples < 1:
            raise ValueError(f"sampling needs at least one sample per problem, got {self.samples}")
        if self.greedy and self.samples != 1:
            raise ValueError(f"greedy sampling (temperature 0) takes one sample per problem, not {self.samples}")
        bad = [k for k in self.ks if not 1 <= k <= self.samples]
        if bad:
            raise ValueError(f"pass@k needs 1 <= k <= samples ({self.samples}); got k = {bad}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def name(self) -> str:
        """``greedy`` or e.g. ``t0.6-n8`` (``-p0.95`` added when top_p < 1)."""
        if self.greedy:
            return "greedy"
        top_p = f"-p{self.top_p:g}" if self.top_p < 1 else ""
        return f"t{self.temperature:g}-n{self.samples}{top_p}"

    @property
    def metrics(self) -> tuple[str, ...]:
        if self.greedy:
            return ("pass@1",)
        return (f"avg@{self.samples}", *(f"pass@{k}" for k in sorted(set(self.ks)) if k > 1))


def problem_metrics(sampling: Sampling, n: int, c: int) -> dict[str, float]:
    """Every metric of ``sampling`` for one problem with ``c`` of ``n`` samples passed."""
    if n != sampling.samples:
        raise ValueError(f"problem has {n} samples, the sampling asks for {sampling.samples}")
    if sampling.greedy:
        return {"pass@1": float(c >= 1)}
    out = {f"avg@{n}": c / n}
    for k in sorted(set(sampling.ks)):
        if k > 1:
            out[f"pass@{k}"] = pass_at_k(n, c, k)
    return out


def count_passes(outcomes: Iterable[tuple[str, bool]]) -> dict[str, tuple[int, int]]:
    """``{problem_id: (n, c)}`` from ``(problem_id, passed)`` pairs, in first-seen order."""
    counts: dict[str, list[int]] = {}
    for problem_id, passed in outcomes:
        entry = counts.setdefault(problem_id, [0, 0])
        entry[0] += 1
        entry[1] += bool(passed)
    return {pid: (n, c) for pid, (n, c) in counts.items()}


def benchmark_scores(per_problem: Sequence[dict[str, float]]) -> dict[str, float]:
    """The mean of each metric over problems (every dict must have the same metrics)."""
    if not per_problem:
        raise ValueError("no problems to score")
    names = list(per_problem[0])
    if any(list(p) != names for p in per_problem):
        raise ValueError("every problem must have the same metrics")
    return {m: sum(p[m] for p in per_problem) / len(per_problem) for m in names}
