"""The comparison report of ``mel report``: tables, paired bootstrap comparisons, ablations and training curves of
several runs, as Markdown, HTML, PNG and CSV.

``build_report(run_dirs, out_dir)`` reads, per run directory (a path or fsspec URL, through `mel.artifacts`):

- ``config.yaml``: the resolved config; the method is ``run.name`` (``name (folder)`` when two runs share a name).
- ``metrics.parquet`` (``mel.stages.table.METRICS``): the training curves (reward_mean, p_pair, p_accept, retention) and
  the method-fidelity diagnostics (``diagnostics_section``: the measured NLL/RL gradient-norm ratio, R-MEL's
  prefix-constraint rejections, the token match of revision and MEL+Extra).
- ``eval/summary.parquet`` (``mel.schemas.EVAL_SUMMARY``) and each cell's ``eval/<cell>/problems.parquet``
  (``EVAL_PROBLEMS``): benchmark scores per step (updates done; 0 = the base model, -1 = not part of a run) and the
  per-problem values the paired bootstrap resamples.

Any of them may be missing (a run still training, not evaluated yet, an older run): the report says so in its notes
(``Report.warnings``) and leaves out what it cannot show. It writes, under ``out_dir`` (a local folder):
``report.md`` and ``report.html`` (the same content), ``validation.png``, ``training_reward.png``, ``mel_rates.png``
(each only when there is something to draw) and ``main_table.csv``, ``comparisons.csv``, ``ablation.csv``.

Choices the brief leaves open:

- A run's scores are those at its *final evaluated step*, the highest step in its summary; a benchmark evaluated only
  at earlier steps is left empty (with a note), not filled in from an older checkpoint.
- A score is identified by (benchmark, column, sampling, metric); sampling is shown only when not greedy.
- "Best" in the main table is the highest value at the shown precision (ties are all bold), among at least two runs.
- Comparisons pair problems by problem_id (sorted ids; problems only one side has are dropped, with a note), all
  with the same bootstrap seed (common random numbers, see `mel.eval.stats`).
- The default ablation base is the run name that is the longest proper prefix (followed by ``_``) of the most other
  runs' names (ties: the longer name): ``mel_code`` for ``mel``, ``mel_code``, ``mel_code_no_replay`` and
  ``mel_code_no_contrastive``. Its ablations are the runs named ``<base>_...``. When several runs (seeds) have that
  method, the first of them is the base.
- Seeds pooled per method (section 2b, `mel.eval.seeds`, whose docstring says what is resampled): runs of one method
  are told apart by ``run.seed``; the baseline *method* is the baseline run's. The section is there whenever there are
  two runs or more; with one seed per method it says so and keeps the per-comparison power line. It writes
  ``seed_means.csv`` and ``pooled_comparisons.csv`` too.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from mel import artifacts
from mel.eval import plots, seeds, tables
from mel.eval.runs import (
    PROBLEMS_FILE,
    RunData,
    Score,
    ScoreKey,
    find_run,
    load_run,
    name_runs,
)
from mel.eval.seeds import POWER, PooledComparison, PooledMean, ProblemValues, SeedGroup
from mel.eval.stats import BootstrapResult, paired_bootstrap
from mel.eval.tables import MISSING, Block, Cell, Heading, Paragraph, Table

MEL_RATES = {"p_pair": "p_pair: prompts with both y+ and y−", "p_accept": "p_accept: pairs kept by replay",
             "retention": "retention: candidate M kept by replay"}
DEFAULT_BASELINE = "grpo"

# --------------------------------------------------------------------------------------------------------------------
# Comparisons and ablations

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


# --------------------------------------------------------------------------------------------------------------------
# Sections of the document


def _header(key: ScoreKey, runs: Sequence[RunData]) -> str:
    counts = sorted({r.finals()[key].num_problems for r in runs if key in r.finals()})
    n = f"n={counts[0]}" if len(counts) == 1 else f"n={counts[0]}–{counts[-1]}"
    return f"{key.where}\n{key.what} ({n})"


def runs_section(runs: Sequence[RunData]) -> list[Block]:
    rows = []
    for r in runs:
        rows.append((Cell(r.name), Cell(f"`{r.run_dir}`"), Cell(str(len(r.training)) if r.training else MISSING),
                     Cell(tables.step_list([s for s in r.scores if s >= 0])),
                     Cell(MISSING if r.final_step is None else str(r.final_step))))
    return [Heading("Runs"),
            Paragraph("Training steps: rows of `metrics.parquet`. Evaluated steps count updates done "
                      "(0 = the base model; checkpoint `step_NNNN` is step NNNN + 1)."),
            Table(("run", "directory", "training steps", "evaluated steps", "final evaluated step"), tuple(rows),
                  (False, False, True, True, True))]


def main_section(runs: Sequence[RunData], keys: Sequence[ScoreKey]) -> list[Block]:
    head: list[Block] = [Heading("1. Main table")]
    if not keys:
        return head + [Paragraph("No run has an evaluation yet (`eval/summary.parquet`).")]
    shown = {r.name: {k: round(100 * s.value, 1) for k, s in r.finals().items()} for r in runs}
    best = {}
    for k in keys:
        vals = [v[k] for v in shown.values() if k in v]
        best[k] = max(vals) if len(vals) >= 2 else None
    rows = []
    for r in runs:
        finals = r.finals()
        cells = [Cell(tables.pct(finals[k].value), bold=shown[r.name][k] == best[k]) if k in finals
                 else Cell(MISSING) for k in keys]
        rows.append((Cell(r.name), Cell(MISSING if r.final_step is None else str(r.final_step)), *cells))
    text = ("Scores (% of problems) at each run's final evaluated step; the best of each column in bold; n: "
            "problems. pass@1 is greedy; avg@n and pass@k are sampled as shown.")
    return head + [Paragraph(text), Table(("method", "step", *(_header(k, runs) for k in keys)), tuple(rows))]


def comparison_section(runs: Sequence[RunData], baseline: RunData, comparisons: Sequence[Comparison], *,
                       n_resamples: int, seed: int, alpha: float) -> list[Block]:
    head: list[Block] = [Heading(f"2. Comparison vs baseline `{baseline.name}`")]
    if len(runs) == 1:
        return head + [Paragraph("Only one run: nothing to compare.")]
    if not comparisons:
        return head + [Paragraph(f"No score that `{baseline.name}` and another run both have at their final "
                                 "evaluated steps, with per-problem values: nothing to compare (see the notes).")]
    level = f"{100 * (1 - alpha):g}%"
    text = (f"Paired bootstrap over problems ({n_resamples} resamples, seed {seed}): Δ = method − baseline in "
            f"percentage points on the problems both evaluated, {level} percentile interval, two-sided p-value of "
            f"the shifted replicates, (r + 1) / (R + 1) (`mel.eval.stats`); p < {alpha:g} in bold.")
    rows = tuple((Cell(c.method), Cell(c.key.where), Cell(c.key.what), Cell(f"{c.method_step} / {c.baseline_step}"),
                  Cell(str(c.result.n)), Cell(tables.pct(c.method_value)), Cell(tables.pct(c.baseline_value)),
                  Cell(tables.points(c.result.diff)),
                  Cell(f"[{tables.points(c.result.ci_low)}, {tables.points(c.result.ci_high)}]"),
                  Cell(tables.p_value(c.result.p_value), bold=c.result.significant)) for c in comparisons)
    header = ("method", "benchmark", "metric", "steps\n(method / baseline)", "paired\nproblems", "method %",
              "baseline %", "Δ (pts)", f"{level} CI (pts)", "p")
    return head + [Paragraph(text), Table(header, rows, (False, False, False) + (True,) * 7)]


def power_line(c: PooledComparison) -> str:
    """The sentence saying which differences the comparison ``c`` could miss."""
    setup = (f"{c.method} vs {c.baseline} on {c.key.where} {c.key.what}: with {c.result.n} problems and "
             f"{len(c.seeds)} seed{'s' if len(c.seeds) > 1 else ''}")
    if c.mde is None:
        return f"{setup}, there is no spread to estimate a standard error from: no power estimate."
    if c.mde == 0:
        return (f"{setup}, the per-problem differences do not vary (standard error 0): no power estimate can be "
                "made from them.")
    return (f"{setup}, a difference smaller than {100 * c.mde:.1f} points would likely go undetected "
            f"({100 * c.power:g}% power, alpha {c.result.alpha:g}).")


def seeds_section(groups: Sequence[SeedGroup], baseline: str, means: Sequence[PooledMean],
                  comparisons: Sequence[PooledComparison], same_rollouts: Sequence[str], *, n_resamples: int,
                  seed: int, alpha: float) -> list[Block]:
    """Section 2b: the mean over seeds per method, the paired difference to the baseline method pooled over seeds,
    the power line of each, and the methods whose rollouts were the baseline's (see `mel.eval.seeds`)."""
    head: list[Block] = [Heading(f"2b. Seeds pooled per method, vs baseline method `{baseline}`")]
    if not groups:
        return head + [Paragraph("No run has a seed to pool by (`run.seed` in its `config.yaml`; see the notes).")]
    level = f"{100 * (1 - alpha):g}%"
    blocks: list[Block] = [Paragraph("Seeds per method: " + "; ".join(
        f"`{g.method}` {', '.join(map(str, g.seeds))}" for g in groups) + ".")]
    if all(len(g.seeds) == 1 for g in groups):
        blocks.append(Paragraph("Each method has one seed (seeds = 1): nothing is pooled, the differences below are "
                                "section 2's, shown for their power."))
    else:
        text = (f"Mean over seeds of each seed's final score, on the problems every seed evaluated; {level} "
                f"interval: bootstrap over problems ({n_resamples} resamples, seed {seed}), each replicate "
                "averaging every seed's values on the drawn problems. Seeds are not resampled: the interval is "
                "the uncertainty from the choice of problems, each problem's seed-to-seed spread averaged in.")
        rows: tuple[tuple[Cell, ...], ...]  # 7 cells here, 11 in the comparisons' table below
        rows = tuple((Cell(m.method), Cell(m.key.where), Cell(m.key.what), Cell(", ".join(map(str, m.seeds))),
                      Cell(str(m.interval.n)), Cell(tables.pct(m.interval.mean)),
                      Cell(f"[{tables.pct(m.interval.ci_low)}, {tables.pct(m.interval.ci_high)}]")) for m in means)
        blocks += [Paragraph(text), Table(("method", "benchmark", "metric", "seeds", "problems", "mean %",
                                           f"{level} CI (%)"), rows, (False,) * 4 + (True,) * 3)]
    if not comparisons:
        blocks.append(Paragraph(f"No score that `{baseline}` and another method both have on a common seed, with "
                                "per-problem values: nothing to compare pooled over seeds (see the notes)."))
    else:
        text = (f"Run (method, seed s) paired with (`{baseline}`, seed s) on the problems all the paired runs "
                "evaluated; per problem, the differences averaged over the seeds both have; paired bootstrap over "
                f"problems as in section 2 (Δ, {level} percentile interval, p; p < {alpha:g} in bold). MDE: the "
                f"smallest difference detected with {100 * POWER:g}% power at two-sided alpha {alpha:g}, "
                f"(z_{1 - alpha / 2:g} + z_{POWER:g}) × SE, where SE = sd / √n of the n seed-averaged per-problem "
                "differences (closed form, not the bootstrap's spread).")
        rows = tuple((Cell(c.method), Cell(c.key.where), Cell(c.key.what), Cell(", ".join(map(str, c.seeds))),
                      Cell(str(c.result.n)), Cell(tables.pct(c.method_value)), Cell(tables.pct(c.baseline_value)),
                      Cell(tables.points(c.result.diff)),
                      Cell(f"[{tables.points(c.result.ci_low)}, {tables.points(c.result.ci_high)}]"),
                      Cell(tables.p_value(c.result.p_value), bold=c.result.significant),
                      Cell(MISSING if c.mde is None else f"{100 * c.mde:.1f}")) for c in comparisons)
        header = ("method", "benchmark", "metric", "paired\nseeds", "paired\nproblems", "method %", "baseline %",
                  "Δ (pts)", f"{level} CI (pts)", "p", "MDE (pts)")
        blocks += [Paragraph(text), Table(header, rows, (False,) * 4 + (True,) * 7), Heading("Power", 3),
                   tables.Bullets(tuple(power_line(c) for c in comparisons))]
    if same_rollouts:
        blocks += [Heading("Rollouts shared with the baseline", 3), tables.Bullets(tuple(same_rollouts))]
    return head + blocks


def _mean(values: Sequence[float]) -> str:
    return f"{sum(values) / len(values):.3g}" if values else MISSING


def diagnostics_section(runs: Sequence[RunData]) -> list[Block]:
    """Per run, over its training steps: lambda, the measured ||lambda g_NLL|| / ||g_RL|| (mean, and its range), and
    for R-MEL / MEL+Extra the all-negative groups revised, the share of them rescued (an accepted revision or
    extra rollout: a pair), the passing revisions the prefix constraint rejected and the token match (tokens
    generated / R-MEL's allowance)."""
    head: list[Block] = [Heading("Training diagnostics")]
    rows = []
    for r in runs:
        ratio = [v for _, v in r.training_curve("nll_rl_grad_ratio")]
        coef = [v for _, v in r.training_curve("nll_coef") if v]
        revised = r.training_curve("revise_groups")
        groups, rescued = int(sum(v for _, v in revised)), int(sum(v for _, v in r.training_curve("rescued_groups")))
        tokens = sum(v for _, v in r.training_curve("revision_tokens"))
        allowance = sum(v for _, v in r.training_curve("token_allowance"))
        if not (ratio or coef or revised):
            continue
        rejections = sum(int(v) for _, v in r.training_curve("filter_rejections"))
        rows.append((Cell(r.name), Cell(str(len(r.training))), Cell(_mean(coef)), Cell(_mean(ratio)),
                     Cell(f"{min(ratio):.3g}–{max(ratio):.3g}" if ratio else MISSING),
                     Cell(str(groups) if revised else MISSING),
                     Cell(f"{rescued} ({100 * rescued / groups:.0f}%)" if groups else MISSING),
                     Cell(str(rejections) if revised else MISSING),
                     Cell(f"{int(tokens)}/{int(allowance)}" if revised else MISSING),
                     Cell(f"{tokens / allowance:.3f}" if allowance else MISSING)))
    if not rows:
        return head + [Paragraph("No run has a meta-experience term or revision: nothing to show.")]
    text = ("Means over training steps (steps without M have no ratio). ||λ·g_NLL|| / ||g_RL||: the norm ratio the "
            "papers calibrate λ by (1 = comparable), measured for a fixed λ too. Groups revised: all-negative groups "
            "given to R-MEL's revision or MEL+Extra's extra rollouts; rescued: those that got a pair (of the groups "
            "revised). Filter rejections: revisions that passed the verifier but not R-MEL's prefix constraint. Token "
            "match: tokens generated by revision (or MEL+Extra's fresh rollouts) / R-MEL's token allowance for the "
            "same groups.")
    header = ("run", "steps", "λ", "NLL/RL grad norm", "range", "groups revised", "rescued", "filter rejections",
              "tokens / allowance", "token match")
    return head + [Paragraph(text), Table(header, tuple(rows))]


def ablation_section(runs: Sequence[RunData], base: RunData | None, rows: Sequence[AblationRow],
                     keys: Sequence[ScoreKey]) -> list[Block]:
    if base is None:
        return [Heading("3. Ablations"),
                Paragraph("No ablation base: no run's name, followed by `_`, starts another run's name. Pass the "
                          "base run's name as `ablation_base` (the ablation-base option of `mel report`).")]
    head: list[Block] = [Heading(f"3. Ablations of `{base.name}`")]
    if len(rows) <= 1:
        return head + [Paragraph(f"No run is named `{base.method}_…`: no ablation to show.")]
    keys = [k for k in keys if any(k in r.values for r in rows)]
    table_rows = []
    for r in rows:
        cells = [Cell(MISSING if k not in r.values else tables.pct(r.values[k]) if k not in r.deltas
                      else f"{tables.pct(r.values[k])} ({tables.points(r.deltas[k])})") for k in keys]
        changed = "; ".join(r.changed) if r.name != base.name else "(ablation base)"
        table_rows.append((Cell(r.name), Cell(MISSING if r.step is None else str(r.step)), *cells, Cell(changed)))
    text = (f"Scores (%) at each run's final evaluated step, (Δ vs `{base.name}` in points); what changed: the "
            "config fields that differ from the base's (run.name left out).")
    header = ("run", "step", *(_header(k, runs) for k in keys), "what changed")
    numeric = (False,) + (True,) * (len(keys) + 1) + (False,)
    return head + [Paragraph(text), Table(header, tuple(table_rows), numeric)]


def _validation_panels(runs: Sequence[RunData]) -> list[tuple[ScoreKey, dict[str, list[tuple[int, float]]]]]:
    """Per (benchmark, column): its main score (greedy pass@1 if any run has it, else the first) over steps."""
    keys = sorted({k for r in runs for by in r.scores.values() for k in by if r.curve(k)}, key=lambda k: k.order)
    panels = []
    for bench_col in dict.fromkeys((k.benchmark, k.column) for k in keys):
        mine = [k for k in keys if (k.benchmark, k.column) == bench_col]
        key = next((k for k in mine if (k.sampling, k.metric) == ("greedy", "pass@1")), mine[0])
        panels.append((key, {r.name: r.curve(key) for r in runs if r.curve(key)}))
    return panels


def _smoothed(panels: Sequence[plots.Panel]) -> str:
    """The title's note when some curve is long enough to be drawn with a moving mean."""
    long = any(len(p) > plots.SMOOTH_ABOVE for _, series in panels for p in series.values())
    return "\n(thin: per step; thick: moving mean)" if long else ""


def figures(runs: Sequence[RunData], out_dir: str
            ) -> tuple[dict[str, str], dict[ScoreKey, dict[str, tuple[int, float]]], list[Block]]:
    """Draw the PNGs; (paths, validation peaks, the section's blocks)."""
    styles = plots.method_colours([r.name for r in runs])
    paths: dict[str, str] = {}
    peaks: dict[ScoreKey, dict[str, tuple[int, float]]] = {}
    blocks: list[Block] = [Heading("4. Training dynamics"), Heading("Validation", 3)]
    panels = _validation_panels(runs)
    if panels:
        paths["validation"] = os.path.join(out_dir, "validation.png")
        drawn = plots.plot_panels(paths["validation"], [(f"{k.where}: {k.what}", s) for k, s in panels], styles,
                                  title="Validation score vs updates done", xlabel="updates done (0 = base model)",
                                  ylabel="score (% of problems)", percent=True, mark_peaks=True)
        peaks = {k: drawn[f"{k.where}: {k.what}"] for k, _ in panels}
        rows = tuple((Cell(r.name), *(Cell(f"{tables.pct(peaks[k][r.name][1])} @ {peaks[k][r.name][0]}")
                                      if r.name in peaks[k] else Cell(MISSING) for k, _ in panels)) for r in runs)
        blocks += [tables.Image("validation.png", "validation score per step"),
                   Paragraph("Peak of each run (% @ step; the earliest step on ties), starred in the figure; "
                             "– where the score never changed over the evaluated steps:"),
                   Table(("method", *(f"{k.where}\n{k.what}" for k, _ in panels)), rows)]
    else:
        blocks.append(Paragraph("No run has been evaluated at a training step yet: no validation figure."))
    blocks.append(Heading("Training reward", 3))
    reward = {r.name: r.training_curve("reward_mean") for r in runs if r.training_curve("reward_mean")}
    if reward:
        paths["training_reward"] = os.path.join(out_dir, "training_reward.png")
        plots.plot_panels(paths["training_reward"], [("", reward)], styles,
                          title="Training reward: mean reward of each step's rollouts" + _smoothed([("", reward)]),
                          xlabel="RL step", ylabel="mean reward", smooth=True)
        blocks.append(tables.Image("training_reward.png", "training reward per step"))
    else:
        blocks.append(Paragraph("No run has training metrics yet: no reward figure."))
    blocks.append(Heading("Meta-experience rates", 3))
    rates = [(label, {r.name: r.training_curve(c) for r in runs if r.training_curve(c)})
             for c, label in MEL_RATES.items()]
    if any(series for _, series in rates):
        paths["mel_rates"] = os.path.join(out_dir, "mel_rates.png")
        plots.plot_panels(paths["mel_rates"], rates, styles, title="Meta-experience rates per step" + _smoothed(rates),
                          xlabel="RL step", ylabel="rate (%)", percent=True, smooth=True,
                          full_range=True)
        blocks += [tables.Image("mel_rates.png", "p_pair, p_accept and retention per step"),
                   Paragraph("A run without a value of a rate (no MEL stages) is left out of its panel.")]
    else:
        blocks.append(Paragraph("No run has p_pair, p_accept or retention values: no rates figure."))
    return paths, peaks, blocks


MAIN_CSV = ("method", "run_dir", "step", "benchmark", "column", "sampling", "metric", "value", "num_problems", "cell")
COMPARISONS_CSV = ("method", "baseline", "benchmark", "column", "sampling", "metric", "method_step", "baseline_step",
                   "n", "method_value", "baseline_value", "diff", "ci_low", "ci_high", "p_value", "alpha",
                   "n_resamples", "seed")
SEED_MEANS_CSV = ("method", "benchmark", "column", "sampling", "metric", "seeds", "steps", "n", "mean", "ci_low",
                  "ci_high", "alpha", "n_resamples", "seed")
POOLED_CSV = ("method", "baseline", "benchmark", "column", "sampling", "metric", "seeds", "n", "method_value",
              "baseline_value", "diff", "ci_low", "ci_high", "p_value", "se", "mde", "power", "alpha", "n_resamples",
              "seed")
ABLATION_CSV = ("run", "ablation_base", "step", "benchmark", "column", "sampling", "metric", "value", "delta",
                "changed")


def key_fields(k: ScoreKey) -> dict[str, Any]:
    return {"benchmark": k.benchmark, "column": k.column, "sampling": k.sampling, "metric": k.metric}


def write_csvs(out_dir: str, runs: Sequence[RunData], keys: Sequence[ScoreKey], comparisons: Sequence[Comparison],
               ablations: Sequence[AblationRow], means: Sequence[PooledMean], pooled: Sequence[PooledComparison], *,
               seed: int) -> dict[str, str]:
    """The tables in long form, values as fractions (not %): one row per (run, score)."""
    main = [{"method": r.name, "run_dir": r.run_dir, **key_fields(k), "step": s.step, "value": s.value,
             "num_problems": s.num_problems, "cell": s.cell} for r in runs for k in keys
            for s in [r.finals().get(k)] if s is not None]
    comps = [{"method": c.method, "baseline": c.baseline, **key_fields(c.key), "method_step": c.method_step,
              "baseline_step": c.baseline_step, "n": c.result.n, "method_value": c.method_value,
              "baseline_value": c.baseline_value, "diff": c.result.diff, "ci_low": c.result.ci_low,
              "ci_high": c.result.ci_high, "p_value": c.result.p_value, "alpha": c.result.alpha,
              "n_resamples": c.result.n_resamples, "seed": seed} for c in comparisons]
    base = ablations[0].name if ablations else None
    abl = [{"run": a.name, "ablation_base": base, "step": a.step, **key_fields(k), "value": v,
            "delta": a.deltas.get(k), "changed": "; ".join(a.changed)} for a in ablations for k in keys
           for v in [a.values.get(k)] if v is not None]
    seed_means = [{"method": m.method, **key_fields(m.key), "seeds": " ".join(map(str, m.seeds)),
                   "steps": " ".join(map(str, m.steps)), "n": m.interval.n, "mean": m.interval.mean,
                   "ci_low": m.interval.ci_low, "ci_high": m.interval.ci_high, "alpha": m.interval.alpha,
                   "n_resamples": m.interval.n_resamples, "seed": seed} for m in means]
    pooled_rows = [{"method": c.method, "baseline": c.baseline, **key_fields(c.key),
                    "seeds": " ".join(map(str, c.seeds)), "n": c.result.n, "method_value": c.method_value,
                    "baseline_value": c.baseline_value, "diff": c.result.diff, "ci_low": c.result.ci_low,
                    "ci_high": c.result.ci_high, "p_value": c.result.p_value, "se": c.se, "mde": c.mde,
                    "power": c.power, "alpha": c.result.alpha, "n_resamples": c.result.n_resamples, "seed": seed}
                   for c in pooled]
    return {"main_table": tables.write_csv(os.path.join(out_dir, "main_table.csv"), MAIN_CSV, main),
            "comparisons": tables.write_csv(os.path.join(out_dir, "comparisons.csv"), COMPARISONS_CSV, comps),
            "ablation": tables.write_csv(os.path.join(out_dir, "ablation.csv"), ABLATION_CSV, abl),
            "seed_means": tables.write_csv(os.path.join(out_dir, "seed_means.csv"), SEED_MEANS_CSV, seed_means),
            "pooled_comparisons": tables.write_csv(os.path.join(out_dir, "pooled_comparisons.csv"), POOLED_CSV,
                                                   pooled_rows)}


# --------------------------------------------------------------------------------------------------------------------
# The report


@dataclass(frozen=True)
class Report:
    markdown: str
    markdown_path: str
    html_path: str
    figures: dict[str, str]  # "validation", "training_reward", "mel_rates" -> PNG path (only those drawn)
    csvs: dict[str, str]  # "main_table", "comparisons", "ablation", "seed_means", "pooled_comparisons" -> CSV path
    runs: tuple[RunData, ...]
    keys: tuple[ScoreKey, ...]  # the main table's columns
    baseline: str | None
    ablation_base: str | None
    comparisons: tuple[Comparison, ...]
    ablations: tuple[AblationRow, ...]  # the base's row first; empty without an ablation base
    peaks: dict[ScoreKey, dict[str, tuple[int, float]]]  # the validation figure's marked (step, value) per method
    warnings: tuple[str, ...]
    seed_groups: tuple[SeedGroup, ...] = ()  # the runs pooled per method (none with a single run)
    pooled_means: tuple[PooledMean, ...] = ()
    pooled_comparisons: tuple[PooledComparison, ...] = ()  # each with its minimum detectable effect
    same_rollouts: tuple[str, ...] = ()  # "<method> seed s: its rollouts were identical to <baseline>'s ..."


def build_report(
    run_dirs: Sequence[str],
    out_dir: str,
    *,
    baseline: str | None = None,
    ablation_base: str | None = None,
    n_resamples: int = 10000,
    seed: int = 0,
    alpha: float = 0.05,
    title: str | None = None,
) -> Report:
    """Compare the runs in ``run_dirs`` and write the report under the local folder ``out_dir`` (see the module
    docstring). ``baseline`` and ``ablation_base`` name runs (method or shown name); None picks the defaults."""
    if not run_dirs:
        raise ValueError("build_report: no run directories")
    if n_resamples < 1 or not 0 < alpha < 1:
        raise ValueError(f"build_report: need n_resamples >= 1 and 0 < alpha < 1, got {n_resamples} and {alpha}")
    if "://" in out_dir and not out_dir.startswith("file://"):
        raise ValueError(f"build_report writes to a local folder, got {out_dir}")
    out_dir = artifacts.local_path(out_dir)
    runs = name_runs([load_run(d) for d in run_dirs])
    notes = [w for r in runs for w in r.warnings]
    base_run = find_run(runs, baseline, "baseline") if baseline is not None else next(
        (r for r in runs if r.method == DEFAULT_BASELINE), runs[0])
    values = problem_reader()
    comparisons, more = compare_to_baseline(runs, base_run, values, n_resamples=n_resamples, seed=seed,
                                            alpha=alpha) if len(runs) > 1 else ([], [])
    notes += more
    groups, means, pooled, same_rollouts = pool_seeds(runs, base_run, values, n_resamples=n_resamples, seed=seed,
                                                      alpha=alpha, notes=notes) if len(runs) > 1 else ([], [], [], [])
    if ablation_base is not None:
        abl_run: RunData | None = find_run(runs, ablation_base, "ablation_base")
    else:  # a method, which several runs (seeds) may share: its first run, as a sweep's baseline
        default = default_ablation_base([r.method for r in runs])
        abl_run = next(r for r in runs if r.method == default) if default is not None else None
    ablations = ablation_rows(runs, abl_run) if abl_run is not None else []
    keys = tuple(sorted({k for r in runs for k in r.finals()}, key=lambda k: k.order))

    os.makedirs(out_dir, exist_ok=True)
    pngs, peaks, figure_blocks = figures(runs, out_dir)
    csvs = write_csvs(out_dir, runs, keys, comparisons, ablations, means, pooled, seed=seed)
    title = title or "Comparison report: " + ", ".join(r.name for r in runs)
    blocks: list[Block] = [Heading(title, 1)]
    blocks += runs_section(runs)
    blocks += main_section(runs, keys)
    blocks += comparison_section(runs, base_run, comparisons, n_resamples=n_resamples, seed=seed, alpha=alpha)
    if len(runs) > 1:
        blocks += seeds_section(groups, base_run.method, means, pooled, same_rollouts, n_resamples=n_resamples,
                                seed=seed, alpha=alpha)
    blocks += ablation_section(runs, abl_run, ablations, keys)
    blocks += diagnostics_section(runs)
    blocks += figure_blocks
    blocks += [Heading("Notes"), tables.Bullets(tuple(notes)) if notes else Paragraph("Nothing missing.")]
    markdown = tables.to_markdown(blocks)
    md_path, html_path = os.path.join(out_dir, "report.md"), os.path.join(out_dir, "report.html")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(markdown)
    with open(html_path, "w", encoding="utf-8") as f:
        f.write(tables.to_html(blocks, title))
    return Report(markdown, md_path, html_path, pngs, csvs, tuple(runs), keys, base_run.name,
                  abl_run.name if abl_run else None, tuple(comparisons), tuple(ablations), peaks, tuple(notes),
                  tuple(groups), tuple(means), tuple(pooled), tuple(same_rollouts))


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
