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

from mel import artifacts
from mel.eval import plots, tables
from mel.eval.compare import (
    AblationRow,
    Comparison,
    ablation_rows,
    compare_to_baseline,
    default_ablation_base,
    pool_seeds,
    problem_reader,
)
from mel.eval.runs import RunData, ScoreKey, find_run, load_run, name_runs
from mel.eval.sections import (
    ablation_section,
    comparison_section,
    diagnostics_section,
    main_section,
    runs_section,
    seeds_section,
)
from mel.eval.seeds import PooledComparison, PooledMean, SeedGroup
from mel.eval.tables import MISSING, Block, Cell, Heading, Paragraph, Table

MEL_RATES = {"p_pair": "p_pair: prompts with both y+ and y−", "p_accept": "p_accept: pairs kept by replay",
             "retention": "retention: candidate M kept by replay"}
DEFAULT_BASELINE = "grpo"


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


