"""Sweep files: a grid of training runs (methods x config fields x seeds) over one base config, the benchmarks each
run's final checkpoint is evaluated on, and the comparison report that ends the sweep.

    mel sweep configs/sweeps/nightly_tiny.yaml                   # the CLI (a complete sweep starts no Prefect)
    python -m flows.sweep configs/sweeps/nightly_tiny.yaml       # the mel-sweep flow, as its deployments run it

A sweep file (YAML) sets the fields of `Sweep`, read through the run config's loader (`mel.config`): an unknown key
or a bad value fails naming the key and what is allowed, and every cell's config is built (and checked) before
anything runs::

    name: nightly-tiny                  # the report's name and the Prefect artifact key (sweep-<name>)
    base: ../tiny.yaml                  # relative to the sweep file
    methods: [grpo, mel_code]           # configs/methods/<name>.yaml, each laid over base (mel run M --base B)
    grid: {optimizer.lr: [1e-2, 3e-2]}  # section.field -> values; the cells are the cartesian product
    seeds: [0, 1]                       # run.seed of each cell
    set: [run.steps=2]                  # overrides every cell gets
    eval: {benchmarks: [toy_regex], limit: 16, samples: 1, temperature: 0}   # optional (default: no evaluation)
    report: {out: reports/nightly-tiny, baseline: grpo}

Cells are ordered method-major: each method, then each grid point (keys sorted), then each seed. A cell is one
training run in its default run directory (``<run.runs_root>/<run.name>-<config hash>``), the one ``mel run`` with the
same config uses, so a sweep and a hand-started run share their artifacts. `report_is_current` lets a re-triggered
sweep skip rebuilding an unchanged report (``sweep.json`` in the report folder, written last, records its inputs).
With experiment trackers on (``set: ["run.loggers=[wandb, mlflow]"]``), each cell logs a tracker run of its own,
grouped by the sweep's name (the ``mel-sweep`` flow sets ``trackers.group``: the W&B group, the MLflow experiment;
not in the config hash, so the cell's run directory is the same).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import posixpath
import re
import time
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from mel import artifacts
from mel.config import (
    Config, ConfigError, check, coerce, config_hash, default_run_dir, load_config, read_yaml, resolve_relative,
)

METHODS_DIR = posixpath.join(posixpath.dirname(posixpath.dirname(posixpath.abspath(__file__))), "configs", "methods")
REPORT_MANIFEST = "sweep.json"


@dataclass(frozen=True)
class SweepEval:
    """What each cell's final checkpoint is evaluated on once it has trained (the ``mel-eval`` flow, writing the run's
    ``eval/``); the fields are ``mel eval``'s flags. No benchmarks (the default): no evaluation, and the report shows
    training curves only."""

    benchmarks: tuple[str, ...] = ()
    """Benchmark names (``mel eval --list``)."""
    limit: int | None = None
    """The first N problems of each benchmark only."""
    samples: int | None = None
    """Samples per problem; with ``temperature``, one sampling instead of the eval config's (the papers' two)."""
    temperature: float | None = None
    """0 = greedy (Pass@1)."""
    max_new_tokens: int | None = None
    """Generation budget per sample (default: the eval config's)."""
    data_root: str | None = None
    """Where benchmark files are (default: the eval config's)."""
    config: str | None = None
    """An eval config file (``configs/eval/*.yaml``), relative to the sweep file (default: ``mel eval``'s)."""

    def __post_init__(self) -> None:
        check(self.limit is None or self.limit >= 1, "eval.limit", "null or at least 1")
        check(self.samples is None or self.samples >= 1, "eval.samples", "null or at least 1")
        check(self.temperature is None or self.temperature >= 0, "eval.temperature", "null or at least 0")


@dataclass(frozen=True)
class SweepReport:
    """The comparison report that ends the sweep (``mel report`` over its cells: `mel.eval.report.build_report`)."""

    out: str | None = None
    """Local folder the report goes to (report.md/.html, PNGs, CSVs); default ``reports/<sweep name>``."""
    baseline: str | None = None
    """The method (run name) compared against: default ``grpo`` when a cell is GRPO, else the first cell's. When the
    baseline method has several cells (seeds, grid points), its first cell is the baseline run."""
    ablation_base: str | None = None
    """The method ablations are relative to (default: `mel.eval.compare.default_ablation_base`)."""
    n_resamples: int = 10000
    """Paired bootstrap resamples."""
    seed: int = 0
    """Bootstrap seed."""

    def __post_init__(self) -> None:
        check(self.n_resamples >= 1, "report.n_resamples", "at least 1")


@dataclass(frozen=True)
class GridAxis:
    """One swept config field and its values."""

    key: str  # section.field
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Method:
    name: str  # as written in the sweep file
    path: str  # the method's config file


@dataclass(frozen=True)
class Sweep:
    name: str
    """Lowercase letters, digits and dashes (it names the report folder and the Prefect artifact ``sweep-<name>``)."""
    base: str | None = None
    """The run config every method is laid over (as ``mel run METHOD --base BASE``); relative to the sweep file.
    Without it each method keeps its own ``base:`` chain; without methods it is the one config swept."""
    methods: tuple[Method, ...] = ()
    """Method configs: a name in ``configs/methods/`` (``grpo``, ``mel_code``, ...: `methods_dir`) or a YAML path
    relative to the sweep file. Empty: the base config alone."""
    grid: tuple[GridAxis, ...] = ()
    """Config fields swept (``section.field: [values]``), sorted by key; every cell gets one value of each."""
    seeds: tuple[int, ...] = ()
    """``run.seed`` of each cell; empty keeps the config's."""
    set: tuple[str, ...] = ()
    """``section.field=value`` overrides every cell gets (``mel run --set``)."""
    runs_root: str | None = None
    """``run.runs_root`` of every cell (where the run directories go); default the config's (``runs``)."""
    eval: SweepEval = field(default_factory=SweepEval)
    """Evaluation of each cell's final checkpoint (optional)."""
    report: SweepReport = field(default_factory=SweepReport)
    """The report that ends the sweep."""
    path: str = ""
    """The sweep file this was read from (not a key of the file)."""

    def __post_init__(self) -> None:
        check(bool(re.fullmatch(r"[a-z0-9][a-z0-9-]*", self.name)), "name",
               "lowercase letters, digits and dashes (it is the Prefect artifact key sweep-<name>)")
        check(self.base is not None or bool(self.methods), "base", "set when methods is empty (nothing to run)")
        check(len(set(self.seeds)) == len(self.seeds), "seeds", "distinct")

    @property
    def report_dir(self) -> str:
        return self.report.out or f"reports/{self.name}"


@dataclass(frozen=True)
class SweepCell:
    """One training run of a sweep: a method (or the base alone), one grid point, one seed."""

    index: int  # 1-based, in sweep order
    method: Method | None
    point: tuple[tuple[str, Any], ...]  # (section.field, value) of each grid axis
    seed: int | None
    config_path: str  # what `mel run` is given: the method file, or the base when there are no methods
    base: str | None  # mel run --base
    overrides: tuple[str, ...]  # --set: the sweep's set, the grid point, run.seed, run.runs_root

    @property
    def label(self) -> str:
        parts = [self.method.name] if self.method else []
        parts += [f"{k}={_show(v)}" for k, v in self.point]
        parts += [f"seed={self.seed}"] if self.seed is not None else []
        return " ".join(parts) or "base"


@dataclass(frozen=True)
class PlannedCell:
    """A cell with its resolved config: where it trains (``run_dir``) and under which hash."""

    cell: SweepCell
    config: Config
    run_dir: str
    config_hash: str


# --------------------------------------------------------------------------------------------------------------------
# Reading a sweep file


def _show(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _grid(raw: Any, where: str) -> tuple[GridAxis, ...]:
    """``{section.field: [values]}``: each key a field of `Config`, each value a non-empty list."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}grid: must be a mapping of section.field to a list of values, got {raw!r}")
    sections = typing.get_type_hints(Config)
    axes = []
    for key in sorted(raw):
        section, _, name = str(key).partition(".")
        if section not in sections:
            raise ConfigError(f"{where}grid: {key!r}: unknown section {section!r}; known sections: "
                              f"{', '.join(sorted(sections))}")
        fields = sorted(f.name for f in dataclasses.fields(sections[section]))
        if name not in fields:
            raise ConfigError(f"{where}grid: {key!r}: unknown key {name!r} of {section}; known keys: "
                              f"{', '.join(fields)}")
        values = raw[key]
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}grid.{key}: must be a non-empty list of values, got {values!r}")
        axes.append(GridAxis(str(key), tuple(values)))
    return tuple(axes)


def methods_dir(path: str) -> str:
    """Where method names are looked up: ``configs/methods/`` beside the sweep file's folder (``configs/sweeps/``),
    else the repository's (beside this package; an installed, non-editable package has none)."""
    beside = posixpath.join(posixpath.dirname(posixpath.dirname(posixpath.abspath(path))), "methods")
    return beside if os.path.isdir(beside) else METHODS_DIR


def _method(text: str, path: str) -> Method:
    if text.endswith((".yaml", ".yml")) or "/" in text:
        return Method(posixpath.splitext(posixpath.basename(text))[0], resolve_relative(path, text))
    folder = methods_dir(path)
    found = posixpath.join(folder, f"{text}.yaml")
    if not os.path.exists(found):
        known = sorted(n[:-5] for n in os.listdir(folder) if n.endswith(".yaml")) if os.path.isdir(folder) else []
        raise ConfigError(f"{path}: methods: unknown method {text!r}; choose one of {', '.join(known)} ({folder}), "
                          "or give a YAML path")
    return Method(text, found)


def load_sweep(path: str) -> Sweep:
    """Read a sweep file (see the module docstring); unknown keys and bad values fail naming the key."""
    raw, base = read_yaml(path)
    hints = typing.get_type_hints(Sweep)
    keys = sorted(set(hints) - {"path"})
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(keys)}")
    if "name" not in raw:
        raise ConfigError(f"{path}: name: missing (lowercase letters, digits and dashes, e.g. nightly-tiny)")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "grid":
            values["grid"] = _grid(value, f"{path}: ")
        elif key == "methods":
            names = coerce(value or [], tuple[str, ...], "methods")
            values["methods"] = tuple(_method(n, path) for n in names)
        elif value is not None:
            try:
                values[key] = coerce(value, hints[key], key)
            except ConfigError as exc:
                raise ConfigError(f"{path}: {exc}") from None
    if values.get("eval"):
        from mel.eval.benchmarks import BENCHMARKS

        unknown = [b for b in values["eval"].benchmarks if b not in BENCHMARKS.names()]
        if unknown:
            raise ConfigError(f"{path}: eval.benchmarks: unknown benchmark(s) {', '.join(unknown)}; choose from "
                              f"{', '.join(BENCHMARKS.names())}")
    if values.get("eval") and values["eval"].config:
        values["eval"] = dataclasses.replace(values["eval"], config=resolve_relative(path, values["eval"].config))
    try:
        return Sweep(**values, base=base, path=path)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


# --------------------------------------------------------------------------------------------------------------------
# Cells


def sweep_cells(sweep: Sweep) -> list[SweepCell]:
    """Every cell of the sweep, method-major, then grid points, then seeds."""
    methods: list[Method | None] = list(sweep.methods) or [None]
    points = list(itertools.product(*[[(axis.key, v) for v in axis.values] for axis in sweep.grid]))
    seeds: list[int | None] = list(sweep.seeds) or [None]
    root = [f"run.runs_root={sweep.runs_root}"] if sweep.runs_root else []
    cells = []
    for i, (method, point, seed) in enumerate(itertools.product(methods, points, seeds), start=1):
        overrides = (*sweep.set, *(f"{k}={_show(v)}" for k, v in point),
                     *([f"run.seed={seed}"] if seed is not None else []), *root)
        # without methods, base is set (Sweep checks it)
        config_path, base = (method.path, sweep.base) if method else (typing.cast(str, sweep.base), None)
        cells.append(SweepCell(i, method, tuple(point), seed, config_path, base, overrides))
    return cells


def plan_sweep(sweep: Sweep) -> list[PlannedCell]:
    """Every cell's resolved config and run directory; a cell whose config is bad fails naming the cell, and two cells
    that resolve to the same config (the same run) fail too. Checks the report's baseline names a cell's method."""
    planned: list[PlannedCell] = []
    seen: dict[str, SweepCell] = {}
    for cell in sweep_cells(sweep):
        try:
            cfg = load_config(cell.config_path, cell.overrides, base=cell.base)
        except ConfigError as exc:
            raise ConfigError(f"{sweep.path}: cell {cell.index} ({cell.label}): {exc}") from None
        digest = config_hash(cfg)
        if digest in seen:
            raise ConfigError(f"{sweep.path}: cells {seen[digest].index} ({seen[digest].label}) and {cell.index} "
                              f"({cell.label}) resolve to the same config (hash {digest}): one run, listed twice")
        seen[digest] = cell
        planned.append(PlannedCell(cell, cfg, default_run_dir(cfg), digest))
    names = list(dict.fromkeys(p.config.run.name for p in planned))
    for key, name in (("report.baseline", sweep.report.baseline), ("report.ablation_base", sweep.report.ablation_base)):
        if name is not None and name not in names:
            raise ConfigError(f"{sweep.path}: {key}: {name!r} is not the run name of any cell; choose one of "
                              f"{', '.join(names)}")
    return planned


def baseline_run(sweep: Sweep, planned: list[PlannedCell]) -> str:
    """The run directory of the report's baseline: the first cell of the baseline method."""
    name = sweep.report.baseline or ("grpo" if any(p.config.run.name == "grpo" for p in planned)
                                     else planned[0].config.run.name)
    return next(p.run_dir for p in planned if p.config.run.name == name)


def completed_metrics(p: PlannedCell) -> list[dict] | None:
    """The cell's per-step metrics if its run is complete (every output of every stage of its ``run.steps`` steps,
    for its config hash: `mel.stages.step.completed_run_metrics`); None when it has work to do."""
    from mel.stages.step import completed_run_metrics
    from mel.stages.table import STEP

    return completed_run_metrics(STEP, p.run_dir, p.config_hash, p.config.run.steps)


def cell_head(sweep: Sweep, p: PlannedCell, total: int) -> str:
    """The start of a cell's progress line: ``[sweep nightly-tiny 2/4] grpo seed=1``."""
    return f"[sweep {sweep.name} {p.cell.index}/{total}] {p.cell.label}"


def skipped_line(sweep: Sweep, p: PlannedCell, total: int, metrics: list[dict]) -> str:
    return (f"{cell_head(sweep, p, total)}: complete, skipped ({p.run_dir}, {len(metrics)} steps, final reward "
            f"{metrics[-1]['reward_mean']:.3f})")


def eval_request(sweep: Sweep, run_dir: str):
    """The ``mel eval`` request of a cell's final checkpoint (`mel.eval.plan.EvalRequest`); None without benchmarks."""
    if not sweep.eval.benchmarks:
        return None
    from mel.eval.plan import EvalRequest

    e = sweep.eval
    return EvalRequest(target=run_dir, benchmarks=e.benchmarks, limit=e.limit, samples=e.samples,
                       temperature=e.temperature, max_new_tokens=e.max_new_tokens, steps="final",
                       data_root=e.data_root, config_path=e.config)


def eval_complete(req) -> bool:
    """Every cell of an eval request is complete (its ``problems.parquet``): ``mel eval`` would reuse them all."""
    from mel.eval.cells import cell_done
    from mel.eval.plan import plan_cells

    eval_dir, cells = plan_cells(req)
    return all(cell_done(c, eval_dir) for c in cells)


# --------------------------------------------------------------------------------------------------------------------
# The report


def _data_sha(uri: str) -> str | None:
    return artifacts.read_manifest(uri).get("sha256") if artifacts.is_complete(uri) else None


def report_inputs(sweep: Sweep, planned: list[PlannedCell]) -> dict[str, Any]:
    """What the sweep's report is built from: each cell's run directory, config hash and the content hashes of its
    ``metrics.parquet`` and ``eval/summary.parquet``, and the report settings."""
    return {"sweep": sweep.name, "report": dataclasses.asdict(sweep.report), "baseline": baseline_run(sweep, planned),
            "cells": [{"label": p.cell.label, "run_dir": p.run_dir, "config_hash": p.config_hash,
                       "metrics": _data_sha(artifacts.join(p.run_dir, "metrics.parquet")),
                       "eval": _data_sha(artifacts.join(p.run_dir, "eval", "summary.parquet"))} for p in planned]}


def report_is_current(sweep: Sweep, planned: list[PlannedCell]) -> bool:
    """The report folder holds a complete report built from exactly these inputs (its ``sweep.json``, written last)."""
    path = os.path.join(sweep.report_dir, REPORT_MANIFEST)
    if not (os.path.exists(path) and os.path.exists(os.path.join(sweep.report_dir, "report.md"))):
        return False
    with open(path, encoding="utf-8") as f:
        recorded = json.load(f)
    return recorded.get("inputs") == report_inputs(sweep, planned)


def cells_markdown(sweep: Sweep, planned: list[PlannedCell], status: dict[int, str] | None = None) -> str:
    """The sweep's cells as a Markdown table (cell, run directory, config hash, and what this trigger did)."""
    status = status or {}
    lines = [f"# Sweep `{sweep.name}` ({len(planned)} cells, `{sweep.path}`)", "",
             "| # | cell | run directory | config hash | this trigger |", "|---|---|---|---|---|"]
    lines += [f"| {p.cell.index} | {p.cell.label} | `{p.run_dir}` | `{p.config_hash}` | "
              f"{status.get(p.cell.index, '')} |" for p in planned]
    return "\n".join(lines)


@dataclass(frozen=True)
class SweepReportResult:
    markdown_path: str
    markdown: str  # the cells table, then the report
    reused: bool  # the report was current; nothing was rebuilt
    warnings: tuple[str, ...] = ()


def write_sweep_report(sweep: Sweep, planned: list[PlannedCell], status: dict[int, str] | None = None,
                       failed: typing.Collection[int] = ()) -> SweepReportResult:
    """``mel report`` over the sweep's cells into ``sweep.report_dir`` (reused when `report_is_current`), with
    ``sweep.md`` (the cells table, then the report: what is published) and ``sweep.json`` (the report's inputs) last.
    Cells in ``failed`` (indices) are left out of the report, not of the cells table. Returns the report's path and
    the Markdown to publish (this trigger's statuses in the cells table)."""
    out = sweep.report_dir
    md_path = os.path.join(out, "report.md")
    cells = cells_markdown(sweep, planned, status)
    planned = [p for p in planned if p.cell.index not in failed]
    if report_is_current(sweep, planned):
        with open(md_path, encoding="utf-8") as f:
            return SweepReportResult(md_path, f"{cells}\n\n{f.read()}", True)
    from mel.eval.report import build_report
    from mel.eval.runs import load_run, name_runs

    run_dirs = [p.run_dir for p in planned]
    shown = {r.run_dir: r.name for r in name_runs([load_run(d) for d in run_dirs])}
    ablation = sweep.report.ablation_base
    if ablation is not None:
        ablation = next(shown[p.run_dir] for p in planned if p.config.run.name == ablation)
    built = build_report(run_dirs, out, baseline=shown[baseline_run(sweep, planned)], ablation_base=ablation,
                         n_resamples=sweep.report.n_resamples, seed=sweep.report.seed,
                         title=f"Sweep {sweep.name}: " + ", ".join(dict.fromkeys(p.config.run.name for p in planned)))
    markdown = f"{cells}\n\n{built.markdown}"
    with open(os.path.join(out, "sweep.md"), "w", encoding="utf-8") as f:
        f.write(markdown)
    manifest = {"inputs": report_inputs(sweep, planned), "written_at": time.time(),
                "files": sorted(os.listdir(out))}
    tmp = os.path.join(out, f".{REPORT_MANIFEST}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    os.replace(tmp, os.path.join(out, REPORT_MANIFEST))
    return SweepReportResult(built.markdown_path, markdown, False, built.warnings)
