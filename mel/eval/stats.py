"""Paired bootstrap on per-problem outcomes: is method A better than baseline B on the same problems?

Both methods are scored on the same n problems (``a[i]`` and ``b[i]`` belong to problem i: 0/1 for greedy pass@1,
c/n for avg@n, the unbiased estimate for pass@k; see `mel.eval.metrics`). The statistic is the difference of the
benchmark scores, ``diff = mean(a) - mean(b) = mean(d)`` with ``d = a - b`` per problem. A bootstrap replicate draws
n problem indices with replacement and recomputes it, ``d*_r = mean(d[idx_r])``, for r = 1..R (R = n_resamples).
Resampling *problems* (pairs), not the two vectors separately, keeps the correlation between the methods on a problem,
which is what makes the paired test sharper than an unpaired one (Koehn 2004, "Statistical Significance Tests for
Machine Translation Evaluation"; Efron & Tibshirani 1993, "An Introduction to the Bootstrap", ch. 16).

- **Confidence interval**: the percentile interval, the ``alpha/2`` and ``1 - alpha/2`` quantiles of the R
  replicates (Efron & Tibshirani 1993, ch. 13), computed with ``numpy.quantile``'s default linear interpolation
  (Hyndman & Fan type 7: quantile q lies at position ``q * (R - 1)`` of the sorted replicates).
- **p-value** (two-sided, H0: the expected difference is 0): the shift method. Under H0 the replicates centred on
  the observed difference, ``d*_r - diff``, stand in for the null distribution of the statistic (Efron & Tibshirani
  1993, section 16.4; Berg-Kirkpatrick et al. 2012, "An Empirical Investigation of Statistical Significance in NLP",
  use its one-sided form), so with ``r = #{r : |d*_r - diff| >= |diff|}`` (ties count as at least as extreme)

      p = (r + 1) / (R + 1)

  The +1's count the observed sample among the replicates (Davison & Hinkley 1997, "Bootstrap Methods and their
  Application", section 4.2): p is never 0, its smallest value is ``1 / (R + 1)``, so with R = 10000 a difference that
  no replicate comes near reads p = 0.0001, never "p = 0". Identical outcomes give diff = 0, every replicate is a tie,
  and p = 1 exactly.

Departures and choices: the replicates are drawn once per (n, R, seed) by `bootstrap_indices` (numpy PCG64 through
``default_rng(seed)``), so two comparisons with the same number of problems and seed resample the same problem sets
(common random numbers). Ties in the p-value use a 1e-12 tolerance so a replicate equal to ``2 * diff`` up to
float rounding still counts.

Two helpers for the report's seeds pooled per method (`mel.eval.seeds`):

- `bootstrap_mean`: the same percentile interval for one method's mean score, ``mean(x)`` resampled over problems
  with the same `bootstrap_indices` (so with the same n and seed it draws the same problem sets as the comparisons).
- `minimum_detectable_effect`: the power line. For a two-sided test at level alpha with power 1 - beta, a true
  difference is detected with probability 1 - beta when it is at least ``MDE = (z_{1-alpha/2} + z_{1-beta}) * SE``
  (the normal approximation; e.g. Cohen 1988, "Statistical Power Analysis for the Behavioral Sciences", ch. 2):
  2.80 standard errors at alpha 0.05 and 80% power. The SE is `standard_error`, the textbook one of a mean of n
  per-problem differences, ``sd(d, ddof=1) / sqrt(n)``: closed-form, so the MDE does not move with the bootstrap
  seed (the bootstrap replicates' standard deviation estimates the same quantity with ddof=0).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

TIE_TOLERANCE = 1e-12


@dataclass(frozen=True)
class BootstrapResult:
    """A paired bootstrap of ``mean(a) - mean(b)`` (same units as the outcomes, e.g. a fraction of problems)."""

    diff: float  # observed mean(a) - mean(b)
    ci_low: float  # percentile interval at level 1 - alpha
    ci_high: float
    p_value: float  # two-sided, shift method, (r + 1) / (R + 1)
    n: int  # paired problems
    n_resamples: int  # R
    alpha: float

    @property
    def significant(self) -> bool:
        """p < alpha."""
        return self.p_value < self.alpha


def bootstrap_indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """The problem indices of every replicate, ``[n_resamples, n]`` ints in ``[0, n)``: row r is replicate r's draw
    of n problems with replacement (``numpy.random.default_rng(seed).integers(0, n, size=(n_resamples, n))``)."""
    if n < 1:
        raise ValueError(f"bootstrap needs at least one problem, got n={n}")
    if n_resamples < 1:
        raise ValueError(f"bootstrap needs at least one resample, got n_resamples={n_resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def _outcomes(x: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of per-problem outcomes, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: per-problem outcomes must be finite numbers (found NaN or inf)")
    return arr


def paired_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = 10000,
    seed: int = 0,
    alpha: float = 0.05,
) -> BootstrapResult:
    """Paired bootstrap of ``mean(a) - mean(b)``: ``a`` the method's and ``b`` the baseline's per-problem outcomes,
    the same problems in the same order. See the module docstring for the interval and the p-value."""
    a_arr, b_arr = _outcomes(a, "a"), _outcomes(b, "b")
    if a_arr.size == 0 or b_arr.size == 0:
        raise ValueError("paired_bootstrap: no problems (empty outcomes)")
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"paired_bootstrap: a has {a_arr.size} problems and b {b_arr.size}; the outcomes must be "
                         "paired (the same problems in the same order)")
    if not 0 < alpha < 1:
        raise ValueError(f"paired_bootstrap: alpha must be in (0, 1), got {alpha}")
    d = a_arr - b_arr  # [n] per-problem differences
    diff = float(d.mean())
    idx = bootstrap_indices(d.size, n_resamples, seed)  # [R, n]
    replicates = d[idx].mean(axis=1)  # [R] d*_r
    ci_low, ci_high = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
    extreme = int(np.count_nonzero(np.abs(replicates - diff) >= abs(diff) - TIE_TOLERANCE))
    return BootstrapResult(diff=diff, ci_low=float(ci_low), ci_high=float(ci_high),
                           p_value=(extreme + 1) / (n_resamples + 1), n=int(d.size), n_resamples=n_resamples,
                           alpha=alpha)


@dataclass(frozen=True)
class MeanInterval:
    """A bootstrap percentile interval of ``mean(x)`` over problems."""

    mean: float
    ci_low: float
    ci_high: float
    n: int  # problems
    n_resamples: int
    alpha: float


def bootstrap_mean(
    x: Sequence[float] | np.ndarray, *, n_resamples: int = 10000, seed: int = 0, alpha: float = 0.05,
) -> MeanInterval:
    """Percentile interval of ``mean(x)``, ``x`` one value per problem: replicate r is the mean of x over the
    problems in row r of ``bootstrap_indices(n, n_resamples, seed)`` (see the module docstring)."""
    arr = _outcomes(x, "x")  # [n]
    if arr.size == 0:
        raise ValueError("bootstrap_mean: no problems (empty outcomes)")
    if not 0 < alpha < 1:
        raise ValueError(f"bootstrap_mean: alpha must be in (0, 1), got {alpha}")
    replicates = arr[bootstrap_indices(arr.size, n_resamples, seed)].mean(axis=1)  # [R]
    ci_low, ci_high = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
    return MeanInterval(mean=float(arr.mean()), ci_low=float(ci_low), ci_high=float(ci_high), n=int(arr.size),
                        n_resamples=n_resamples, alpha=alpha)


def standard_error(d: Sequence[float] | np.ndarray) -> float | None:
    """Standard error of ``mean(d)``: ``sd(d, ddof=1) / sqrt(n)``; None below two values (no spread to measure)."""
    arr = _outcomes(d, "d")  # [n]
    if arr.size < 2:
        return None
    return float(arr.std(ddof=1) / math.sqrt(arr.size))


def minimum_detectable_effect(se: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """``(z_{1-alpha/2} + z_{power}) * se``: the smallest true difference a two-sided test at level ``alpha`` detects
    with probability ``power`` (normal approximation; 2.8016 * se at the defaults)."""
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"minimum_detectable_effect: need 0 < alpha < 1 and 0 < power < 1, got {alpha}, {power}")
    if not se >= 0:
        raise ValueError(f"minimum_detectable_effect: the standard error must be >= 0, got {se}")
    z = NormalDist()
    return (z.inv_cdf(1 - alpha / 2) + z.inv_cdf(power)) * se
