"""Terminal progress for a run: a line per stage (reused or computed, counts, seconds) and a one-screen summary."""
from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled
        self.t0 = time.perf_counter()
        self.steps = 0
        self.reused: list[str] = []
        self.computed: list[str] = []
        self._stage_t0 = 0.0

    def _print(self, text: str) -> None:
        if self.enabled:
            print(text, file=self.stream or sys.stdout, flush=True)

    def run_start(self, cfg, run_dir: str) -> None:
        self.t0 = time.perf_counter()
        self.steps = cfg.run.steps
        self.reused, self.computed = [], []
        method = cfg.algorithm.name
        if cfg.mel.enabled:
            method += f" + meta-experiences ({cfg.mel.builder} builder, {cfg.mel.replay} replay)"
        self._print(f"mel run {cfg.run.name}: {cfg.run.steps} steps of {method} on {cfg.data.taskset} "
                    f"({cfg.data.prompts_per_step} prompts x {cfg.rollout.group_size} samples), "
                    f"model {cfg.model.source}")
        self._print(f"run dir: {run_dir}")

    def stage_start(self, stage: str, step: int) -> None:
        self._stage_t0 = time.perf_counter()
        self._print(f"[step {step + 1}/{self.steps}] {stage:<8} ...")

    def stage_done(self, result) -> None:
        name = f"step {result.step + 1} {result.stage}"
        (self.reused if result.reused else self.computed).append(name)
        took = time.perf_counter() - self._stage_t0
        how = "reused " if result.reused else "done   "
        self._print(f"[step {result.step + 1}/{self.steps}] {result.stage:<8} {how} {took:6.1f}s  {result.summary}")

    def run_done(self, run_dir: str, metrics: list[dict], checkpoint: str) -> None:
        wall = time.perf_counter() - self.t0
        self._print("")
        mel = any(m.get("num_pairs") is not None for m in metrics)
        head = (f"{'step':>4} {'reward':>7} {'pass':>6} {'mixed':>6} {'loss':>9} {'kl':>7} {'clip':>6} "
                f"{'gnorm':>7} {'gen tok/s':>9} {'train tok/s':>11}")
        self._print(head + (f" {'p_pair':>6} {'p_acc':>6} {'p_use':>6} {'retain':>6} {'M':>3} {'nll':>7}" if mel else ""))
        for m in metrics:
            line = (f"{m['step'] + 1:>4} {m['reward_mean']:>7.3f} {m['pass_rate']:>6.3f} "
                    f"{m['mixed_group_rate']:>6.3f} {m['loss']:>+9.4f} {m['kl']:>7.4f} {m['clip_frac']:>6.3f} "
                    f"{m['grad_norm']:>7.3f} {m['gen_tokens_per_s']:>9.1f} {m['train_tokens_per_s']:>11.1f}")
            if mel:
                line += (f" {m['p_pair']:>6.2f} {m['p_accept'] or 0:>6.2f} {m['p_usable'] or 0:>6.2f} "
                         f"{m['retention'] or 0:>6.2f} {m['num_experiences'] or 0:>3} {m['nll_loss'] or 0:>7.3f}")
            self._print(line)
        total = len(self.reused) + len(self.computed)
        if total and not self.computed:
            self._print(f"\nall {total} stages reused from cached artifacts; nothing recomputed")
        elif self.reused:
            self._print(f"\nreused {len(self.reused)} of {total} stages: {', '.join(self.reused)}")
        self._print(f"wall time {wall:.1f}s | metrics {run_dir.rstrip('/')}/metrics.parquet | "
                    f"last checkpoint {checkpoint}")


progress = Progress()
"""The process-wide reporter the flows print through (the CLI may replace its stream or disable it)."""
