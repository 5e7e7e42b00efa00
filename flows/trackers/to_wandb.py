"""Weights & Biases: a run in ``trackers.project`` (and ``trackers.entity``), grouped by ``trackers.group`` (a sweep's
name), named like the run directory, with the config as its config; files under ``<run dir>/wandb``.

``trackers.wandb_mode``: ``online`` (needs ``wandb login`` or ``WANDB_API_KEY``), ``offline`` (``wandb sync
<run dir>/wandb/offline-run-*`` uploads it later; each resume adds one such folder, synced into the same run) or
``disabled``. The run id is kept in ``trackers.json``, so a resumed training run resumes the same W&B run
(``resume="allow"``). W&B's console capture is off: the CLI's progress lines stay as they are."""
from __future__ import annotations

import secrets
from typing import Any

from mel import artifacts
from flows.trackers.common import TRACKERS, Scalar, Tracker


@TRACKERS.register("wandb")
class WandbTracker(Tracker):
    def open(self) -> dict[str, Any]:
        import wandb

        t = self.run.cfg.trackers
        run_id = self.record.get("id") or secrets.token_hex(6)
        where: dict[str, Any] = {"dir": self.run.local_dir()} if artifacts.is_local(self.run.run_dir) else {}
        self.wb = wandb.init(project=t.project, entity=t.entity, group=t.group, name=self.run.name, id=run_id,
                             resume="allow", mode=t.wandb_mode, reinit="create_new",
                             settings=wandb.Settings(console="off", silent=True), **where)
        self.wb.config.update(self.run.config(), allow_val_change=True)  # a resume may have raised run.steps
        return {"id": run_id, "project": t.project, "mode": t.wandb_mode}

    def log_step(self, step: int, values: dict[str, float]) -> None:
        self.wb.log(values, step=step)

    def _at(self, step: int) -> int:
        """``step``, or W&B's current step when a resumed online run is already past it (W&B drops what is logged
        at an earlier step)."""
        return max(step, self.wb.step)

    def log_images(self, step: int, images: dict[str, str]) -> None:
        import wandb

        self.wb.log({f"plots/{name}": wandb.Image(path) for name, path in images.items()}, step=self._at(step))

    def log_table(self, step: int, name: str, columns: list[str], rows: list[list[Scalar]]) -> None:
        import wandb

        # wandb annotates columns as list[str | int] (an invariant list): a list[str] is what it takes
        self.wb.log({name: wandb.Table(columns=columns, data=rows)}, step=self._at(step))  # type: ignore[arg-type]

    def close(self, failed: bool) -> None:
        self.wb.finish(exit_code=1 if failed else 0)
