"""The report's figures: lines over steps, one per method, on a grid of panels sharing one legend below them.

- ``validation.png``: a benchmark score vs updates done (0 = the base model), one panel per (benchmark, column); each
  method's peak (its best score, the earliest step on ties) is marked with a star and annotated.
- ``training_reward.png``: the mean reward of each step's rollouts; runs longer than ``SMOOTH_ABOVE`` steps also get a
  moving mean (thick) over the per-step values (thin).
- ``mel_rates.png``: p_pair, p_accept and retention per step (with the same moving mean on long runs).

matplotlib is imported inside the drawing function, with the Agg canvas and no pyplot, so no global backend is set
(as in `mel.experience.revision_report`). Colours are fixed per method by the caller, so a method has one colour in
every figure.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence

Points = list[tuple[int, float]]  # (step, value), in step order
Series = dict[str, Points]  # method -> points
Panel = tuple[str, Series]  # (title, series)

DPI = 120
SMOOTH_ABOVE = 20  # steps; longer reward curves get a moving mean
MAX_STEP_TICKS = 12  # up to this many distinct steps, each one is a tick (evaluations every k steps read as such)
PALETTE = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
           "tab:olive", "tab:cyan")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")


def method_colours(names: Sequence[str]) -> dict[str, tuple[str, str]]:
    """(colour, marker) per method, in order; colours cycle after ten, markers tell the cycles apart."""
    return {n: (PALETTE[i % len(PALETTE)], MARKERS[(i // len(PALETTE) + i) % len(MARKERS)])
            for i, n in enumerate(names)}


def peak_point(points: Points) -> tuple[int, float]:
    """The (step, value) with the highest value; the earliest step on ties."""
    if not points:
        raise ValueError("peak_point: no points")
    best = max(v for _, v in points)
    return min(s for s, v in points if v == best), best


def moving_mean(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over the last ``window`` values (fewer at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(max_cols, n)
    return math.ceil(n / cols), cols


LABEL_GAP_PT = 10.5  # vertical distance between stacked peak labels (fontsize 8)


def _star(ax, step: int, value: float, colour: str) -> None:
    ax.plot([step], [value], marker="*", markersize=15, color=colour, markeredgecolor="black", markeredgewidth=0.7,
            linestyle="none", zorder=5)


def spread(ys: Sequence[float], gap: float) -> list[float]:
    """Heights for labels anchored at ``ys`` (sorted high to low) so that consecutive ones are at least ``gap``
    apart: labels that would overlap form a cluster, stacked ``gap`` apart and centred on their anchors' mean;
    clusters that then overlap merge, until none do."""
    clusters: list[list[float]] = []

    def half(c: list[float]) -> float:
        return gap * (len(c) - 1) / 2

    for y in ys:
        clusters.append([y])
        while len(clusters) > 1 and (sum(clusters[-2]) / len(clusters[-2]) - half(clusters[-2])) - (
                sum(clusters[-1]) / len(clusters[-1]) + half(clusters[-1])) < gap:
            tail = clusters.pop()
            clusters[-1].extend(tail)
    out: list[float] = []
    for c in clusters:
        mid = sum(c) / len(c)
        out += [mid + half(c) - gap * j for j in range(len(c))]
    return out


def _label_peaks(ax, peaks: dict[str, tuple[int, float]], styles: dict[str, tuple[str, str]], last_step: int,
                 percent: bool, dpi: float) -> None:
    """Label each starred peak "value @ step" once the layout is known (display coordinates are final): peaks at the
    last step get labels right of it, in the room kept there; the labels of other peaks sit above their star. Labels
    of peaks at one step are spread vertically so that none overlap."""
    to_px = ax.transData.transform
    gap_px = LABEL_GAP_PT * dpi / 72
    at_step: dict[int, list[str]] = {}
    for method, (step, _) in peaks.items():
        at_step.setdefault(step, []).append(method)
    for step, methods in at_step.items():
        methods.sort(key=lambda m: -peaks[m][1])
        right = step == last_step
        stars = [to_px((step, peaks[m][1]))[1] for m in methods]
        lift = 0.0 if right else 10 * dpi / 72  # interior labels sit above their star
        heights = spread([y + lift for y in stars], gap_px)
        for method, star, height in zip(methods, stars, heights):
            value = peaks[method][1]
            text = f"{100 * value:.1f}% @ {step}" if percent else f"{value:.3g} @ {step}"
            label = ax.annotate(text, (step, value), xytext=(9 if right else 0, (height - star) * 72 / dpi),
                                textcoords="offset points", fontsize=8, color=styles[method][0], fontweight="bold",
                                ha="left" if right else "center", va="center", zorder=6, annotation_clip=False,
                                bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none",
                                      "alpha": 0.8})
            label.set_in_layout(False)


def _draw_panel(ax, series: Series, styles: dict[str, tuple[str, str]], *, percent: bool, mark_peaks: bool,
                smooth: bool, full_range: bool = False) -> dict[str, tuple[int, float]]:
    from matplotlib.ticker import FixedLocator, MaxNLocator, PercentFormatter

    steps = sorted({s for pts in series.values() for s, _ in pts})
    n = len(series)
    for i, (method, pts) in enumerate(series.items()):
        colour, marker = styles[method]
        xs = [s for s, _ in pts]
        ys = [v for _, v in pts]
        width = 1.4 + 1.2 * (n - 1 - i) / max(n - 1, 1)  # earlier lines wider: overlapping lines stay visible
        if smooth and len(pts) > SMOOTH_ABOVE:
            ax.plot(xs, ys, color=colour, linewidth=0.8, alpha=0.35)
            ax.plot(xs, moving_mean(ys, max(2, len(pts) // 10)), color=colour, linewidth=width + 0.4, label=method)
        else:
            size = (3.5 + 3.0 * (n - 1 - i) / max(n - 1, 1)) if len(pts) <= SMOOTH_ABOVE else 0
            ax.plot(xs, ys, color=colour, marker=marker, markersize=size, linewidth=width, label=method)
    # a flat series of several points (e.g. 0% at every step) has no peak worth a star and a label
    peaks = {m: peak_point(pts) for m, pts in series.items()
             if len(pts) == 1 or (pts and max(v for _, v in pts) > min(v for _, v in pts))} if mark_peaks else {}
    for method, (step, value) in peaks.items():
        _star(ax, step, value, styles[method][0])
    if percent:
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.margins(y=0.2 if mark_peaks else 0.08)
    if percent:  # rates live in [0, 1]: no negative axis below a flat 0% line, no room above 100%
        values = [v for pts in series.values() for _, v in pts]
        low, high = ax.get_ylim()
        top = max(values, default=0.0)
        if full_range:
            ax.set_ylim(-0.02, 1.05)
        else:
            ax.set_ylim(max(low, -0.02), min(high, 1.05) if top > 0 else 0.1)
    ax.grid(alpha=0.3)
    if not steps:
        return peaks
    first, last = steps[0], steps[-1]
    room = 0.3 if any(s == last for s, _ in peaks.values()) else 0.06  # the last step's labels go right of it
    if last > first:
        ax.set_xlim(first - 0.06 * (last - first), last + room * (last - first))
    else:
        ax.set_xlim(first - 1, first + 1)
    ticks = steps if len(steps) <= MAX_STEP_TICKS else [
        t for t in MaxNLocator(integer=True).tick_values(first, last) if first <= t <= last]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    return peaks


def plot_panels(path: str, panels: Sequence[Panel], styles: dict[str, tuple[str, str]], *, title: str, xlabel: str,
                ylabel: str, percent: bool = False, mark_peaks: bool = False, smooth: bool = False,
                max_cols: int = 3, full_range: bool = False) -> dict[str, dict[str, tuple[int, float]]]:
    """Draw ``panels`` (title, {method: points}) on a grid and write a PNG to ``path``; returns the peaks marked,
    ``{panel title: {method: (step, value)}}`` (empty dicts unless ``mark_peaks``). ``full_range``: percent panels
    span 0-100% (rates), not just the data."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    if not panels:
        raise ValueError(f"{path}: nothing to plot")
    rows, cols = _grid(len(panels), max_cols)
    methods = list(dict.fromkeys(m for _, series in panels for m in series))
    legend_rows = math.ceil((len(methods) + mark_peaks) / 4)
    fig = Figure(figsize=(max(7.0, 4.8 * cols), 3.5 * rows + 0.9 + 0.25 * legend_rows), dpi=DPI,
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    peaks: dict[str, dict[str, tuple[int, float]]] = {}
    for k, (panel_title, series) in enumerate(panels):
        ax = axes[k // cols][k % cols]
        peaks[panel_title] = _draw_panel(ax, series, styles, percent=percent, mark_peaks=mark_peaks, smooth=smooth,
                                         full_range=full_range)
        ax.set_title(panel_title, fontsize=10)
        if not series:
            ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes, color="0.4")
            ax.set_xticks([])
            ax.set_yticks([])
        if k // cols == rows - 1 or k + cols >= len(panels):
            ax.set_xlabel(xlabel)
        if k % cols == 0:
            ax.set_ylabel(ylabel)
    for k in range(len(panels), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    no_markers = smooth and any(len(p) > SMOOTH_ABOVE for _, series in panels for p in series.values())
    handles = [Line2D([], [], color=styles[m][0], marker=None if no_markers else styles[m][1], label=m)
               for m in methods]
    if mark_peaks:
        handles.append(Line2D([], [], marker="*", markersize=12, color="0.5", markeredgecolor="black",
                              linestyle="none", label="peak (value @ step)"))
    entry_in = 0.75 + 0.085 * max(len(str(h.get_label())) for h in handles)  # legend entry width, inches (fontsize 10)
    ncols = max(1, min(len(handles), int(fig.get_figwidth() // entry_in)))
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols, frameon=False)
    fig.suptitle(title, fontsize=12)
    if mark_peaks:
        fig.canvas.draw()  # runs the layout: the axes are where they will be saved
        for k, (panel_title, series) in enumerate(panels):
            if peaks[panel_title]:
                last = max(s for pts in series.values() for s, _ in pts)
                _label_peaks(axes[k // cols][k % cols], peaks[panel_title], styles, last, percent, fig.dpi)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return peaks
