"""Seeds pooled per method, for ``mel report``: runs that share a method (``run.name``) and differ only in ``run.seed``
are one method measured several times (a sweep's ``seeds:``).

- `group_by_method`: the runs of each method by seed (``run.seed`` of the run's ``config.yaml``).
- `pooled_means`: per method and score, the mean over its seeds of the final score, with a bootstrap interval.
- `pooled_comparisons`: per method and score, the paired difference to the baseline method pooled over the seeds
  both have, its paired bootstrap and the smallest difference the setup could detect (the power line).
- `identical_rollouts`: whether a run sampled, at every training step, the same rollouts as the baseline's run of
  the same seed.

What the intervals resample: **problems, never seeds**. For a method with seeds s = 1..S, ``V[s, i]`` is seed s's
per-problem value of the score (``problems.parquet`` of its run's final evaluated step) on the problems every one of
those runs evaluated, and ``v_i = mean_s V[s, i]``. The pooled mean is ``mean_i v_i`` (the mean over seeds of each
seed's score on those problems); a replicate draws n problems with replacement and averages ``v`` over them, i.e. it
averages every seed's values on the drawn problems (`mel.eval.stats.bootstrap_mean`). The pooled difference pairs run
(method, s) with (baseline, s) for the seeds both have, on the problems all of those runs evaluated:
``d_i = mean_s (a_s[i] - b_s[i])``, and `mel.eval.stats.paired_bootstrap` resamples problems of ``d``. The seeds stay
fixed: an interval measures how much the result could move with another draw of problems, with each problem's
seed-to-seed spread averaged in; it does not resample seeds, which with two or three seeds would say little.

The power line: ``MDE = (z_{1-alpha/2} + z_{power}) * SE`` with ``SE = sd(d, ddof=1) / sqrt(n)`` over the n
seed-averaged per-problem differences ``d_i`` (closed form, `mel.eval.stats.standard_error`, not the spread of the
bootstrap replicates): a true difference smaller than the MDE would be missed more often than ``1 - power`` of the
time.

Choices: a run without a known seed, a second run of the same (method, seed), and a method whose runs differ in more
than ``run.seed`` (e.g. a sweep's grid point; fields that do not change what a run computes, as in
`mel.config.config_hash`, are ignored) are left out of the pooling with a note. All bootstraps use the report's seed,
so those with the same number of problems draw the same problem sets (common random numbers, `mel.eval.stats`).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mel import artifacts
from mel.config import unhashed_fields
from mel.eval.runs import RunData, Score, ScoreKey
from mel.eval.stats import (
    BootstrapResult,
    MeanInterval,
    bootstrap_mean,
    minimum_detectable_effect,
    paired_bootstrap,
    standard_error,
)

ProblemValues = Callable[[RunData, ScoreKey, Score], "dict[str, float] | None"]
"""A run's per-problem values of a score at its final step (``mel.eval.compare.problem_reader``); None if missing."""

POWER = 0.8
ROLLOUTS_FILE = "rollouts.parquet"
ROLLOUT_TOKENS = "completion_token_ids"
_STEP_DIR = re.compile(r"step_\d{4,}")


def _seeds(seeds: Sequence[int]) -> str:
    return ", ".join(str(s) for s in seeds)


@dataclass(frozen=True)
class SeedGroup:
    """The runs of one method, one per seed."""

    method: str
    runs: dict[int, RunData]  # run.seed -> the run, seeds ascending

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(self.runs)


def _differing_fields(first: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """Config fields (flattened) that differ, leaving out run.name, run.seed and those `config_hash` ignores."""
    ignored = {"run.name", "run.seed"} | unhashed_fields()
    keys = dict.fromkeys([*first, *other])
    return [k for k in keys if k not in ignored and first.get(k) != other.get(k)]


def group_by_method(runs: Sequence[RunData]) -> tuple[list[SeedGroup], list[str]]:
    """The runs by method (in the order first seen), each method's by seed; notes for the runs left out."""
    by_method: dict[str, dict[int, RunData]] = {}
    notes: list[str] = []
    for run in runs:
        seed = run.config.get("run.seed") if run.config else None
        if not isinstance(seed, int):
            notes.append(f"{run.name}: no run.seed in its config; left out of the seeds pooled per method")
            continue
        mine = by_method.setdefault(run.method, {})
        if seed in mine:
            notes.append(f"{run.name}: a second run of {run.method} seed {seed} (after {mine[seed].name}); left out "
                         "of the seeds pooled per method")
            continue
        mine[seed] = run
    groups = []
    for method, by_seed in by_method.items():
        first = next(iter(by_seed.values()))
        differ = list(dict.fromkeys(f for r in by_seed.values() for f in _differing_fields(first.config or {},
                                                                                           r.config or {})))
        if differ:
            notes.append(f"{method}: its runs differ in more than run.seed ({', '.join(differ)}); its seeds are not "
                         "pooled")
            continue
        groups.append(SeedGroup(method, dict(sorted(by_seed.items()))))
    return groups, notes


def _label(key: ScoreKey) -> str:
    return f"{key.where} {key.what}"


def _per_seed(group: SeedGroup, seeds: Sequence[int], key: ScoreKey, values: ProblemValues
              ) -> dict[int, dict[str, float]]:
    """Seed -> the per-problem values of ``key`` at its run's final step, for the seeds that have them."""
    out = {}
    for s in seeds:
        run = group.runs[s]
        score = run.finals().get(key)
        got = values(run, key, score) if score is not None else None
        if got:
            out[s] = got
    return out


def _common_ids(label: str, per_run: Sequence[dict[str, float]], notes: list[str]) -> list[str]:
    """The problem ids every run has values for (sorted), with a note when some problem is left out."""
    ids = sorted(set.intersection(*(set(values) for values in per_run)))
    counts = "/".join(str(len(values)) for values in per_run)
    if not ids:
        notes.append(f"{label}: no problem that every run evaluated ({counts} evaluated); not pooled")
    elif len(ids) < max(len(values) for values in per_run):
        notes.append(f"{label}: {len(ids)} problems that every run evaluated ({counts} evaluated)")
    return ids


@dataclass(frozen=True)
class PooledMean:
    """One method's score over its seeds (see the module docstring)."""

    method: str
    key: ScoreKey
    seeds: tuple[int, ...]
    steps: tuple[int, ...]  # each seed's final evaluated step
    interval: MeanInterval  # mean over seeds and problems; its interval resamples problems


def pooled_means(groups: Sequence[SeedGroup], values: ProblemValues, *, n_resamples: int, seed: int, alpha: float
                 ) -> tuple[list[PooledMean], list[str]]:
    """Per method and score (any seed's final), the mean over the seeds that have per-problem values."""
    out: list[PooledMean] = []
    notes: list[str] = []
    for g in groups:
        keys = sorted({k for r in g.runs.values() for k in r.finals()}, key=lambda k: k.order)
        for key in keys:
            label = f"{g.method} on {_label(key)}, pooled over seeds"
            per_seed = _per_seed(g, g.seeds, key, values)
            if len(per_seed) < len(g.seeds):
                lacking = [s for s in g.seeds if s not in per_seed]
                notes.append(f"{label}: seed(s) {_seeds(lacking)} have no per-problem values at their final step; "
                             "left out")
            if not per_seed:
                continue
            ids = _common_ids(label, list(per_seed.values()), notes)
            if not ids:
                continue
            v = np.array([[vals[i] for i in ids] for vals in per_seed.values()]).mean(axis=0)  # [n] mean over seeds
            out.append(PooledMean(g.method, key, tuple(per_seed),
                                  tuple(g.runs[s].finals()[key].step for s in per_seed),
                                  bootstrap_mean(v, n_resamples=n_resamples, seed=seed, alpha=alpha)))
    return out, notes


@dataclass(frozen=True)
class PooledComparison:
    """A method against the baseline method on one score, pooled over the seeds both have (module docstring)."""

    method: str
    baseline: str
    key: ScoreKey
    seeds: tuple[int, ...]  # the paired seeds
    method_value: float  # mean over the paired seeds and problems
    baseline_value: float
    result: BootstrapResult  # of the seed-averaged per-problem differences; result.n: paired problems
    se: float | None  # sd(d, ddof=1) / sqrt(n); None with one problem
    mde: float | None  # minimum detectable effect at (alpha, POWER); None with one problem
    power: float = POWER


def _pair(g: SeedGroup, base: SeedGroup, key: ScoreKey, seeds: Sequence[int], values: ProblemValues,
          notes: list[str]) -> tuple[list[int], np.ndarray, np.ndarray] | None:
    """The seeds with per-problem values on both sides and the seed-averaged values ``[n]`` of each side."""
    label = f"{g.method} vs {base.method} on {_label(key)}, pooled over seeds"
    mine, theirs = _per_seed(g, seeds, key, values), _per_seed(base, seeds, key, values)
    used = [s for s in seeds if s in mine and s in theirs]
    if len(used) < len(seeds):
        lacking = [s for s in seeds if s not in used]
        notes.append(f"{label}: seed(s) {_seeds(lacking)} lack per-problem values on one side; left out")
    if not used:
        return None
    ids = _common_ids(label, [mine[s] for s in used] + [theirs[s] for s in used], notes)
    if not ids:
        return None
    a = np.array([[mine[s][i] for i in ids] for s in used]).mean(axis=0)  # [n] method, mean over seeds
    b = np.array([[theirs[s][i] for i in ids] for s in used]).mean(axis=0)  # [n] baseline, mean over seeds
    return used, a, b


def pooled_comparisons(groups: Sequence[SeedGroup], baseline: SeedGroup, values: ProblemValues, *, n_resamples: int,
                       seed: int, alpha: float) -> tuple[list[PooledComparison], list[str]]:
    """Every other method against ``baseline`` on each score both have at a final step of a seed both have."""
    out: list[PooledComparison] = []
    notes: list[str] = []
    for g in groups:
        if g is baseline:
            continue
        common = [s for s in g.seeds if s in baseline.runs]
        only_mine = [s for s in g.seeds if s not in baseline.runs]
        only_base = [s for s in baseline.seeds if s not in g.runs]
        if only_mine or only_base:
            sides = [f"seed(s) {_seeds(ss)} only {who} has" for ss, who in ((only_mine, g.method),
                                                                            (only_base, baseline.method)) if ss]
            notes.append(f"{g.method} vs {baseline.method}, pooled over seeds: {' and '.join(sides)}; left out of "
                         "the paired difference")
        if not common:
            notes.append(f"{g.method} vs {baseline.method}: no seed in common; not compared pooled over seeds")
            continue
        keys = sorted({k for s in common for k in g.runs[s].finals() if k in baseline.runs[s].finals()},
                      key=lambda k: k.order)
        for key in keys:
            paired = _pair(g, baseline, key, common, values, notes)
            if paired is None:
                continue
            used, a, b = paired
            se = standard_error(a - b)
            out.append(PooledComparison(
                g.method, baseline.method, key, tuple(used), float(a.mean()), float(b.mean()),
                paired_bootstrap(a, b, n_resamples=n_resamples, seed=seed, alpha=alpha), se,
                None if se is None else minimum_detectable_effect(se, alpha=alpha, power=POWER)))
    return out, notes


# --------------------------------------------------------------------------------------------------------------------
# Rollouts


def _step_dirs(run_dir: str) -> list[str]:
    return [name for name in artifacts.list_names(run_dir) if _STEP_DIR.fullmatch(name)]


def _completions(run_dir: str, step: str) -> list[Any] | None:
    uri = artifacts.join(run_dir, step, ROLLOUTS_FILE)
    try:
        if not artifacts.is_complete(uri):
            return None
        table = artifacts.read_table(uri)
    except (OSError, ValueError):  # unreadable or changed since written (CorruptArtifact): no verdict
        return None
    return table.column(ROLLOUT_TOKENS).to_pylist() if ROLLOUT_TOKENS in table.column_names else None


def identical_rollouts(run: RunData, baseline: RunData) -> int | None:
    """The number of training steps when both runs have the same ``step_NNNN`` folders and, in each, rollouts
    (``rollouts.parquet``) with the same ``completion_token_ids``, row by row; None otherwise, and when a step's
    file is missing or unreadable on either side. Stops at the first step that differs."""
    steps = _step_dirs(run.run_dir)
    if not steps or steps != _step_dirs(baseline.run_dir):
        return None
    for step in steps:
        mine = _completions(run.run_dir, step)
        if mine is None or mine != _completions(baseline.run_dir, step):
            return None
    return len(steps)


def _same_updates(run: RunData, baseline: RunData) -> bool:
    """Both runs' metrics give the same loss and gradient norm at every step (all of them recorded)."""
    mine, theirs = ([(r.get("step"), r.get("loss"), r.get("grad_norm")) for r in x.training] for x in (run, baseline))
    return bool(mine) and mine == theirs and all(v is not None for row in mine for v in row)


def same_rollout_notes(groups: Sequence[SeedGroup], baseline: SeedGroup) -> list[str]:
    """A sentence per (method, seed) whose rollouts were the baseline's run of the same seed's at every step: the
    comparison then measures only the method's extra loss term, or nothing at all where its metrics show that no
    meta-experience entered that term in any step (MEL whose M were all rejected by replay) or that its updates were
    the baseline's too (the same loss and gradient norm at every step: R-MEL and MEL+Extra when neither rescued a
    group)."""
    out = []
    for g in groups:
        if g is baseline:
            continue
        for s in (s for s in g.seeds if s in baseline.runs):
            steps = identical_rollouts(g.runs[s], baseline.runs[s])
            if not steps:
                continue
            text = f"{g.method} seed {s}: its rollouts were identical to {baseline.method}'s in all {steps} steps"
            kept = [r.get("num_experiences") for r in g.runs[s].training]
            if kept and all(k == 0 for k in kept):
                out.append(f"{text}, and no meta-experience entered its loss in any step: it trained as "
                           f"{baseline.method} did, so the comparison has no difference to measure")
            elif _same_updates(g.runs[s], baseline.runs[s]):
                out.append(f"{text}, and so were its updates (the same loss and gradient norm at every step): it "
                           f"trained as {baseline.method} did, so the comparison has no difference to measure")
            else:
                out.append(f"{text}, so the comparison measures only its extra loss term")
    return out
