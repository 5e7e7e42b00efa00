"""What a training run's page in the Prefect UI shows, besides its task runs (named ``rollout step 1``, ...): the
CLI's stage lines through the run logger, a progress artifact, the per-step metrics table (a new version each
step), the stages' own reports (meta-experiences, revisions), a final summary with the checkpoint's location and,
when the config's ``eval`` section names benchmarks, the before/after table (base model vs final checkpoint)."""
from __future__ import annotations

import io
import re
from typing import cast
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.exceptions import MissingContextError

from mel.config import Config
from mel.console import show
from mel.progress import metrics_table, progress

SHOWN = ("step", "reward_mean", "pass_rate", "mixed_group_rate", "loss", "kl", "clip_frac", "grad_norm", "entropy",
         "p_pair", "p_accept", "retention", "num_experiences", "nll_loss", "gen_tokens_per_s", "train_tokens_per_s")


def _key(text: str) -> str:
    """An artifact key (lowercase letters, digits, dashes)."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")


def _log(line: str) -> None:
    try:
        get_run_logger().info(line)
    except MissingContextError:  # printed outside a flow or task run (the CLI's complete-run report)
        pass


class RunPage:
    """Publishes a run's progress while the ``mel-train`` flow runs (a context manager around its steps)."""

    def __init__(self, cfg: Config, run_dir: str, cfg_hash: str) -> None:
        self.steps, self.run_dir = cfg.run.steps, run_dir
        self.key = _key(f"mel-{cfg.run.name}-{cfg_hash}")

    def __enter__(self) -> "RunPage":
        progress.listeners.append(_log)
        # Prefect's sync_compatible function: a UUID when called from synchronous code, as here
        self.progress_id = cast(UUID, create_progress_artifact(
            0.0, key=f"{self.key}-progress", description=f"steps done of {self.steps} ({self.run_dir})"))
        return self

    def __exit__(self, *exc) -> None:
        progress.listeners.remove(_log)

    def step_done(self, step: int, metrics: list[dict]) -> None:
        """After step ``step`` (0-based): the metrics table so far and the progress."""
        rows = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items() if k in SHOWN}
                for m in metrics]
        for row in rows:
            row["step"] += 1
        create_table_artifact(rows, key=f"{self.key}-metrics",
                              description=f"per-step metrics of {self.run_dir} (step {step + 1} of {self.steps})")
        update_progress_artifact(self.progress_id, 100.0 * (step + 1) / self.steps)

    def run_done(self, metrics: list[dict], checkpoint: str) -> None:
        table = io.StringIO()
        show(metrics_table(metrics), table)  # the CLI's table, as plain text
        reused = len(progress.reused)
        total = reused + len(progress.computed)
        lines = [f"# Run `{self.run_dir}`", "", f"- steps: {len(metrics)}",
                 f"- last checkpoint: `{checkpoint}`", f"- metrics: `{self.run_dir.rstrip('/')}/metrics.parquet`",
                 f"- stages reused from cached artifacts: {reused} of {total}", "", "```",
                 table.getvalue().rstrip(), "```"]
        create_markdown_artifact("\n".join(lines), key=f"{self.key}-summary",
                                 description=f"summary of {self.run_dir}")

    def before_after(self, rows) -> None:
        """The before/after table (`mel.eval.before_after` rows) as a table artifact: one row per score."""
        if not rows:
            return
        table = [{"benchmark": r.key.where, "score": r.key.what, "base": round(r.before, 4),
                  "final": round(r.after, 4), "final - base": round(r.result.diff, 4),
                  "95% CI low": round(r.result.ci_low, 4), "95% CI high": round(r.result.ci_high, 4),
                  "p": round(r.result.p_value, 4), "problems": r.result.n} for r in rows]
        create_table_artifact(table, key=f"{self.key}-before-after",
                              description=f"base model vs step {rows[0].final_step} of {self.run_dir} (paired "
                                          "bootstrap 95% CI over problems)")
