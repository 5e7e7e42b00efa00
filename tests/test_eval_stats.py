"""Paired bootstrap, worked by hand: 4 problems, 5 replicates from a pinned index matrix, the percentile interval and
the shift-method p-value recomputed from the module docstring's definitions; then properties (a clearly better
method, identical methods, the paired design) and the input checks."""
from __future__ import annotations

import numpy as np
import pytest

from mel.eval.stats import BootstrapResult, bootstrap_indices, paired_bootstrap

# bootstrap_indices(4, 5, seed=0): pinned, so a change of numpy's generator shows up here and not as a puzzling
# difference in the values below.
INDICES_SEED0 = [[3, 2, 2, 1], [1, 0, 0, 0], [0, 3, 2, 3], [2, 2, 3, 2], [2, 2, 2, 3]]


def test_bootstrap_indices_pinned_and_in_range():
    idx = bootstrap_indices(4, 5, seed=0)
    assert idx.shape == (5, 4)
    assert idx.tolist() == INDICES_SEED0
    big = bootstrap_indices(7, 200, seed=3)
    assert big.min() >= 0 and big.max() <= 6
    assert set(np.unique(big)) == set(range(7))  # 1400 draws: every problem appears
    assert np.array_equal(big, bootstrap_indices(7, 200, seed=3))  # deterministic in the seed
    assert not np.array_equal(big, bootstrap_indices(7, 200, seed=4))


def test_paired_bootstrap_by_hand():
    a = [1.0, 1.0, 1.0, 0.0]  # method: per-problem outcomes (avg@n values may be fractions)
    b = [0.0, 0.0, 0.5, 1.0]  # baseline, same problems
    # d = a - b = [1, 1, 0.5, -1]; diff = 1.5 / 4 = 0.375
    # replicate r takes d at INDICES_SEED0[r]:
    #   r0 [3,2,2,1] -> [-1, 0.5, 0.5, 1]  -> 1.0 / 4 =  0.25
    #   r1 [1,0,0,0] -> [1, 1, 1, 1]       -> 4.0 / 4 =  1.0
    #   r2 [0,3,2,3] -> [1, -1, 0.5, -1]   -> -0.5 / 4 = -0.125
    #   r3 [2,2,3,2] -> [0.5, 0.5, -1, 0.5] -> 0.5 / 4 = 0.125
    #   r4 [2,2,2,3] -> [0.5, 0.5, 0.5, -1] -> 0.5 / 4 = 0.125
    replicates = [0.25, 1.0, -0.125, 0.125, 0.125]
    idx = np.array(INDICES_SEED0)
    assert (np.array(a) - np.array(b))[idx].mean(axis=1).tolist() == replicates
    # sorted: [-0.125, 0.125, 0.125, 0.25, 1.0]; linear quantile q sits at position q * (5 - 1)
    #   alpha 0.05: q = 0.025 -> pos 0.1 -> -0.125 + 0.1 * (0.125 - -0.125) = -0.1
    #               q = 0.975 -> pos 3.9 ->  0.25 + 0.9 * (1.0 - 0.25)     =  0.925
    # p: |d* - 0.375| = [0.125, 0.625, 0.5, 0.25, 0.25]; >= 0.375: r1, r2 -> r = 2 -> p = (2 + 1) / (5 + 1) = 0.5
    res = paired_bootstrap(a, b, n_resamples=5, seed=0)
    assert res == BootstrapResult(diff=0.375, ci_low=pytest.approx(-0.1, abs=1e-12),
                                  ci_high=pytest.approx(0.925, abs=1e-12), p_value=0.5, n=4, n_resamples=5,
                                  alpha=0.05)
    assert not res.significant
    # alpha 0.6: q = 0.3 -> pos 1.2 -> 0.125 + 0.2 * (0.125 - 0.125) = 0.125
    #            q = 0.7 -> pos 2.8 -> 0.125 + 0.8 * (0.25 - 0.125)  = 0.225
    wide = paired_bootstrap(a, b, n_resamples=5, seed=0, alpha=0.6)
    assert (wide.ci_low, wide.ci_high) == (pytest.approx(0.125, abs=1e-12), pytest.approx(0.225, abs=1e-12))
    assert wide.p_value == 0.5  # the p-value does not depend on alpha


def test_p_value_counts_ties_as_extreme():
    a = [1.0, 0.0, 0.0, 1.0]
    b = [0.0, 1.0, 0.0, 0.0]
    # d = [1, -1, 0, 1]; diff = 0.25
    #   r0 [3,2,2,1] -> [1, 0, 0, -1] -> 0      r1 [1,0,0,0] -> [-1, 1, 1, 1] -> 0.5
    #   r2 [0,3,2,3] -> [1, 1, 0, 1]  -> 0.75   r3 [2,2,3,2] -> [0, 0, 1, 0]  -> 0.25   r4 [2,2,2,3] -> 0.25
    # |d* - 0.25| = [0.25, 0.25, 0.5, 0, 0]; >= 0.25: r0, r1 (ties) and r2 -> r = 3 -> p = 4 / 6
    res = paired_bootstrap(a, b, n_resamples=5, seed=0)
    assert res.diff == 0.25
    assert res.p_value == pytest.approx(4 / 6, abs=1e-15)


def test_clearly_better_method_is_significant():
    res = paired_bootstrap([1.0] * 50, [0.0] * 50)
    # every replicate is exactly 1: none is within reach of the null, so p takes its floor 1 / (R + 1)
    assert res.diff == 1.0 and (res.ci_low, res.ci_high) == (1.0, 1.0)
    assert res.p_value == pytest.approx(1 / 10001) and res.p_value < 0.01
    assert res.significant and res.n == 50 and res.n_resamples == 10000
    worse = paired_bootstrap([0.0] * 50, [1.0] * 50)
    assert worse.diff == -1.0 and worse.ci_high < 0 and worse.p_value < 0.01


def test_identical_methods_give_p_one():
    noisy = np.random.default_rng(5).random(40)
    res = paired_bootstrap(noisy, noisy.copy(), n_resamples=2000, seed=1)
    assert (res.diff, res.ci_low, res.ci_high, res.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_one_extra_solve_matches_the_binomial_null():
    # a solves exactly one problem more than b out of 20, on top of a shared, uneven difficulty: the per-problem
    # differences are 0 except one +1, so a replicate is k / 20 with k ~ Binomial(20, 1/20) copies of that problem.
    # The interval never goes below 0 (pairing removes the shared difficulty), and |k/20 - 1/20| >= 1/20 iff k != 1:
    # p -> 1 - P(k = 1) = 1 - (19/20)^19 = 0.6226 (R = 4000: standard error 0.008).
    rng = np.random.default_rng(0)
    b = (rng.random(20) < 0.5).astype(float)
    a = b.copy()
    a[np.flatnonzero(b == 0)[0]] = 1.0
    res = paired_bootstrap(a, b, n_resamples=4000, seed=0)
    assert res.diff == pytest.approx(1 / 20)
    assert res.ci_low == 0.0
    assert res.p_value == pytest.approx(1 - (19 / 20) ** 19, abs=0.03)


def test_signs_and_symmetry():
    rng = np.random.default_rng(2)
    a, b = rng.random(30), rng.random(30)
    ab = paired_bootstrap(a, b, n_resamples=500, seed=9)
    ba = paired_bootstrap(b, a, n_resamples=500, seed=9)
    assert ab.diff == pytest.approx(-ba.diff)
    assert (ab.ci_low, ab.ci_high) == (pytest.approx(-ba.ci_high), pytest.approx(-ba.ci_low))
    assert ab.p_value == pytest.approx(ba.p_value)
    assert 1 / 501 <= ab.p_value <= 1.0


@pytest.mark.parametrize(("a", "b", "match"), [
    ([], [], "no problems"),
    ([1.0], [], "no problems"),
    ([1.0, 0.0], [1.0], "paired"),
    ([1.0, float("nan")], [1.0, 0.0], "finite"),
    ([[1.0]], [[1.0]], "1-D"),
])
def test_bad_inputs(a, b, match):
    with pytest.raises(ValueError, match=match):
        paired_bootstrap(a, b)


def test_bad_settings():
    with pytest.raises(ValueError, match="alpha"):
        paired_bootstrap([1.0], [0.0], alpha=1.0)
    with pytest.raises(ValueError, match="resample"):
        paired_bootstrap([1.0], [0.0], n_resamples=0)
    with pytest.raises(ValueError, match="at least one problem"):
        bootstrap_indices(0, 5, seed=0)
