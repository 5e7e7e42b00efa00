"""What every experiment tracker shares: the interface one implements (`Tracker`), the registry that names them
(``run.loggers``), and the facts about the run it is opened with (`RunInfo`: names, folders, the config as
hyperparameters)."""
from __future__ import annotations

import abc
import json
import os
from dataclasses import dataclass
from typing import Any

from mel import artifacts
from mel.config import Config, to_dict
from mel.registry import Registry

Scalar = int | float | bool | str


class TrackerError(RuntimeError):
    """A tracker cannot run as configured (the message says what to change)."""


@dataclass(frozen=True)
class RunInfo:
    """The run a tracker logs: its config, run directory and config hash."""

    cfg: Config
    run_dir: str
    config_hash: str

    @property
    def name(self) -> str:
        """The run's name in the trackers: ``trackers.name``, else the run directory's name."""
        return self.cfg.trackers.name or self.run_dir.rstrip("/").rsplit("/", 1)[-1]

    def local_dir(self, *parts: str) -> str:
        """A folder under the run directory on this machine; a tracker that writes local files needs one."""
        if not artifacts.is_local(self.run_dir):
            raise TrackerError(f"the run directory {self.run_dir} is not on this machine; this tracker writes local "
                               "files (use a local --run-dir, or another tracker)")
        return os.path.join(os.path.abspath(artifacts.local_path(self.run_dir)), *parts)

    def config(self) -> dict[str, Any]:
        """The config as nested plain data, with the run's config hash and directory."""
        return {**to_dict(self.cfg), "config_hash": self.config_hash, "run_dir": self.run_dir}

    def hparams(self) -> dict[str, Scalar]:
        """The config as flat ``section.field`` hyperparameters (lists and nulls as JSON text, which every tracker's
        hyperparameter table accepts)."""
        flat: dict[str, Scalar] = {}
        for section, fields in self.config().items():
            for key, value in fields.items() if isinstance(fields, dict) else [("", fields)]:
                name = f"{section}.{key}" if key else section
                flat[name] = value if isinstance(value, (int, float, bool, str)) else json.dumps(value)
        return flat


class Tracker(abc.ABC):
    """One tracker's view of a run. The methods are called in order on one thread of the tracker's own
    (`flows.trackers.RunTrackers`), never on the training loop's; an exception disables the tracker for the rest of
    the run (said once).

    ``record`` is what this tracker kept in ``<run dir>/trackers.json`` the last time (empty for a new run): the
    ids that let a resumed run continue the same tracker run."""

    def __init__(self, run: RunInfo, record: dict[str, Any]) -> None:
        self.run = run
        self.record = record

    @abc.abstractmethod
    def open(self) -> dict[str, Any]:
        """Start the tracker's run, or continue the one ``record`` names; log the hyperparameters of a new run.
        Returns what to keep in ``trackers.json`` (ids, folders)."""

    def logged_through(self) -> int | None:
        """The last step the tracker itself says it holds (after `open`), where it can tell; None otherwise."""
        return None

    @abc.abstractmethod
    def log_step(self, step: int, values: dict[str, float]) -> None:
        """One ``metrics.parquet`` row (its ``step`` and every non-null column, under the column names)."""

    @abc.abstractmethod
    def log_images(self, step: int, images: dict[str, str]) -> None:
        """The run's plots at its last step: name -> a PNG file."""

    @abc.abstractmethod
    def log_table(self, step: int, name: str, columns: list[str], rows: list[list[Scalar]]) -> None:
        """A table (the before/after scores) at the run's last step."""

    @abc.abstractmethod
    def close(self, failed: bool) -> None:
        """End the tracker's run (as failed when the training run raised)."""


TRACKERS: Registry[type[Tracker]] = Registry("tracker")
"""``run.loggers`` names -> their `Tracker` classes (``flows.trackers.to_*``)."""


def markdown_table(columns: list[str], rows: list[list[Scalar]]) -> str:
    """A table as Markdown (TensorBoard's text tab, MLflow's artifact view render it)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
