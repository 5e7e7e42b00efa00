"""MLflow: a run in the experiment ``trackers.group`` (a sweep's name) or else ``trackers.project``, at
``trackers.mlflow_uri`` (a server, or by default ``sqlite:///<parent of the run dir>/mlflow.db``), through
``MlflowClient`` (no global active run: a sweep's cells, one after another in one process, each get their own).

The config is the run's params (``section.field``), the metrics rows its metrics (with their step), the plots
artifacts under ``plots/`` and the before/after table ``before_after.json`` (MLflow's table format, shown in its
artifact view) and ``before_after.md``. A resumed training run continues the same MLflow run (its id is kept in
``trackers.json``); MLflow keeps a param's first value, so a param changed on resume (e.g. ``run.steps`` raised)
keeps the value it started with.

A server that does not answer fails the tracker at once (one probe, 5 s), instead of MLflow's own retries (minutes)."""
from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import urlparse

from flows.trackers.common import TRACKERS, Scalar, Tracker, TrackerError, markdown_table
from mel.stages.table import METRICS

PROBE_TIMEOUT_S = 5.0
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param's value


def tracking_uri(run) -> str:
    """``trackers.mlflow_uri``, else the SQLite store beside the run directory."""
    if run.cfg.trackers.mlflow_uri:
        return run.cfg.trackers.mlflow_uri
    try:
        return "sqlite:///" + os.path.join(os.path.dirname(run.local_dir()), "mlflow.db")
    except TrackerError:
        raise TrackerError(f"the run directory {run.run_dir} is not on this machine: set trackers.mlflow_uri (a "
                           "server, or sqlite:///path/mlflow.db)") from None


def probe(uri: str) -> None:
    """Fail fast when an HTTP tracking server does not answer (any HTTP answer will do)."""
    if urlparse(uri).scheme not in ("http", "https"):
        return
    import requests

    try:
        requests.get(uri, timeout=PROBE_TIMEOUT_S)
    except requests.RequestException as exc:
        raise TrackerError(f"no MLflow server answers at {uri} ({type(exc).__name__})") from None


def artifact_location(uri: str) -> str | None:
    """For a SQLite store, artifacts go beside the database (MLflow's own default is ``./mlruns`` in the current
    folder); a server decides for itself."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite":
        return None
    db = uri[len("sqlite:///"):]
    return "file://" + os.path.join(os.path.dirname(os.path.abspath(db)), "mlartifacts")


@TRACKERS.register("mlflow")
class MlflowTracker(Tracker):
    def open(self) -> dict[str, Any]:
        from mlflow.tracking import MlflowClient

        uri = tracking_uri(self.run)
        probe(uri)
        self.client = MlflowClient(uri)
        experiment = self.run.cfg.trackers.group or self.run.cfg.trackers.project
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(
            experiment, artifact_location=artifact_location(uri))
        run_id = self._resumed(uri)
        if run_id is None:
            tags = {"mel.run_dir": self.run.run_dir, "mel.config_hash": self.run.config_hash}
            run_id = self.client.create_run(experiment_id, run_name=self.run.name, tags=tags).info.run_id
        self.run_id: str = run_id
        self._log_params()
        return {"run_id": self.run_id, "tracking_uri": uri, "experiment_id": experiment_id}

    def _resumed(self, uri: str) -> str | None:
        """The recorded run, when it is on this tracking URI and still there (set running again)."""
        run_id = self.record.get("run_id")
        if not run_id or self.record.get("tracking_uri") != uri:
            return None
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
        except MlflowException:
            return None
        self.client.update_run(run_id, status="RUNNING")
        return run_id

    def _log_params(self) -> None:
        """The config's fields the run does not have yet (all of them for a new run)."""
        from mlflow.entities import Param

        have = self.client.get_run(self.run_id).data.params
        params = [Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in self.run.hparams().items() if k not in have]
        self.client.log_batch(self.run_id, params=params)

    def logged_through(self) -> int | None:
        metrics = self.client.get_run(self.run_id).data.metrics
        key = next((name for name in METRICS.names if name in metrics), None)
        if key is None:
            return None
        return max(m.step for m in self.client.get_metric_history(self.run_id, key))

    def log_step(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])

    def log_images(self, step: int, images: dict[str, str]) -> None:
        for path in images.values():
            self.client.log_artifact(self.run_id, path, artifact_path="plots")

    def log_table(self, step: int, name: str, columns: list[str], rows: list[list[Scalar]]) -> None:
        self.client.log_dict(self.run_id, {"columns": columns, "data": rows}, f"{name}.json")
        self.client.log_text(self.run_id, markdown_table(columns, rows), f"{name}.md")

    def close(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")
