"""The runs a comparison report reads: per run directory its config, training metrics and evaluation scores
(`load_run`), named for the tables (`name_runs`); a score's identity (`ScoreKey`) and order. See `mel.eval.report`
for which files these are and how a missing one is reported.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import yaml

from mel import artifacts
from mel.eval import tables

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.parquet"
EVAL_DIR = "eval"
SUMMARY_FILE = "summary.parquet"
PROBLEMS_FILE = "problems.parquet"
TRAINING_COLUMNS = ("step", "reward_mean", "p_pair", "p_accept", "retention", "nll_coef", "nll_rl_grad_ratio",
                    "num_experiences", "revise_groups", "rescued_groups", "filter_rejections", "revision_tokens",
                    "token_allowance", "token_match", "loss", "grad_norm")
SUMMARY_COLUMNS = ("cell", "step", "benchmark", "column", "sampling", "metric", "value", "num_problems")
_COLUMN_ORDER = {"main": 0, "base": 1, "plus": 2}


def _metric_order(metric: str) -> tuple[int, int, str]:
    """pass@1 (greedy) first, then avg@n, then pass@k by k."""
    m = re.fullmatch(r"(pass|avg)@(\d+)", metric)
    if not m:
        return (3, 0, metric)
    k = int(m.group(2))
    return (0, k, "") if m.group(1) == "pass" and k == 1 else (1 if m.group(1) == "avg" else 2, k, "")


@dataclass(frozen=True)
class ScoreKey:
    """One reported number of a benchmark: which tests (column), how it was sampled, which metric."""

    benchmark: str
    column: str
    sampling: str
    metric: str

    @property
    def order(self) -> tuple:
        return (self.benchmark, _COLUMN_ORDER.get(self.column, 9), self.column, self.sampling != "greedy",
                self.sampling, _metric_order(self.metric))

    @property
    def where(self) -> str:
        """``mbpp`` or ``humaneval_plus (plus)``."""
        return self.benchmark if self.column == "main" else f"{self.benchmark} ({self.column})"

    @property
    def what(self) -> str:
        """``pass@1`` or ``avg@8 (t0.6-n8)``."""
        return self.metric if self.sampling == "greedy" else f"{self.metric} ({self.sampling})"


@dataclass(frozen=True)
class Score:
    value: float  # mean over problems
    num_problems: int
    step: int
    cell: str  # the cell folder, relative to the eval directory


@dataclass(frozen=True)
class RunData:
    """What the report knows about one run directory."""

    name: str  # shown in the report (the method, disambiguated when two runs share it)
    method: str  # cfg.run.name (the folder's name without a config)
    run_dir: str
    config: dict[str, Any] | None  # flattened resolved config, ``section.field -> value``
    training: tuple[dict[str, Any], ...]  # metrics rows (TRAINING_COLUMNS), by step
    scores: dict[int, dict[ScoreKey, Score]]  # eval step -> key -> score
    warnings: tuple[str, ...]

    @property
    def eval_dir(self) -> str:
        return artifacts.join(self.run_dir, EVAL_DIR)

    @property
    def final_step(self) -> int | None:
        return max(self.scores) if self.scores else None

    def finals(self) -> dict[ScoreKey, Score]:
        return self.scores[max(self.scores)] if self.scores else {}

    def curve(self, key: ScoreKey) -> list[tuple[int, float]]:
        """(step, value) of ``key`` over the run's steps (step -1, not part of a run, left out)."""
        return [(s, by[key].value) for s, by in sorted(self.scores.items()) if s >= 0 and key in by]

    def training_curve(self, column: str) -> list[tuple[int, float]]:
        """(RL step, value) with steps counted from 1, as ``mel run`` prints them: the step whose update makes
        checkpoint ``step_NNNN`` (NNNN = step - 1), i.e. the validation curve's "updates done"."""
        return [(int(r["step"]) + 1, float(r[column])) for r in self.training if r.get(column) is not None]


# --------------------------------------------------------------------------------------------------------------------
# Reading a run


def flatten_config(raw: dict[str, Any]) -> dict[str, Any]:
    """``{"mel": {"replay": "none"}} -> {"mel.replay": "none"}`` (one level of sections, as ``mel.config``)."""
    out: dict[str, Any] = {}
    for section, fields in raw.items():
        if isinstance(fields, dict):
            out.update({f"{section}.{k}": v for k, v in fields.items()})
        else:
            out[section] = fields
    return out


def _read_config(run_dir: str) -> tuple[str, dict[str, Any] | None, list[str]]:
    folder = run_dir.rstrip("/").rsplit("/", 1)[-1]
    uri = artifacts.join(run_dir, CONFIG_FILE)
    if not artifacts.exists(uri):
        note = f"{folder}: no {CONFIG_FILE}; the method is named after the folder and its config is unknown"
        return folder, None, [note]
    from mel.config import ConfigError, load_config, to_dict

    try:
        cfg = load_config(uri)
        return cfg.run.name, flatten_config(to_dict(cfg)), []
    except ConfigError as exc:  # e.g. a config written by an older version: fall back on its plain YAML
        with fsspec.open(uri, "rt") as f:
            raw = yaml.safe_load(f)
        if not isinstance(raw, dict):
            return folder, None, [f"{folder}: {CONFIG_FILE} is not a mapping of sections; its config is unknown"]
        name = str((raw.get("run") or {}).get("name") or folder)
        note = f"{folder}: {CONFIG_FILE} does not load with this version ({exc}); read as plain YAML"
        return name, flatten_config(raw), [note]


def _read_training(run_dir: str, label: str) -> tuple[tuple[dict[str, Any], ...], list[str]]:
    uri = artifacts.join(run_dir, METRICS_FILE)
    if not artifacts.is_complete(uri):
        state = "is being written" if artifacts.exists(uri) else "does not exist yet"
        return (), [f"{label}: {METRICS_FILE} {state} (no finished step): no training curves"]
    table = artifacts.read_table(uri)
    absent = [c for c in TRAINING_COLUMNS if c not in table.column_names]
    if "step" in absent:
        return (), [f"{label}: {METRICS_FILE} has no step column: no training curves"]
    rows = table.select([c for c in TRAINING_COLUMNS if c not in absent]).to_pylist()
    for r in rows:
        r.update({c: None for c in absent})
    notes = [f"{label}: {METRICS_FILE} has no {', '.join(absent)} column(s)"] if absent else []
    return tuple(sorted(rows, key=lambda r: r["step"])), notes


def _read_scores(run_dir: str, label: str) -> tuple[dict[int, dict[ScoreKey, Score]], list[str]]:
    uri = artifacts.join(run_dir, EVAL_DIR, SUMMARY_FILE)
    if not artifacts.is_complete(uri):
        return {}, [f"{label}: no evaluation ({EVAL_DIR}/{SUMMARY_FILE} not found)"]
    table = artifacts.read_table(uri)
    absent = [c for c in SUMMARY_COLUMNS if c not in table.column_names]
    if absent:
        return {}, [f"{label}: {EVAL_DIR}/{SUMMARY_FILE} lacks column(s) {', '.join(absent)}; evaluation ignored"]
    scores: dict[int, dict[ScoreKey, Score]] = {}
    notes: list[str] = []
    for r in table.select(list(SUMMARY_COLUMNS)).to_pylist():
        if r["value"] is None:
            continue
        key = ScoreKey(r["benchmark"], r["column"], r["sampling"], r["metric"])
        score = Score(float(r["value"]), int(r["num_problems"]), int(r["step"]), r["cell"])
        old = scores.setdefault(score.step, {}).get(key)
        if old is not None and old.value != score.value:
            notes.append(f"{label}: two summary rows for {key.where} {key.what} at step {score.step} "
                         f"({tables.pct(old.value)}% in {old.cell}, {tables.pct(score.value)}% in {score.cell}); "
                         "the later is used")
        scores[score.step][key] = score
    return scores, notes


def load_run(run_dir: str) -> RunData:
    """Read one run directory (see the module docstring); what is missing becomes a warning."""
    if not artifacts.exists(run_dir):
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    method, config, notes = _read_config(run_dir)
    training, more = _read_training(run_dir, method)
    scores, evals = _read_scores(run_dir, method)
    final = max(scores) if scores else None
    if final is not None:
        for key in sorted({k for by in scores.values() for k in by} - set(scores[final]), key=lambda k: k.order):
            last = max(s for s, by in scores.items() if key in by)
            evals.append(f"{method}: {key.where} {key.what} was evaluated up to step {last}, not at the final "
                         f"evaluated step {final}: left empty")
    return RunData(method, method, run_dir, config, training, scores, tuple(notes + more + evals))


def name_runs(runs: Sequence[RunData]) -> list[RunData]:
    """Give runs that share a method ``method (folder)`` as name (``#2``... if the folders match too)."""
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.method] = counts.get(r.method, 0) + 1
    out: list[RunData] = []
    taken: set[str] = set()
    for r in runs:
        name = r.method
        if counts[r.method] > 1:
            name = f"{r.method} ({r.run_dir.rstrip('/').rsplit('/', 1)[-1]})"
        base, i = name, 2
        while name in taken:
            name, i = f"{base} #{i}", i + 1
        taken.add(name)
        out.append(dataclasses.replace(r, name=name))
    return out


def find_run(runs: Sequence[RunData], name: str, role: str) -> RunData:
    """The run shown as ``name``, else the only run of method ``name``, else, where that method's runs are its seeds
    (each config known, each ``run.seed`` different), the lowest seed's: the one a sweep's report takes (its first
    cell of the method; the seeds are pooled by method anyway)."""
    for r in runs:
        if r.name == name:
            return r
    by_method = [r for r in runs if r.method == name]
    if len(by_method) == 1:
        return by_method[0]
    seeds = [(r.config or {}).get("run.seed") for r in by_method]
    if by_method and None not in seeds and len(set(seeds)) == len(seeds):
        return min(by_method, key=lambda r: (r.config or {})["run.seed"])
    known = ", ".join(r.name for r in runs)
    if by_method:
        raise ValueError(f"{role} {name!r} names {len(by_method)} runs; pass one of: {known}")
    raise ValueError(f"{role} {name!r} is not among the runs; known: {known}")
