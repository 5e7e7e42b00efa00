"""Terminal progress for a run: a line per stage (reused or computed, counts, seconds) and a one-screen summary,
the per-step metrics as a rich table (plain text off a terminal, see `mel.console`)."""
from __future__ import annotations

import time
from typing import Callable, TextIO

from rich.table import Table
from rich.text import Text

from mel.console import show, table
from mel.eval.before_after import before_after_table

METRIC_COLUMNS = (
    ("reward", "reward_mean", ".3f"),
    ("pass", "pass_rate", ".3f"),
    ("mixed", "mixed_group_rate", ".3f"),
    ("loss", "loss", "+.4f"),
    ("kl", "kl", ".4f"),
    ("clip", "clip_frac", ".3f"),
    ("gnorm", "grad_norm", ".3f"),
    ("gen tok/s", "gen_tokens_per_s", ".1f"),
    ("train tok/s", "train_tokens_per_s", ".1f"),
)
"""The summary table's columns after ``step``: (header, metrics column, format spec)."""

MEL_METRIC_COLUMNS = (
    ("p_pair", "p_pair", ".2f"),
    ("p_acc", "p_accept", ".2f"),
    ("p_use", "p_usable", ".2f"),
    ("retain", "retention", ".2f"),
    ("M", "num_experiences", "d"),
    ("nll", "nll_loss", ".3f"),
)
"""Added when a step of the run built meta-experiences (``num_pairs`` is set); a null value shows as ``-``."""


def _cell(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def metrics_table(metrics: list[dict]) -> Table:
    """The run's metrics rows (``metrics.parquet``) as a rich table, one row per step (numbered from 1)."""
    columns: tuple[tuple[str, str, str], ...] = METRIC_COLUMNS
    if any(m.get("num_pairs") is not None for m in metrics):
        columns += MEL_METRIC_COLUMNS
    out = table("step", *(header for header, _, _ in columns))
    for m in metrics:
        out.add_row(str(m["step"] + 1), *(_cell(m.get(key), spec) for _, key, spec in columns))
    return out


class Progress:
    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled
        self.t0 = time.perf_counter()
        self.steps = 0
        self.reused: list[str] = []
        self.computed: list[str] = []
        self._stage_t0 = 0.0
        self.listeners: list[Callable[[str], None]] = []
        """Also given every line of text printed (not the tables), e.g. an orchestrator's run logger."""

    def _print(self, renderable: Text | Table | str = "") -> None:
        if self.enabled:
            show(renderable, self.stream)
        if not isinstance(renderable, Table):
            line = renderable.plain if isinstance(renderable, Text) else renderable
            for listen in self.listeners if line.strip() else ():
                listen(line.strip())

    def run_start(self, cfg, run_dir: str) -> None:
        self.t0 = time.perf_counter()
        self.steps = cfg.run.steps
        self.reused, self.computed = [], []
        method = cfg.algorithm.name
        if cfg.mel.enabled:
            method += f" + meta-experiences ({cfg.mel.builder} builder, {cfg.mel.replay} replay)"
        self._print(Text.assemble((f"mel run {cfg.run.name}", "bold"), f": {cfg.run.steps} steps of {method} on "
                                  f"{cfg.data.taskset} ({cfg.data.prompts_per_step} prompts x "
                                  f"{cfg.rollout.group_size} samples), model {cfg.model.source}"))
        self._print(f"run dir: {run_dir}")

    def _stage_line(self, step: int, stage: str, rest: Text | str) -> Text:
        return Text.assemble((f"[step {step + 1}/{self.steps}] ", "dim"), (f"{stage:<8} ", "bold"), rest)

    def stage_start(self, stage: str, step: int) -> None:
        self._stage_t0 = time.perf_counter()
        self._print(self._stage_line(step, stage, Text("...", "dim")))

    def stage_done(self, result) -> None:
        name = f"step {result.step + 1} {result.stage}"
        (self.reused if result.reused else self.computed).append(name)
        took = time.perf_counter() - self._stage_t0
        how = ("reused ", "cyan") if result.reused else ("done   ", "green")
        self._print(self._stage_line(result.step, result.stage,
                                     Text.assemble(how, f" {took:6.1f}s  {result.summary}")))
        for note in result.notes:
            self.note(note)

    def note(self, text: str) -> None:
        """A line about the run that is no stage's result (e.g. an update replayed to rebuild resident state)."""
        self._print(Text(text, "dim"))

    def run_done(self, run_dir: str, metrics: list[dict], checkpoint: str) -> None:
        wall = time.perf_counter() - self.t0
        self._print()
        self._print(metrics_table(metrics))
        total = len(self.reused) + len(self.computed)
        if total and not self.computed:
            self._print(f"\nall {total} stages reused from cached artifacts; nothing recomputed")
        elif self.reused:
            self._print(f"\nreused {len(self.reused)} of {total} stages: {', '.join(self.reused)}")
        self._print(f"wall time {wall:.1f}s | metrics {run_dir.rstrip('/')}/metrics.parquet | "
                    f"last checkpoint {checkpoint}")

    def eval_start(self, benchmarks, cells: int) -> None:
        self._print(f"\nevaluating the base model and the final checkpoint on {', '.join(benchmarks)} ({cells} cells)")

    def before_after(self, rows, run_dir: str) -> None:
        """The before/after table (`mel.eval.before_after`) and where the scores are."""
        if not rows:
            self._print("no score was evaluated at both the base model and the final checkpoint")
            return
        self._print(f"\nbefore and after training (base model vs step {rows[0].final_step}; final - base with its "
                    "paired bootstrap 95% CI over problems):")
        self._print(before_after_table(rows))
        name = run_dir.rstrip("/").rsplit("/", 1)[-1]
        self._print(f"eval dir {run_dir.rstrip('/')}/eval | a report with curves: mel report {run_dir} "
                    f"--out reports/{name}")


progress = Progress()
"""The process-wide reporter the flows print through (the CLI may replace its stream or disable it)."""
