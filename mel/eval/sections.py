"""The sections of `mel.eval.report`'s document, as `mel.eval.tables` blocks (Markdown and HTML alike): the runs,
the main table, the comparisons to the baseline, the seeds pooled per method with their power, the ablations and
the training diagnostics."""
from __future__ import annotations

from collections.abc import Sequence

from mel.eval import tables
from mel.eval.compare import AblationRow, Comparison
from mel.eval.runs import RunData, ScoreKey
from mel.eval.seeds import POWER, PooledComparison, PooledMean, SeedGroup
from mel.eval.tables import MISSING, Block, Cell, Heading, Paragraph, Table



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
