"""What `mel.eval.report` computes before it writes anything: each run against the baseline (paired bootstrap over
problems), the ablation rows (scores and the config fields that changed) and the seeds pooled per method
(`mel.eval.seeds`). The module docstring of `mel.eval.report` says which choices these make."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from mel import artifacts
from mel.eval import seeds
from mel.eval.runs import PROBLEMS_FILE, RunData, Score, ScoreKey
from mel.eval.seeds import PooledComparison, PooledMean, ProblemValues, SeedGroup
from mel.eval.stats import BootstrapResult, paired_bootstrap
from mel.eval.tables import MISSING


def problem_reader() -> ProblemValues:
    """Per-problem values of a score from its cell's ``problems.parquet`` (each file read once); None if missing."""
    cache: dict[str, list[dict[str, Any]] | None] = {}

    def read(run: RunData, key: ScoreKey, score: Score) -> dict[str, float] | None:
        uri = artifacts.join(run.eval_dir, score.cell, PROBLEMS_FILE)
        if uri not in cache:
            cache[uri] = artifacts.read_table(uri).to_pylist() if artifacts.is_complete(uri) else None
        rows = cache[uri]
        if rows is None:
            return None
        return {r["problem_id"]: float(r["value"]) for r in rows
                if (r["benchmark"], r["column"], r["metric"]) == (key.benchmark, key.column, key.metric)
                and r["value"] is not None}

    return read


@dataclass(frozen=True)
class Comparison:
    """A method against the baseline on one score, over the problems both have (paired by problem_id)."""

    method: str
    baseline: str
    key: ScoreKey
    method_step: int
    baseline_step: int
    method_value: float  # mean over the paired problems
    baseline_value: float
    result: BootstrapResult


def compare_to_baseline(runs: Sequence[RunData], baseline: RunData, values: ProblemValues, *, n_resamples: int,
                        seed: int, alpha: float) -> tuple[list[Comparison], list[str]]:
    """Paired bootstrap of every other run against ``baseline`` on each score both have at their final steps."""
    out: list[Comparison] = []
    notes: list[str] = []
    base_finals = baseline.finals()
    for run in runs:
        if run is baseline:
            continue
        finals = run.finals()
        for key in sorted(set(finals) & set(base_finals), key=lambda k: k.order):
            mine, theirs = values(run, key, finals[key]), values(baseline, key, base_finals[key])
            label = f"{run.name} vs {baseline.name} on {key.where} {key.what}"
            if mine is None or theirs is None:
                missing = run.name if mine is None else baseline.name
                notes.append(f"{label}: no {PROBLEMS_FILE} for {missing}'s cell; not compared")
                continue
            ids = sorted(set(mine) & set(theirs))
            if not ids:
                notes.append(f"{label}: no problem in common; not compared")
                continue
            if len(ids) < max(len(mine), len(theirs)):
                notes.append(f"{label}: {len(ids)} paired problems ({len(mine)} and {len(theirs)} evaluated)")
            a, b = [mine[i] for i in ids], [theirs[i] for i in ids]
            out.append(Comparison(run.name, baseline.name, key, finals[key].step, base_finals[key].step,
                                  sum(a) / len(a), sum(b) / len(b),
                                  paired_bootstrap(a, b, n_resamples=n_resamples, seed=seed, alpha=alpha)))
    return out, notes


def default_ablation_base(methods: Sequence[str]) -> str | None:
    """The most common *parent* among the methods, None if no method has one. A method's parent is the longest other
    method that, followed by ``_``, starts its name (``mel_code`` for ``mel_code_no_replay``, even when ``mel`` is
    there too); ties go to the longer name."""
    names = list(dict.fromkeys(methods))
    counts: dict[str, int] = {}
    for m in names:
        parents = [p for p in names if p != m and m.startswith(p + "_")]
        if parents:
            parent = max(parents, key=len)
            counts[parent] = counts.get(parent, 0) + 1
    return max(counts, key=lambda p: (counts[p], len(p))) if counts else None


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def config_changes(base: dict[str, Any] | None, other: dict[str, Any] | None) -> tuple[str, ...]:
    """``section.field: base -> other`` for every field that differs (run.name left out), in the base's order."""
    if base is None or other is None:
        return ("config unknown",)
    keys = list(dict.fromkeys([*base, *other]))
    return tuple(f"{k}: {_show(base.get(k, MISSING))} → {_show(other.get(k, MISSING))}" for k in keys
                 if k != "run.name" and base.get(k, MISSING) != other.get(k, MISSING))


@dataclass(frozen=True)
class AblationRow:
    name: str
    step: int | None  # final evaluated step
    values: dict[ScoreKey, float]
    deltas: dict[ScoreKey, float]  # value - the ablation base's value, for the scores both have
    changed: tuple[str, ...]  # config fields that differ from the ablation base's


def ablation_rows(runs: Sequence[RunData], base: RunData) -> list[AblationRow]:
    """The base's row, then one per run whose method starts with ``<base method>_``."""
    base_values = {k: s.value for k, s in base.finals().items()}
    rows = [AblationRow(base.name, base.final_step, base_values, {}, ())]
    for run in runs:
        if run is base or not run.method.startswith(base.method + "_"):
            continue
        values = {k: s.value for k, s in run.finals().items()}
        rows.append(AblationRow(run.name, run.final_step, values,
                                {k: v - base_values[k] for k, v in values.items() if k in base_values},
                                config_changes(base.config, run.config)))
    return rows


def pool_seeds(runs: Sequence[RunData], baseline: RunData, values: ProblemValues, *, n_resamples: int, seed: int,
               alpha: float, notes: list[str]
               ) -> tuple[list[SeedGroup], list[PooledMean], list[PooledComparison], list[str]]:
    """`mel.eval.seeds` over the runs: groups, means, comparisons to the baseline's method and the same-rollouts
    sentences; appends its notes to ``notes``."""
    groups, more = seeds.group_by_method(runs)
    notes += more
    means, more = seeds.pooled_means(groups, values, n_resamples=n_resamples, seed=seed, alpha=alpha)
    notes += more
    base = next((g for g in groups if g.method == baseline.method), None)
    if base is None:
        if groups:
            notes.append(f"the baseline method {baseline.method} is not pooled (see above): no comparison pooled "
                         "over seeds")
        return groups, means, [], []
    pooled, more = seeds.pooled_comparisons(groups, base, values, n_resamples=n_resamples, seed=seed, alpha=alpha)
    notes += more
    return groups, means, pooled, seeds.same_rollout_notes(groups, base)
