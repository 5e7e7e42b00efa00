"""R-MEL prefix-primed revision (R-MEL section 3.2-3.3), the pure core: which groups to revise, which failure to
seed from, where to truncate it, and when a continuation counts as a revision y+_rev of y-.

For an all-negative group (|Y+| = 0): pick a seed y- from Y- (``SEED_RULES``); for each truncation ratio tau of the
schedule (0.7, 0.5, 0.3) keep the prefix p_tau = y-[:floor(tau * |y-|)], let the policy continue it (one continuation
= one attempt), verify y+_rev = p_tau + continuation, and accept it iff it passes and meets the prefix constraint
LCP(y+_rev, y-) / |y-| >= lcp_tau (0.3 on every attempt, section 4). The first accepted revision ends the search; the
pair (y+_rev, y-) then goes to ordinary MEL extraction.

Generation and verification are callbacks (``continue_fn``, ``verify_fn``), so this module imports no model, engine
or sandbox; the revise stage wires them to the policy and the verifier.

Departures from the paper, and choices it leaves open:

- Budget over the schedule. The paper says only that B (default 4) "controls the total number of continuation
  attempts across all truncation ratios" and that B = 1 tries tau = 0.7 alone. We cycle the schedule until B attempts
  are spent: with B = 4 and taus (0.7, 0.5, 0.3) the attempts use 0.7, 0.5, 0.3, 0.7. Each attempt gets its index
  (``continue_fn(prefix, attempt=k)``) so the caller can sample it with a different seed; a repeated tau is a fresh
  sample, not a replay.
- The prefix constraint. Section 3.2 compares the LCP ratio with the truncation ratio tau of the attempt; section 4
  runs "prefix constraint tau = 0.3" (and tau = 0 for the "w/o prefix" row of table 2, "accepting any correct
  revision"). We follow section 4: one fixed threshold ``lcp_tau`` (config default 0.3) applied to every attempt,
  and 0 for the ablation. ``lcp_tau=None`` (the section 3.2 reading) is still accepted by this module but no shipped
  config uses it: since y+_rev = p_tau + continuation, LCP >= floor(tau * |y-|) by construction, so that test passes
  exactly when tau * |y-| is whole and otherwise only when the first new token repeats y-'s next one: acceptance
  would hinge on |y-| mod 10 and one token.
  What the fixed 0.3 does: on attempts at tau 0.7 and 0.5 it holds by construction (for |y-| >= 2); on the attempts
  at tau 0.3 (the paper's schedule's last ratio) it holds when 0.3 * |y-| is whole, else only if the continuation's
  first token is y-'s next token: the paper writes the test as a ratio, and we keep it literally (written as
  floor(0.3 * |y-|) tokens, it could never reject a passing revision). Every passing revision the constraint
  rejects is counted (``Revision.filter_rejections``, the revise stage's ``filter_rejections`` metric), so a reader
  sees per step how far ``rmel`` and ``rmel_tau0`` can differ at all.
- MEL+Extra, the compute-matched control (``extra_batch``). The paper says only "additional rollouts for
  all-negative groups (compute-matched control)". We match by generated tokens: a group gets R-MEL's allowance for
  its seed, sum over the B attempts of ``max_new_tokens - floor(tau_k * |y-|)`` (``token_allowance``: what R-MEL may
  generate on it), spent on fresh rollouts of the prompt, each allowed the full ``max_new_tokens`` (the last one cut
  to what is left), until one passes or the allowance is spent. The number of fresh rollouts thus varies by group
  (shorter rollouts leave room for more); spent / allowance is the per-group token match.
- Exact arithmetic. floor(tau * |y-|) and the test LCP / |y-| >= threshold are done on ``Fraction(str(tau))``, the
  decimal the user wrote, not on the binary float: 0.7 * 10 is 7 (the float product 0.7 * 10 happens to round to 7.0,
  but e.g. 0.29 * 100 = 28.999999999999996 would floor to 28). ``lcp_ratio`` itself returns a float, for reporting.
- Token level. Truncation, LCP and y+_rev = p_tau + continuation are over token ids, not text; nothing is
  re-tokenized at the seam.
- Seed choice. The paper picks the longest y- and reports that highest log-probability did about as well; both are
  registered (``longest``, ``max_logprob`` = highest mean token log-prob). Ties go to the lowest sample index.
- Verification runs on every attempt (also those the LCP filter would reject), so ``Attempt.passed`` records how
  many passing continuations the filter threw away.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Protocol, Sequence

from mel.registry import Registry

PAPER_TAUS: tuple[float, ...] = (0.7, 0.5, 0.3)  # the truncation schedule, most conservative first
PAPER_BUDGET = 4  # B: continuation attempts per all-negative group


@dataclass(frozen=True)
class FailedRollout:
    """One member of Y- for a prompt: its sample index in the group, its response token ids and their log-probs
    (same length, or empty when the engine did not record them; only ``max_logprob`` needs them)."""
    sample_index: int
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.logprobs and len(self.logprobs) != len(self.token_ids):
            raise ValueError(f"logprobs has {len(self.logprobs)} entries for {len(self.token_ids)} token_ids; "
                             "give one log-prob per token, or none")


@dataclass(frozen=True)
class Continuation:
    """What the policy generated after the prefix: its token ids and their decoded text."""
    token_ids: tuple[int, ...]
    text: str


@dataclass(frozen=True)
class Attempt:
    attempt: int  # 0.. B-1, the index passed to continue_fn
    tau: float  # truncation ratio of this attempt
    prefix_len: int  # floor(tau * |y-|) tokens kept
    continuation_tokens: int  # tokens generated after the prefix
    passed: bool  # y+_rev passed the verifier
    lcp: float  # LCP(y+_rev, y-) / |y-|
    accepted: bool  # passed and lcp >= threshold


@dataclass(frozen=True)
class Revision:
    """The outcome of revising one seed: every attempt made, and the accepted y+_rev (None when none was)."""
    accepted: bool
    attempts: tuple[Attempt, ...]
    y_rev: tuple[int, ...] | None  # p_tau + continuation token ids of the accepted attempt
    tau: float | None  # truncation ratio of the accepted attempt

    @property
    def generated_tokens(self) -> int:
        """Tokens the policy generated over all attempts (the revision's compute cost)."""
        return sum(a.continuation_tokens for a in self.attempts)

    @property
    def num_attempts(self) -> int:
        return len(self.attempts)

    @property
    def filter_rejections(self) -> int:
        """Attempts whose revision passed the verifier but not the prefix constraint."""
        return sum(a.passed and not a.accepted for a in self.attempts)


class ContinueFn(Protocol):
    def __call__(self, prefix: tuple[int, ...], *, attempt: int) -> Continuation: ...


VerifyFn = Callable[[tuple[int, ...], Continuation], bool]  # (y+_rev token ids, continuation) -> passed
SeedRule = Callable[[Sequence[FailedRollout]], int]  # -> position in candidates of the seed y-

SEED_RULES: Registry[SeedRule] = Registry("R-MEL seed rule")


def _mean_logprob(r: FailedRollout) -> float:
    if not r.token_ids:
        return -math.inf
    if not r.logprobs:
        raise ValueError(f"seed rule 'max_logprob' needs logprobs; sample {r.sample_index} has none")
    return sum(r.logprobs) / len(r.logprobs)


def _argmax(candidates: Sequence[FailedRollout], key: Callable[[FailedRollout], float]) -> int:
    if not candidates:
        raise ValueError("candidates is empty: an all-negative group has at least one failed rollout")
    return min(range(len(candidates)), key=lambda i: (-key(candidates[i]), candidates[i].sample_index))


@SEED_RULES.register("longest")
def seed_longest(candidates: Sequence[FailedRollout]) -> int:
    """The failed rollout with the most tokens (R-MEL's default: the most complete reasoning attempt)."""
    return _argmax(candidates, lambda r: len(r.token_ids))


@SEED_RULES.register("max_logprob")
def seed_max_logprob(candidates: Sequence[FailedRollout]) -> int:
    """The failed rollout with the highest mean token log-prob (the paper's alternative)."""
    return _argmax(candidates, _mean_logprob)


def all_negative_groups(passed_by_group: dict[int, list[bool]]) -> list[int]:
    """Groups with samples and none passing (|Y+| = 0, |Y-| > 0), in increasing group id. An empty group is not
    all-negative: it has no failure to seed from."""
    return sorted(g for g, passed in passed_by_group.items() if passed and not any(passed))


def _check_tau(name: str, tau: float, low_open: bool = True) -> Fraction:
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or math.isnan(tau):
        raise ValueError(f"{name} must be a number, got {tau!r}")
    if not ((0 < tau <= 1) if low_open else (0 <= tau <= 1)):
        raise ValueError(f"{name} must be in {'(0' if low_open else '[0'}, 1], got {tau!r}")
    return Fraction(str(tau))


def _prefix_len(n: int, tau: Fraction) -> int:
    return math.floor(tau * n)  # exact: Fraction('0.7') * 10 == 7


def truncate(token_ids: Sequence[int], tau: float) -> tuple[int, ...]:
    """p_tau: the first floor(tau * |y-|) tokens of y- (tau read as the decimal written, see the module docstring)."""
    return tuple(token_ids[:_prefix_len(len(token_ids), _check_tau("tau", tau))])


def _lcp_len(a: Sequence[int], b: Sequence[int]) -> int:
    k = 0
    for x, y in zip(a, b):
        if x != y:
            break
        k += 1
    return k


def lcp_ratio(y_rev: Sequence[int], y_minus: Sequence[int]) -> float:
    """LCP(y+_rev, y-) / |y-|: the share of y- that y+_rev reproduces from the start (0.0 for an empty y-)."""
    return _lcp_len(y_rev, y_minus) / len(y_minus) if y_minus else 0.0


def _check_schedule(taus: Sequence[float], budget: int, lcp_tau: float | None):
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be an int >= 1 (B continuation attempts), got {budget!r}")
    if not taus:
        raise ValueError("taus must be non-empty, e.g. (0.7, 0.5, 0.3)")
    exact_taus = [_check_tau(f"taus[{i}]", t) for i, t in enumerate(taus)]
    fixed = None if lcp_tau is None else _check_tau("lcp_tau", lcp_tau, low_open=False)
    return exact_taus, fixed


# (seed positions, their prefixes, attempt) -> one continuation per prefix
BatchContinueFn = Callable[[list[int], list[tuple[int, ...]], int], list[Continuation]]
BatchVerifyFn = Callable[[list[int], list[tuple[int, ...]], list[Continuation]], list[bool]]  # (seeds, y_rev, cont)


def revise_batch(seeds: Sequence[FailedRollout], taus: Sequence[float], budget: int, lcp_tau: float | None,
                 continue_batch: BatchContinueFn, verify_batch: BatchVerifyFn) -> list[Revision]:
    """``revise`` for many seeds at once, in rounds: round k continues every seed not yet revised (one batched
    ``continue_batch(seed positions, prefixes, k)`` call) and verifies them together
    (``verify_batch(seed positions, y_rev, cont)``);
    each seed's attempts, stopping rule and budget are exactly those of ``revise``."""
    exact_taus, fixed = _check_schedule(taus, budget, lcp_tau)
    attempts: list[list[Attempt]] = [[] for _ in seeds]
    done: dict[int, Revision] = {}
    for k in range(budget):
        tau, tau_exact = taus[k % len(taus)], exact_taus[k % len(taus)]
        open_ = [i for i in range(len(seeds)) if i not in done]
        if not open_:
            break
        prefixes = [seeds[i].token_ids[:_prefix_len(len(seeds[i].token_ids), tau_exact)] for i in open_]
        continuations = continue_batch(open_, prefixes, k)
        y_revs = [p + tuple(c.token_ids) for p, c in zip(prefixes, continuations)]
        passed = verify_batch(open_, y_revs, continuations)
        threshold = tau_exact if fixed is None else fixed
        for i, prefix, cont, y_rev, ok in zip(open_, prefixes, continuations, y_revs, passed):
            y = seeds[i].token_ids
            n = len(y)
            lcp = _lcp_len(y_rev, y)
            keeps_prefix = Fraction(lcp, n) >= threshold if n else threshold == 0
            accepted = bool(ok) and keeps_prefix
            attempts[i].append(Attempt(attempt=k, tau=tau, prefix_len=len(prefix),
                                       continuation_tokens=len(cont.token_ids), passed=bool(ok),
                                       lcp=lcp / n if n else 0.0, accepted=accepted))
            if accepted:
                done[i] = Revision(accepted=True, attempts=tuple(attempts[i]), y_rev=y_rev, tau=tau)
    return [done.get(i) or Revision(accepted=False, attempts=tuple(attempts[i]), y_rev=None, tau=None)
            for i in range(len(seeds))]


def revise(y_minus: FailedRollout, taus: Sequence[float], budget: int, lcp_tau: float | None,
           continue_fn: ContinueFn, verify_fn: VerifyFn) -> Revision:
    """Spend up to ``budget`` continuation attempts on the seed y-, cycling through ``taus`` in order; stop at the
    first revision that passes ``verify_fn`` and keeps LCP / |y-| >= threshold (the attempt's tau when ``lcp_tau`` is
    None, else ``lcp_tau``)."""
    return revise_batch(
        [y_minus], taus, budget, lcp_tau,
        lambda _, prefixes, k: [continue_fn(prefixes[0], attempt=k)],
        lambda _, y_revs, conts: [verify_fn(y_revs[0], conts[0])],
    )[0]


def token_allowance(num_tokens: int, taus: Sequence[float], budget: int, max_new_tokens: int) -> int:
    """New tokens R-MEL's ``budget`` attempts on a seed of ``num_tokens`` tokens may generate: attempt k continues
    p_tau_k and may add ``max(max_new_tokens - floor(tau_k * |y-|), 1)`` tokens (the schedule cycled as in
    ``revise_batch``). MEL+Extra's budget for the same group."""
    exact_taus, _ = _check_schedule(taus, budget, None)
    return sum(max(max_new_tokens - _prefix_len(num_tokens, exact_taus[k % len(taus)]), 1) for k in range(budget))


@dataclass(frozen=True)
class ExtraAttempt:
    attempt: int  # 0.. within the group
    max_tokens: int  # the cap this fresh rollout was sampled with: max_new_tokens, or what was left of the allowance
    generated_tokens: int
    passed: bool


@dataclass(frozen=True)
class ExtraOutcome:
    """MEL+Extra on one all-negative group: the fresh rollouts drawn within its token allowance."""
    allowance: int
    attempts: tuple[ExtraAttempt, ...]

    @property
    def accepted(self) -> bool:
        return any(a.passed for a in self.attempts)

    @property
    def spent(self) -> int:
        """Tokens charged to the allowance (at least one per rollout, so an empty rollout still costs)."""
        return sum(max(a.generated_tokens, 1) for a in self.attempts)

    @property
    def token_match(self) -> float:
        """spent / allowance: 1.0 when the allowance was used up, less when a rollout passed first."""
        return self.spent / self.allowance if self.allowance else 0.0


# (group positions, each rollout's token cap, round) -> one fresh rollout per group
BatchSampleFn = Callable[[list[int], list[int], int], list[Continuation]]
BatchPassFn = Callable[[list[int], list[Continuation], int], list[bool]]  # (group positions, rollouts, round)


def extra_batch(allowances: Sequence[int], max_new_tokens: int, sample_batch: BatchSampleFn,
                verify_batch: BatchPassFn) -> list[ExtraOutcome]:
    """MEL+Extra, token-matched: round k draws one fresh rollout for every group that has neither passed nor spent
    its allowance, capped at ``min(max_new_tokens, allowance left)`` (one batched ``sample_batch`` call, one
    ``verify_batch`` call); a group stops at its first passing rollout."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens!r}")
    attempts: list[list[ExtraAttempt]] = [[] for _ in allowances]
    left = [int(a) for a in allowances]
    done: set[int] = set()
    k = 0
    while True:
        open_ = [i for i in range(len(allowances)) if i not in done and left[i] > 0]
        if not open_:
            break
        caps = [min(max_new_tokens, left[i]) for i in open_]
        rollouts = sample_batch(open_, caps, k)
        passed = verify_batch(open_, rollouts, k)
        for i, cap, r, ok in zip(open_, caps, rollouts, passed):
            n = min(len(r.token_ids), cap)
            attempts[i].append(ExtraAttempt(attempt=k, max_tokens=cap, generated_tokens=n, passed=bool(ok)))
            left[i] -= max(n, 1)
            if ok:
                done.add(i)
        k += 1
    return [ExtraOutcome(int(a), tuple(t)) for a, t in zip(allowances, attempts)]
