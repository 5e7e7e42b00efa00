"""Reading R-MEL / MEL+Extra revisions: per-step summaries, run-level analytics tables and one diagnostic figure.

Input rows are those of ``step_NNNN/revisions.parquet`` (``mel.schemas.REVISIONS``): one row per continuation
attempt (mode "rmel": a prefix-primed continuation of the seed y-; mode "extra": a fresh rollout, the
compute-matched control). A *group* is one all-negative prompt of one step, (step, prompt_index); it is *rescued*
when one of its attempts was accepted.

- ``step_summary``: one step's counts and rates (rescue rate, success per truncation ratio tau, passing
  continuations thrown away by the prefix constraint, the token match: tokens generated / R-MEL's allowance).
- ``run_analytics``: a per-group table (``GROUP_SCHEMA``) and a by-bucket table (``BUCKET_SCHEMA``): revision success
  by prompt difficulty, by log-prob quintile of the seed (R-MEL figure 3 (a), (b)) and by tau.
- ``write_analytics``: both tables as Parquet artifacts (data first, manifest last, ``mel.artifacts``).
- ``plot_revisions``: one PNG with four panels (success per tau, LCP ratios, figure-3 curves, tokens per group).

Pure: stdlib, pyarrow and fsspec (through ``mel.artifacts``); matplotlib is imported inside ``plot_revisions`` only,
with the Agg canvas and no pyplot, so no global backend is set.

Departures from the paper, and choices it leaves open:

- Difficulty. R-MEL's figure 3 (a) uses a problem's all-negative *frequency* over training (1/3, 2/3, 3/3 of the
  times it was drawn). Revision rows do not say how often a problem was drawn and came out mixed, so difficulty here
  is causal and cumulative: the number of all-negative groups of this problem_id in earlier steps, plus this one
  (1 = first time all-negative). Two groups of one problem in the same step get the same difficulty.
- Log-prob quintile. Bins by rank of the seed's mean token log-prob over the whole run (1 = lowest, i.e. the seed
  the policy found least likely): rank r of n goes to bin floor(r * k / n) + 1 with k = min(5, n). Ties share the
  bin of their lowest rank. Groups whose seed_mean_logprob is null or NaN get no quintile.
- Both modes in one list. The rows of an R-MEL run and of its MEL+Extra control may be concatenated to compare
  them (figure 3's two curves); every run-level statistic (groups, difficulty, quintiles, buckets) is then computed
  per mode, as for two runs.
- Success per tau counts accepted attempts / attempts at that tau. Attempts stop at the first accepted one, so a
  later tau only sees the groups the earlier ones failed on; the rate is conditional on that, as in the paper.
"""
from __future__ import annotations

import bisect
import math
import os
from collections import defaultdict
from typing import Any, Iterable

import pyarrow as pa

from mel import artifacts

MODES: tuple[str, ...] = ("rmel", "extra")
GROUPINGS: tuple[str, ...] = ("difficulty", "logprob_quintile", "tau")
NUM_QUANTILES = 5

GROUP_SCHEMA = pa.schema([  # ``revision_groups.parquet``: one row per all-negative group given to revision
    ("step", pa.int32()),
    ("prompt_index", pa.int32()),
    ("problem_id", pa.string()),
    ("mode", pa.string()),  # "rmel" | "extra"
    ("rescued", pa.bool_()),  # some attempt was accepted
    ("attempts", pa.int32()),  # attempts spent on the group (<= B)
    ("generated_tokens", pa.int64()),  # tokens generated over those attempts
    ("seed_tokens", pa.int32()),  # |y-|
    ("seed_mean_logprob", pa.float64()),
    ("difficulty", pa.int32()),  # all-negative groups of this problem in earlier steps + 1 (per mode)
    ("logprob_quintile", pa.int32()),  # 1..5 by seed_mean_logprob over the run, 1 = lowest; null without a log-prob
    ("accepted_tau", pa.float64()),  # tau of the accepted attempt; null if not rescued
    ("lcp", pa.float64()),  # LCP ratio of the accepted attempt; null if not rescued or mode "extra"
    ("filter_rejections", pa.int32()),  # attempts that passed but failed the prefix constraint (rmel)
    ("token_allowance", pa.int64()),  # R-MEL's allowance of new tokens for the group (MEL+Extra's budget)
    ("token_match", pa.float64()),  # generated_tokens / token_allowance
])

BUCKET_SCHEMA = pa.schema([  # ``revision_buckets.parquet``: success by difficulty, log-prob quintile and tau
    ("mode", pa.string()),
    ("grouping", pa.string()),  # "difficulty" | "logprob_quintile" | "tau"
    ("value", pa.float64()),  # the bucket: difficulty 1, 2, ...; quintile 1..5; tau 0.7, ...
    ("unit", pa.string()),  # what n and success_rate count: "group" (difficulty, quintile) or "attempt" (tau)
    ("n", pa.int32()),  # groups (unit "group") or attempts (unit "attempt") in the bucket
    ("groups", pa.int32()),  # distinct groups in the bucket
    ("attempts", pa.int32()),  # attempts in the bucket
    ("successes", pa.int32()),  # rescued groups (unit "group") or accepted attempts (unit "attempt")
    ("success_rate", pa.float64()),  # successes / n
    ("mean_generated_tokens", pa.float64()),  # generated tokens per group (unit "group") or per attempt ("attempt")
])

GROUPS_FILE = "revision_groups.parquet"
BUCKETS_FILE = "revision_buckets.parquet"


def tau_key(tau: float) -> str:
    """The string key of a truncation ratio: ``0.7 -> "0.7"`` (rounded to 6 decimals: 0.1 + 0.2 gives "0.3")."""
    return str(round(float(tau), 6))


def _group_key(row: dict) -> tuple[str, int, int]:
    return row["mode"], int(row["step"]), int(row["prompt_index"])


def _by_group(rows: Iterable[dict]) -> dict[tuple[str, int, int], list[dict]]:
    """Attempt rows by (mode, step, prompt_index), each group's attempts in attempt order."""
    groups: dict[tuple[str, int, int], list[dict]] = defaultdict(list)
    for r in rows:
        if r["mode"] not in MODES:
            raise ValueError(f"unknown revision mode {r['mode']!r}; known: {', '.join(MODES)}")
        groups[_group_key(r)].append(r)
    for attempts in groups.values():
        attempts.sort(key=lambda r: r["attempt"])
    return dict(sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])))  # step, prompt, mode


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def step_summary(rows: list[dict], all_negative_groups: int, num_groups: int) -> dict[str, Any]:
    """One step's revision numbers from its attempt rows, given the step's all-negative and total group counts.

    Rates with a zero denominator are None (no group revised, no attempt at a tau)."""
    if num_groups < 1:
        raise ValueError(f"num_groups must be >= 1 (the step's prompts), got {num_groups}")
    if not 0 <= all_negative_groups <= num_groups:
        raise ValueError(f"all_negative_groups must be in [0, num_groups={num_groups}], got {all_negative_groups}")
    steps = sorted({int(r["step"]) for r in rows})
    if len(steps) > 1:
        raise ValueError(f"step_summary takes one step's rows; got steps {steps} (use run_analytics for a run)")
    groups = _by_group(rows)
    if len(groups) > all_negative_groups:
        raise ValueError(f"{len(groups)} groups were revised but the step has only {all_negative_groups} "
                         "all-negative groups; pass the step's all-negative count")
    rescued = sum(any(r["accepted"] for r in g) for g in groups.values())
    attempts_at: dict[str, int] = defaultdict(int)
    accepted_at: dict[str, int] = defaultdict(int)
    for r in rows:
        attempts_at[tau_key(r["tau"])] += 1
        accepted_at[tau_key(r["tau"])] += bool(r["accepted"])
    taus = sorted(attempts_at, key=float, reverse=True)  # schedule order: most conservative first
    return {
        "step": steps[0] if steps else None,
        "all_negative_groups": all_negative_groups,
        "num_groups": num_groups,
        "all_negative_rate": all_negative_groups / num_groups,
        "revise_groups": len(groups),
        "rescued_groups": rescued,
        "rescue_rate": _ratio(rescued, len(groups)),  # rescued / groups given to revision
        "attempts": len(rows),
        "generated_tokens": sum(int(r["generated_tokens"]) for r in rows),
        "attempts_per_tau": {t: attempts_at[t] for t in taus},
        "success_rate_per_tau": {t: accepted_at[t] / attempts_at[t] for t in taus},
        "passed_rejected_by_lcp": sum(bool(r["passed"]) and not r["accepted"] for r in rows),
        "token_match": _ratio(sum(int(r["generated_tokens"]) for r in rows),
                              sum(int(g[0]["token_allowance"]) for g in groups.values())),
    }


def _quantile_bins(values: dict[Any, float], k_max: int = NUM_QUANTILES) -> dict[Any, int]:
    """Rank bins 1..k (k = min(k_max, n); 1 = lowest); ties take the bin of their lowest rank."""
    ordered = sorted(values.values())
    n = len(ordered)
    k = min(k_max, n)
    return {key: bisect.bisect_left(ordered, v) * k // n + 1 for key, v in values.items()}


def _finite(x: Any) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def group_table(rows: list[dict]) -> list[dict]:
    """One row per (mode, step, prompt_index), ordered by step, prompt_index, mode; keys in ``GROUP_SCHEMA`` order."""
    table: list[dict] = []
    for (mode, step, prompt_index), attempts in _by_group(rows).items():
        first = attempts[0]
        accepted = next((r for r in attempts if r["accepted"]), None)
        table.append({
            "step": step, "prompt_index": prompt_index, "problem_id": first["problem_id"], "mode": mode,
            "rescued": accepted is not None, "attempts": len(attempts),
            "generated_tokens": sum(int(r["generated_tokens"]) for r in attempts),
            "seed_tokens": first["seed_tokens"], "seed_mean_logprob": first["seed_mean_logprob"],
            "difficulty": None, "logprob_quintile": None,
            "accepted_tau": None if accepted is None else accepted["tau"],
            "lcp": None if accepted is None else accepted["lcp"],
            "filter_rejections": sum(bool(r["passed"]) and not r["accepted"] for r in attempts),
            "token_allowance": int(first["token_allowance"]),
            "token_match": _ratio(sum(int(r["generated_tokens"]) for r in attempts), int(first["token_allowance"])),
        })
    for mode in MODES:
        mine = [g for g in table if g["mode"] == mode]  # already in (step, prompt_index) order
        earlier: dict[str, int] = defaultdict(int)  # problem_id -> all-negative groups in steps before this one
        this_step: dict[str, int] = defaultdict(int)
        current: int | None = None  # the step of this_step
        for g in mine:
            if g["step"] != current:
                for pid, c in this_step.items():
                    earlier[pid] += c
                this_step.clear()
                current = g["step"]
            g["difficulty"] = earlier[g["problem_id"]] + 1
            this_step[g["problem_id"]] += 1
        with_lp = {i: g["seed_mean_logprob"] for i, g in enumerate(mine) if _finite(g["seed_mean_logprob"])}
        for i, q in _quantile_bins(with_lp).items():
            mine[i]["logprob_quintile"] = q
    return table


def _bucket(mode: str, grouping: str, value: float, unit: str, groups: int, attempts: int, successes: int,
            tokens: int) -> dict:
    n = groups if unit == "group" else attempts
    return {"mode": mode, "grouping": grouping, "value": float(value), "unit": unit, "n": n, "groups": groups,
            "attempts": attempts, "successes": successes, "success_rate": _ratio(successes, n),
            "mean_generated_tokens": _ratio(tokens, n)}


def bucket_table(rows: list[dict], groups: list[dict]) -> list[dict]:
    """Success by difficulty and log-prob quintile (per group) and by tau (per attempt), per mode."""
    out: list[dict] = []
    for mode in MODES:
        mine = [g for g in groups if g["mode"] == mode]
        for grouping in ("difficulty", "logprob_quintile"):
            by: dict[int, list[dict]] = defaultdict(list)
            for g in mine:
                if g[grouping] is not None:
                    by[g[grouping]].append(g)
            for value in sorted(by):
                b = by[value]
                out.append(_bucket(mode, grouping, value, "group", len(b), sum(g["attempts"] for g in b),
                                   sum(g["rescued"] for g in b), sum(g["generated_tokens"] for g in b)))
        by_tau: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            if r["mode"] == mode:
                by_tau[tau_key(r["tau"])].append(r)
        for t in sorted(by_tau, key=float):
            a = by_tau[t]
            out.append(_bucket(mode, "tau", float(t), "attempt", len({_group_key(r) for r in a}), len(a),
                               sum(bool(r["accepted"]) for r in a), sum(int(r["generated_tokens"]) for r in a)))
    return out


def run_analytics(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(per-group table, by-bucket table) over all steps' attempt rows of a run (``GROUP_SCHEMA``,
    ``BUCKET_SCHEMA``)."""
    groups = group_table(rows)
    return groups, bucket_table(rows, groups)


def write_analytics(rows: list[dict], out_dir_uri: str, **manifest_info: Any) -> tuple[str, str]:
    """Write ``revision_groups.parquet`` and ``revision_buckets.parquet`` under ``out_dir_uri``; their URIs."""
    groups, buckets = run_analytics(rows)
    info = {"source_attempts": len(rows), **manifest_info}
    groups_uri = artifacts.write_rows(artifacts.join(out_dir_uri, GROUPS_FILE), groups, GROUP_SCHEMA, **info)
    buckets_uri = artifacts.write_rows(artifacts.join(out_dir_uri, BUCKETS_FILE), buckets, BUCKET_SCHEMA, **info)
    return groups_uri, buckets_uri


# ---------------------------------------------------------------------------------------------------------------------
# The figure. Colours: one per mode (R-MEL green as in the paper's figures), one per figure-3 grouping.

MODE_COLOURS = {"rmel": "tab:green", "extra": "tab:orange"}
MODE_LABELS = {"rmel": "R-MEL revision", "extra": "MEL+Extra rollout"}
MAX_DIFFICULTY_SHOWN = 6  # difficulties above are pooled into "6+" in the figure (the table keeps them)


def _pct(x: float | None) -> float:
    return 0.0 if x is None else 100.0 * x


def _panel_tau(ax, buckets: list[dict], modes: list[str]) -> None:
    taus = sorted({b["value"] for b in buckets if b["grouping"] == "tau"}, reverse=True)  # schedule order
    width = 0.8 / len(modes)
    top = 0.0
    for j, mode in enumerate(modes):
        by = {b["value"]: b for b in buckets if b["grouping"] == "tau" and b["mode"] == mode}
        for i, t in enumerate(taus):
            b = by.get(t)
            if b is None:
                continue
            x = i + (j - (len(modes) - 1) / 2) * width
            h = _pct(b["success_rate"])
            top = max(top, h)
            ax.bar(x, h, width * 0.9, color=MODE_COLOURS[mode], label=MODE_LABELS[mode] if i == 0 else None)
            ax.annotate(f"{b['successes']}/{b['n']}", (x, h), xytext=(0, 2), textcoords="offset points",
                        ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(taus)), [f"τ={t:g}" for t in taus])
    ax.set_ylim(0, max(10.0, top * 1.25))
    ax.set_xlabel("truncation ratio τ (schedule order)")
    ax.set_ylabel("accepted attempts (%)")
    ax.set_title("(i) success per τ (labels: accepted/attempts)")
    ax.legend(fontsize=8, loc="best")


def _panel_lcp(ax, rows: list[dict]) -> None:
    rmel = [r for r in rows if r["mode"] == "rmel" and _finite(r["lcp"])]
    ax.set_title("(ii) LCP(y_rev, y−) / |y−| of R-MEL attempts")
    ax.set_xlabel("LCP ratio (share of the seed kept)")
    ax.set_ylabel("attempts (count)")
    if not rmel:
        ax.text(0.5, 0.5, "no R-MEL attempts\n(MEL+Extra rollouts have no LCP)", ha="center", va="center",
                transform=ax.transAxes, fontsize=10, color="0.4")
        ax.set_xlim(0, 1)
        ax.set_yticks([])
        return
    passed = [r["lcp"] for r in rmel if r["passed"]]
    failed = [r["lcp"] for r in rmel if not r["passed"]]
    rejected = sum(bool(r["passed"]) and not r["accepted"] for r in rmel)
    bins = [i / 20 for i in range(21)]
    ax.hist([failed, passed], bins=bins, stacked=True, color=["tab:gray", "tab:blue"],
            label=[f"failed verifier (n={len(failed)})", f"passed (n={len(passed)}, {rejected} rejected by LCP)"])
    ax.set_xlim(0, 1)
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts of attempts
    ax.legend(fontsize=8, loc="best")


def _rate_by(groups: list[dict], key) -> list[tuple[int, float, int]]:
    """(bucket, rescued %, groups) for the groups with a bucket, in bucket order."""
    by: dict[int, list[bool]] = defaultdict(list)
    for g in groups:
        k = key(g)
        if k is not None:
            by[k].append(g["rescued"])
    return [(k, 100.0 * sum(v) / len(v), len(v)) for k, v in sorted(by.items())]


def _panel_figure3(axes, groups: list[dict], modes: list[str]) -> None:
    """R-MEL figure 3: rescue rate by (a) difficulty and (b) seed log-prob quintile, one line per mode, n per point
    (above the higher of two points at one x, below the lower)."""
    views = ((axes[0], lambda g: min(g["difficulty"], MAX_DIFFICULTY_SHOWN), True,
              "difficulty (times all-negative so far)", "(iii a) rescue rate by difficulty"),
             (axes[1], lambda g: g["logprob_quintile"], False,
              "seed mean log-prob quintile (1 = lowest)", "(iii b) by seed log-prob"))
    top = 0.0
    for ax, key, pooled, xlabel, title in views:
        series = {m: _rate_by([g for g in groups if g["mode"] == m], key) for m in modes}
        at_x: dict[int, dict[int, float]] = defaultdict(dict)  # x -> {mode position: rate}
        for j, pts in enumerate(series.values()):
            for x, y, _ in pts:
                at_x[x][j] = y
        for j, (mode, pts) in enumerate(series.items()):
            if not pts:
                continue
            xs, ys, _ns = zip(*pts)
            ax.plot(xs, ys, marker="os"[j], color=MODE_COLOURS[mode], label=MODE_LABELS[mode])
            for x, y, n in pts:
                others = [yy for jj, yy in at_x[x].items() if jj != j]  # on a tie the first mode's goes above
                above = not others or y > max(others) or (y == max(others) and j == 0)
                ax.annotate(f"n={n}", (x, y), xytext=(0, 7 if above else -13), textcoords="offset points",
                            ha="center", fontsize=7, color=MODE_COLOURS[mode])
        xmax = max(at_x, default=1)
        top = max([top, *(max(v.values()) for v in at_x.values())])
        ticks = list(range(1, xmax + 1))
        ax.set_xticks(ticks, [f"{t}+" if pooled and t == MAX_DIFFICULTY_SHOWN else str(t) for t in ticks])
        ax.set_xlim(0.5, xmax + 0.5)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_title(title, fontsize=10)
    ymax = max(10.0, top * 1.3)
    axes[0].set_ylim(-0.08 * ymax, ymax)  # room for the n labels of points at 0%
    axes[0].set_yticks([t for t in axes[0].get_yticks() if 0 <= t <= ymax])
    axes[0].set_ylabel("rescued groups (%)")
    axes[0].legend(fontsize=8, loc="upper left")


def _panel_tokens(ax, groups: list[dict], modes: list[str]) -> None:
    data = [[g["generated_tokens"] for g in groups if g["mode"] == m] for m in modes]
    box = ax.boxplot(data, positions=range(len(modes)), widths=0.5, showmeans=True, patch_artist=True,
                     medianprops={"color": "black"},
                     meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "black"})
    for patch, mode in zip(box["boxes"], modes):
        patch.set_facecolor(MODE_COLOURS[mode])
        patch.set_alpha(0.6)
    labels = []
    for mode, d in zip(modes, data):
        rescued = sum(g["rescued"] for g in groups if g["mode"] == mode)
        per_rescue = f"{sum(d) / rescued:,.0f} tok/rescue" if rescued else "no rescue"
        labels.append(f"{MODE_LABELS[mode]}\nmean {sum(d) / len(d):,.0f} tok, n={len(d)} groups\n{per_rescue}")
    ax.set_xticks(range(len(modes)), labels, fontsize=8)
    ax.set_xlim(-0.6, len(modes) - 0.4)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("generated tokens per all-negative group (tokens)")
    only = f"\n(only {MODE_LABELS[modes[0]]} in these rows)" if len(modes) == 1 else ""
    ax.set_title("(iv) revision compute per group" + only)


def _suptitle(title: str, groups: list[dict]) -> str:
    steps = len({g["step"] for g in groups})
    rescued = sum(g["rescued"] for g in groups)
    head = title or "Revision of all-negative groups"
    return (f"{head}\n{len(groups)} all-negative groups over {steps} step{'s' * (steps != 1)}, "
            f"{rescued} rescued ({100.0 * rescued / len(groups):.1f}%)")


def plot_revisions(rows: list[dict], path: str, title: str = "") -> str:
    """Write the four-panel revision figure (PNG, 12x8 in at 120 dpi) to ``path``; returns ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 8), dpi=120)
    FigureCanvasAgg(fig)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    if not rows:
        fig.suptitle(title or "Revision of all-negative groups")
        fig.text(0.5, 0.5, "no all-negative groups", ha="center", va="center", fontsize=20, color="0.4")
        fig.savefig(path, dpi=120)
        return path
    groups, buckets = run_analytics(rows)
    modes = [m for m in MODES if any(g["mode"] == m for g in groups)]
    grid = fig.add_gridspec(2, 2)
    fig3 = grid[1, 0].subgridspec(1, 2, wspace=0.08)
    ax_fig3 = [fig.add_subplot(fig3[0, 0])]
    ax_fig3.append(fig.add_subplot(fig3[0, 1], sharey=ax_fig3[0]))
    ax_fig3[1].tick_params(labelleft=False)
    axes = [fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]), *ax_fig3, fig.add_subplot(grid[1, 1])]
    _panel_tau(axes[0], buckets, modes)
    _panel_lcp(axes[1], rows)
    _panel_figure3(ax_fig3, groups, modes)
    _panel_tokens(axes[4], groups, modes)
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(_suptitle(title, groups))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
