"""R-MEL revision core, values worked by hand: truncation by tokens, the LCP ratio, the seed rules, the budget cycling
through the truncation schedule, stop at the first accepted revision, the LCP threshold (per-tau, fixed, zero), what
the callbacks receive, and argument checks. Pure Python: the callbacks are fakes, no model is loaded."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import mel.experience.revise as revise_module
from mel.experience.revise import (
    PAPER_BUDGET, PAPER_TAUS, SEED_RULES, Continuation, FailedRollout, all_negative_groups, lcp_ratio, revise,
    truncate,
)

Y10 = tuple(range(100, 110))  # |y-| = 10, distinct ids so a wrong slice shows
Y7 = tuple(range(200, 207))  # |y-| = 7


class FakePolicy:
    """continue_fn that records (prefix, attempt) and returns the scripted continuations in turn."""

    def __init__(self, continuations: list[tuple[int, ...]]) -> None:
        self.continuations = continuations
        self.calls: list[tuple[tuple[int, ...], int]] = []

    def __call__(self, prefix: tuple[int, ...], *, attempt: int) -> Continuation:
        self.calls.append((prefix, attempt))
        ids = self.continuations[len(self.calls) - 1]
        return Continuation(token_ids=ids, text=" ".join(map(str, ids)))


def verifier(passes: list[bool]):
    """verify_fn that returns the scripted verdicts in turn and records its arguments."""
    seen: list[tuple[tuple[int, ...], Continuation]] = []

    def verify_fn(y_rev: tuple[int, ...], continuation: Continuation) -> bool:
        seen.append((y_rev, continuation))
        return passes[len(seen) - 1]

    verify_fn.seen = seen  # type: ignore[attr-defined]
    return verify_fn


# --- truncation and LCP ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tau,kept", [(0.7, 7), (0.5, 5), (0.3, 3), (1.0, 10), (0.05, 0)])
def test_truncate_keeps_floor_tau_n_tokens(tau, kept):
    assert truncate(Y10, tau) == Y10[:kept]
    assert len(truncate(Y10, tau)) == kept


def test_truncate_floors_by_tokens_not_characters():
    assert truncate(Y7, 0.5) == (200, 201, 202)  # floor(3.5) = 3
    assert truncate(Y7, 0.3) == (200, 201)  # floor(2.1) = 2


def test_truncate_is_exact_on_the_decimal_tau():
    # the float product 0.29 * 100 is 28.999999999999996; a naive floor keeps 28 tokens
    assert len(truncate(tuple(range(100)), 0.29)) == 29
    assert len(truncate(tuple(range(100)), 0.57)) == 57


def test_lcp_ratio():
    assert lcp_ratio(Y10, Y10) == 1.0
    assert lcp_ratio(Y10[:4] + (999, 104, 105), Y10) == pytest.approx(0.4, abs=1e-12)  # diverges at k = 4
    assert lcp_ratio((999,) + Y10[1:], Y10) == 0.0  # diverges at k = 0
    assert lcp_ratio(Y10[:6], Y10) == pytest.approx(0.6, abs=1e-12)  # y_rev stops early
    assert lcp_ratio(Y10 + (1, 2, 3), Y10) == 1.0  # y_rev runs past y-: capped at |y-|
    assert lcp_ratio(Y7[:3], Y7) == pytest.approx(3 / 7, abs=1e-12)
    assert lcp_ratio((1, 2), ()) == 0.0  # empty y-


# --- seed rules --------------------------------------------------------------------------------------------------

def test_seed_longest():
    c = [FailedRollout(0, (1, 2)), FailedRollout(1, (1, 2, 3, 4)), FailedRollout(2, (1, 2, 3))]
    assert SEED_RULES.get("longest")(c) == 1


def test_seed_longest_ties_go_to_the_lowest_sample_index():
    c = [FailedRollout(5, (1, 2, 3)), FailedRollout(1, (1,)), FailedRollout(2, (7, 8, 9))]
    assert SEED_RULES.get("longest")(c) == 2  # samples 5 and 2 tie at 3 tokens; 2 wins, at position 2


def test_seed_max_logprob_uses_the_mean_not_the_sum():
    c = [FailedRollout(0, (1,), (-0.3,)),  # mean -0.3, sum -0.3 (a sum would pick this one)
         FailedRollout(1, (1, 2, 3, 4), (-0.1, -0.1, -0.1, -0.1)),  # mean -0.1, sum -0.4
         FailedRollout(2, (1, 2), (-0.5, -0.1))]  # mean -0.3
    assert SEED_RULES.get("max_logprob")(c) == 1


def test_seed_max_logprob_ties_and_missing_logprobs():
    tie = [FailedRollout(3, (1, 2), (-0.2, -0.4)), FailedRollout(0, (1,), (-0.3,))]
    assert SEED_RULES.get("max_logprob")(tie) == 1  # both mean -0.3: sample 0
    with pytest.raises(ValueError, match="logprobs"):
        SEED_RULES.get("max_logprob")([FailedRollout(0, (1, 2))])


def test_seed_rules_registry_and_bad_inputs():
    assert SEED_RULES.names() == ["longest", "max_logprob"]
    with pytest.raises(KeyError, match="longest, max_logprob"):
        SEED_RULES.get("shortest")
    with pytest.raises(ValueError, match="candidates"):
        SEED_RULES.get("longest")([])
    with pytest.raises(ValueError, match="logprobs"):
        FailedRollout(0, (1, 2, 3), (-0.1,))


def test_all_negative_groups():
    groups = {4: [False, False], 1: [True, False], 2: [], 0: [False], 3: [True, True]}
    assert all_negative_groups(groups) == [0, 4]


# --- the revision loop -------------------------------------------------------------------------------------------

def test_budget_cycles_the_schedule_and_prefixes_are_exact():
    policy = FakePolicy([(1,), (2,), (3,), (4,)])
    rev = revise(FailedRollout(0, Y10), PAPER_TAUS, 4, None, policy, verifier([False] * 4))
    assert [a for _, a in policy.calls] == [0, 1, 2, 3]
    assert [p for p, _ in policy.calls] == [Y10[:7], Y10[:5], Y10[:3], Y10[:7]]
    assert [a.tau for a in rev.attempts] == [0.7, 0.5, 0.3, 0.7]
    assert [a.prefix_len for a in rev.attempts] == [7, 5, 3, 7]
    assert not rev.accepted and rev.y_rev is None and rev.tau is None
    assert rev.num_attempts == 4 and not any(a.accepted for a in rev.attempts)


def test_budget_one_tries_the_first_ratio_only():
    policy = FakePolicy([(1,), (2,)])
    rev = revise(FailedRollout(0, Y10), PAPER_TAUS, 1, None, policy, verifier([False, False]))
    assert policy.calls == [(Y10[:7], 0)]
    assert rev.num_attempts == 1 and rev.attempts[0].tau == 0.7


def test_stops_at_the_first_accepted_revision():
    policy = FakePolicy([(900, 901), (300, 301), (400,), (500,)])
    verify = verifier([False, True, True, True])
    rev = revise(FailedRollout(0, Y10), PAPER_TAUS, PAPER_BUDGET, None, policy, verify)
    assert len(policy.calls) == 2 and len(verify.seen) == 2
    assert rev.accepted and rev.tau == 0.5
    assert rev.y_rev == Y10[:5] + (300, 301)  # LCP 5 / 10 = 0.5 >= tau 0.5
    assert [a.accepted for a in rev.attempts] == [False, True]
    assert rev.attempts[1].lcp == pytest.approx(0.5, abs=1e-12)


def test_verify_fn_sees_prefix_plus_continuation():
    policy = FakePolicy([(7, 8, 9)])
    verify = verifier([False])
    revise(FailedRollout(0, Y10), (0.3,), 1, None, policy, verify)
    y_rev, cont = verify.seen[0]
    assert y_rev == (100, 101, 102, 7, 8, 9)
    assert cont == Continuation((7, 8, 9), "7 8 9")


def test_generated_tokens_sums_continuation_lengths():
    policy = FakePolicy([(1, 2, 3), (), (4, 5, 6, 7, 8), (9, 10)])
    rev = revise(FailedRollout(0, Y10), PAPER_TAUS, 4, None, policy, verifier([False] * 4))
    assert [a.continuation_tokens for a in rev.attempts] == [3, 0, 5, 2]
    assert rev.generated_tokens == 10


def test_a_failing_revision_is_never_accepted_even_with_full_overlap():
    policy = FakePolicy([Y10[7:]])  # reproduces y- exactly: LCP 1.0
    rev = revise(FailedRollout(0, Y10), (0.7,), 1, 0.0, policy, verifier([False]))
    assert rev.attempts[0].lcp == 1.0 and not rev.attempts[0].passed and not rev.accepted


# --- the LCP threshold -------------------------------------------------------------------------------------------

def test_per_tau_threshold_rejects_an_immediate_divergence_when_the_floor_falls_short():
    # |y-| = 7, tau = 0.5: 3 tokens kept; diverging at once leaves LCP 3/7 < 0.5
    rev = revise(FailedRollout(0, Y7), (0.5,), 1, None, FakePolicy([(999, 998)]), verifier([True]))
    assert rev.attempts[0].passed and not rev.accepted
    assert rev.attempts[0].lcp == pytest.approx(3 / 7, abs=1e-12)


def test_per_tau_threshold_accepts_once_the_continuation_reaches_tau():
    # the continuation reproduces y-[3] before diverging: LCP 4/7 >= 0.5
    rev = revise(FailedRollout(0, Y7), (0.5,), 1, None, FakePolicy([(203, 999)]), verifier([True]))
    assert rev.accepted and rev.y_rev == (200, 201, 202, 203, 999)


def test_lcp_tau_zero_accepts_any_passing_revision():
    rev = revise(FailedRollout(0, Y7), (0.5,), 1, 0.0, FakePolicy([(999, 998)]), verifier([True]))
    assert rev.accepted and rev.tau == 0.5 and rev.y_rev == (200, 201, 202, 999, 998)


def test_fixed_lcp_tau_replaces_the_per_attempt_tau():
    # 3/7 = 0.43: passes a fixed 0.3 (the paper's experiments), fails the per-tau 0.5
    rev = revise(FailedRollout(0, Y7), (0.5,), 1, 0.3, FakePolicy([(999,)]), verifier([True]))
    assert rev.accepted
    # a fixed 0.9 rejects every attempt whose continuation diverges at once: all B attempts are spent
    policy = FakePolicy([(999,)] * 4)
    rev = revise(FailedRollout(0, Y10), PAPER_TAUS, 4, 0.9, policy, verifier([True] * 4))
    assert not rev.accepted and len(policy.calls) == 4
    assert [a.lcp for a in rev.attempts] == pytest.approx([0.7, 0.5, 0.3, 0.7], abs=1e-12)


def test_threshold_at_equality_is_exact():
    # |y-| = 10, tau = 0.7: LCP exactly 7/10 meets the threshold (>=)
    rev = revise(FailedRollout(0, Y10), (0.7,), 1, None, FakePolicy([(999,)]), verifier([True]))
    assert rev.accepted


# --- argument checks ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,name", [
    ({"budget": 0}, "budget"), ({"budget": -1}, "budget"), ({"budget": 1.5}, "budget"), ({"budget": True}, "budget"),
    ({"taus": ()}, "taus"), ({"taus": (0.7, 0.0)}, r"taus\[1\]"), ({"taus": (1.2,)}, r"taus\[0\]"),
    ({"taus": (float("nan"),)}, r"taus\[0\]"), ({"lcp_tau": -0.1}, "lcp_tau"), ({"lcp_tau": 1.5}, "lcp_tau"),
])
def test_bad_arguments_raise_before_any_generation(kwargs, name):
    args = {"taus": PAPER_TAUS, "budget": 4, "lcp_tau": None} | kwargs
    policy = FakePolicy([(1,)] * 4)
    with pytest.raises(ValueError, match=name):
        revise(FailedRollout(0, Y10), continue_fn=policy, verify_fn=verifier([False] * 4), **args)
    assert policy.calls == []


@pytest.mark.parametrize("tau", [0, 0.0, -0.3, 1.01])
def test_truncate_rejects_tau_outside_0_1(tau):
    with pytest.raises(ValueError, match="tau"):
        truncate(Y10, tau)


# --- purity ------------------------------------------------------------------------------------------------------

def test_module_imports_only_the_stdlib_and_the_registry():
    tree = ast.parse(Path(revise_module.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    outside = {m for m in imported if m.split(".")[0] not in sys.stdlib_module_names} - {"mel.registry"}
    assert outside == set()


def test_the_batched_rounds_make_the_same_attempts_as_revise_one_seed_at_a_time():
    from mel.experience.revise import revise_batch

    seeds = [FailedRollout(i, tuple(range(10 * i, 10 * i + 10))) for i in range(4)]
    passes_at = {0: 1, 1: None, 2: 0, 3: 3}  # attempt at which each seed's continuation passes

    def cont(prefix, seed, k):
        return Continuation(seeds[seed].token_ids[len(prefix):len(prefix) + 2] + (999,), "")

    def ok(seed, k):
        return passes_at[seed] is not None and k >= passes_at[seed]

    calls = []

    def continue_batch(positions, prefixes, k):
        calls.append((list(positions), k))
        return [cont(p, i, k) for i, p in zip(positions, prefixes)]

    batched = revise_batch(seeds, (0.7, 0.5, 0.3), 4, None, continue_batch,
                           lambda positions, y_revs, conts: [ok(i, len([c for c in calls if i in c[0]]) - 1)
                                                             for i in positions])
    single = [revise(s, (0.7, 0.5, 0.3), 4, None, lambda p, attempt, i=i: cont(p, i, attempt),
                     lambda y, c, i=i, box=[-1]: (box.__setitem__(0, box[0] + 1), ok(i, box[0]))[1])
              for i, s in enumerate(seeds)]
    assert batched == single
    assert calls == [([0, 1, 2, 3], 0), ([0, 1, 3], 1), ([1, 3], 2), ([1, 3], 3)]  # a rescued seed leaves the rounds


# --- the paper's prefix constraint (tau = 0.3 on every attempt) and the filter-rejection count --------------------

def test_prefix_constraint_rejects_a_passing_revision_that_leaves_y_minus_at_the_seam():
    # |y-| = 7, the schedule's tau = 0.3 attempt keeps floor(2.1) = 2 tokens; diverging at once gives LCP 2/7 < 0.3
    rev = revise(FailedRollout(0, Y7), (0.3,), 1, 0.3, FakePolicy([(999,)]), verifier([True]))
    assert rev.attempts[0].passed and not rev.accepted and rev.y_rev is None
    assert rev.filter_rejections == 1


def test_prefix_constraint_accepts_a_passing_revision_that_keeps_the_prefix():
    # the same seed at tau = 0.7 (4 tokens kept: LCP 4/7 >= 0.3), and at tau = 0.3 once y-'s next token is repeated
    rev = revise(FailedRollout(0, Y7), (0.7,), 1, 0.3, FakePolicy([(999,)]), verifier([True]))
    assert rev.accepted and rev.filter_rejections == 0
    rev = revise(FailedRollout(0, Y7), (0.3,), 1, 0.3, FakePolicy([(202, 999)]), verifier([True]))
    assert rev.accepted and rev.y_rev == (200, 201, 202, 999)


def test_the_constraint_is_applied_to_every_attempt_and_counts_each_rejection():
    # 0.3 first (rejected: LCP 2/7), then 0.3 again (rejected), then 0.7 (accepted): two passing revisions thrown away
    policy = FakePolicy([(999,), (998,), (997,)])
    rev = revise(FailedRollout(0, Y7), (0.3, 0.3, 0.7), 3, 0.3, policy, verifier([True, True, True]))
    assert [a.accepted for a in rev.attempts] == [False, False, True] and rev.filter_rejections == 2
    # the "w/o prefix" ablation (tau = 0) keeps the first of them
    rev0 = revise(FailedRollout(0, Y7), (0.3, 0.3, 0.7), 3, 0.0, FakePolicy([(999,)] * 3), verifier([True] * 3))
    assert rev0.accepted and rev0.num_attempts == 1 and rev0.filter_rejections == 0


# --- MEL+Extra: full-length fresh rollouts within R-MEL's token allowance -------------------------------------------

def test_token_allowance_is_what_rmel_may_generate_on_the_seed():
    from mel.experience.revise import token_allowance

    # |y-| = 128, max_new 128, taus 0.7, 0.5, 0.3, 0.7: caps 128 - 89, 128 - 64, 128 - 38, 128 - 89
    assert token_allowance(128, PAPER_TAUS, 4, 128) == 39 + 64 + 90 + 39
    assert token_allowance(10, PAPER_TAUS, 1, 16) == 16 - 7
    assert token_allowance(128, (0.7,), 2, 50) == 2  # a prefix longer than the budget still gets one token


def test_extra_rollouts_are_full_length_and_match_the_allowance_per_group():
    from mel.experience.revise import extra_batch

    lengths = {0: [128, 128, 128], 1: [20, 50, 128, 128], 2: [10]}  # what each group's rollouts would generate
    passes = {2: 0}  # group 2 passes at its first rollout
    calls: list[tuple[list[int], list[int]]] = []

    def sample(positions, caps, k):
        calls.append((list(positions), list(caps)))
        return [Continuation(tuple(range(min(lengths[i][k], c))), "") for i, c in zip(positions, caps)]

    out = extra_batch([232, 232, 232], 128, sample, lambda positions, rollouts, k: [passes.get(i) == k
                                                                                     for i in positions])
    assert calls[0] == ([0, 1, 2], [128, 128, 128])  # every rollout may use the full budget ...
    assert calls[1] == ([0, 1], [104, 128])  # ... except where the allowance left is smaller
    g0, g1, g2 = out
    assert [a.max_tokens for a in g0.attempts] == [128, 104] and g0.spent == 232 and g0.token_match == 1.0
    assert [a.generated_tokens for a in g1.attempts] == [20, 50, 128, 34] and g1.spent == 232  # short ones leave room
    assert g2.accepted and g2.spent == 10 and g2.token_match == pytest.approx(10 / 232)
    assert not g0.accepted and not g1.accepted


def test_extra_charges_an_empty_rollout_one_token_so_it_ends():
    from mel.experience.revise import extra_batch

    (o,) = extra_batch([3], 128, lambda p, caps, k: [Continuation((), "") for _ in p], lambda p, r, k: [False] * len(p))
    assert len(o.attempts) == 3 and o.spent == 3
