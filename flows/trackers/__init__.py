"""Experiment trackers for a training run (``run.loggers``): TensorBoard, Weights & Biases and MLflow
(``flows.trackers.to_*``, each registered in `TRACKERS`; settings in the config's ``trackers`` section).

`RunTrackers` consumes what the training flow already has, as the Prefect run page does (`flows.run_page`): each
step's ``metrics.parquet`` row, the end of the run (the run's plots) and the before/after table. Nothing in the
pure core knows about it.

A tracker never stops or slows the run: each runs on a thread of its own, fed through a queue, so the training loop
only enqueues (W&B's start, a slow server, an upload never delay a step); the first exception a tracker raises (a
missing package, a bad URI, no network) is said once and the tracker is dropped for the rest of the run; when the
run ends each tracker gets ``CLOSE_TIMEOUT_S`` to finish, then is left behind.

Resume: ``<run dir>/trackers.json`` keeps, per tracker, what lets the same command run again continue the same
tracker run (the W&B run id, the MLflow run id, the TensorBoard folder) and the last step it logged. The training
flow hands over every step's row again as it reuses them; a step at or before the recorded one (or the last one the
tracker itself holds, where it can tell: MLflow) is not logged again, nor are the final plots and table of a step
already given them.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import tempfile
import threading
import time
from typing import Any, Callable

from mel import artifacts
from mel.config import Config
from mel.progress import progress
from flows.trackers import to_mlflow, to_tensorboard, to_wandb  # noqa: F401  (each registers its tracker)
from flows.trackers.common import TRACKERS, RunInfo, Scalar, Tracker

STATE_FILE = "trackers.json"
CLOSE_TIMEOUT_S = 60.0
"""How long the end of a run waits for the trackers to finish what is queued (uploads included), all together."""
BEFORE_AFTER_COLUMNS = ["benchmark", "score", "base", "final", "final - base", "95% CI low", "95% CI high", "p",
                        "problems"]


class TrackerState:
    """``<run dir>/trackers.json``: per tracker, its ids and the last step it logged; rewritten whole (a temporary
    file, then renamed) at each change, by any tracker's thread."""

    def __init__(self, run_dir: str) -> None:
        self.uri = artifacts.join(run_dir, STATE_FILE)
        self.lock = threading.Lock()
        self.data: dict[str, dict[str, Any]] = {}
        try:
            if artifacts.exists(self.uri):
                import fsspec

                with fsspec.open(self.uri, "rt") as f:
                    self.data = dict(json.load(f))
        except (OSError, ValueError, TypeError) as exc:  # unreadable: the trackers start new runs, the run goes on
            progress.note(f"trackers: {self.uri} unreadable ({type(exc).__name__}: {exc}); starting new tracker runs")

    def get(self, name: str) -> dict[str, Any]:
        with self.lock:
            return dict(self.data.get(name, {}))

    def update(self, name: str, **fields: Any) -> None:
        import fsspec

        with self.lock:
            self.data.setdefault(name, {}).update(fields)
            fs, path = fsspec.core.url_to_fs(self.uri)
            tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
            with fs.open(tmp, "wt") as f:
                json.dump(self.data, f, indent=1, sort_keys=True)
            fs.mv(tmp, path)


class Once:
    """A value computed by the first thread that asks, shared by the others."""

    def __init__(self, compute: Callable[[], Any]) -> None:
        self.compute, self.lock, self.done, self.value = compute, threading.Lock(), False, None

    def __call__(self) -> Any:
        with self.lock:
            if not self.done:
                self.value, self.done = self.compute(), True
            return self.value


class TrackerWorker(threading.Thread):
    """One tracker's thread: runs its calls in order, skips what ``trackers.json`` says was logged, and records
    each step once the tracker has it."""

    def __init__(self, name: str, tracker: Tracker, state: TrackerState) -> None:
        super().__init__(name=f"mel-tracker-{name}", daemon=True)
        self.key, self.tracker, self.state = name, tracker, state
        self.jobs: queue.Queue = queue.Queue()
        self.opened = False
        self.last_step: int | None = None
        self.error: str | None = None

    def submit(self, job: Callable[..., None], *args: Any) -> None:
        self.jobs.put((job, args))

    def run(self) -> None:
        while (item := self.jobs.get()) is not None:
            job, args = item
            if self.error is None:
                try:
                    job(*args)
                except Exception as exc:  # noqa: BLE001 -- a tracker's failure, whatever it is, must not stop the run
                    self.fail(exc)

    def fail(self, exc: Exception) -> None:
        hint = " (pip install 'mel-rlvr[trackers]')" if isinstance(exc, ImportError) else ""
        self.error = f"{type(exc).__name__}: {exc}{hint}"
        progress.note(f"tracker {self.key} failed: {self.error}; the run goes on without it")
        if self.opened:
            try:
                self.tracker.close(failed=True)
            except Exception:  # noqa: BLE001 -- already said it failed
                pass

    def open(self) -> None:
        self.state.update(self.key, **self.tracker.open())
        self.opened = True
        known = [s for s in (self.state.get(self.key).get("last_step"), self.tracker.logged_through())
                 if s is not None]
        self.last_step = max(known) if known else None

    def step(self, step: int, values: dict[str, float]) -> None:
        if self.last_step is not None and step <= self.last_step:
            return
        self.tracker.log_step(step, values)
        self.last_step = step
        self.state.update(self.key, last_step=step)

    def images(self, step: int, draw: Callable[[], dict[str, str]]) -> None:
        images = draw()
        if images and self.state.get(self.key).get("plots_step") != step:
            self.tracker.log_images(step, images)
            self.state.update(self.key, plots_step=step)

    def table(self, step: int, name: str, columns: list[str], rows: list[list[Scalar]]) -> None:
        if self.state.get(self.key).get(f"{name}_step") != step:
            self.tracker.log_table(step, name, columns, rows)
            self.state.update(self.key, **{f"{name}_step": step})

    def close(self, failed: bool) -> None:
        if self.opened:
            self.tracker.close(failed)


class RunTrackers:
    """Sends a training run to the trackers in ``run.loggers`` (a context manager around its steps, beside
    `flows.run_page.RunPage`; `start` once the run directory is checked); with none it does nothing."""

    def __init__(self, cfg: Config, run_dir: str, cfg_hash: str) -> None:
        self.run = RunInfo(cfg, run_dir, cfg_hash)
        self.names = list(dict.fromkeys(cfg.run.loggers))
        self.workers: list[TrackerWorker] = []
        self.queued_through = -1  # the last step handed to the workers by this process
        self.last_step: int | None = None
        self.tmp: str | None = None

    def __enter__(self) -> "RunTrackers":
        return self

    def start(self) -> None:
        """Start each tracker's thread (opening its run there): once the run directory is known to be this
        config's (``flows.train.init_run_dir``), so that a refused run directory gets no tracker files."""
        if not self.names:
            return
        state = TrackerState(self.run.run_dir)
        for name in self.names:
            worker = TrackerWorker(name, TRACKERS.get(name)(self.run, state.get(name)), state)
            worker.start()
            worker.submit(worker.open)
            self.workers.append(worker)

    def __exit__(self, exc_type, *exc) -> None:
        self.close(failed=exc_type is not None)

    def _all(self, job: str, *args: Any) -> None:
        for worker in self.workers:
            worker.submit(getattr(worker, job), *args)

    def step_done(self, step: int, metrics: list[dict]) -> None:
        """After step ``step``: the rows of ``metrics`` (the run's ``metrics.parquet`` so far) not yet handed over."""
        for row in metrics:
            if row["step"] > self.queued_through:
                values = {k: v for k, v in row.items() if k != "step" and v is not None}
                self._all("step", row["step"], values)
                self.queued_through = self.last_step = row["step"]

    def run_done(self, metrics: list[dict], checkpoint: str) -> None:
        """The run's plots, as images at its last step (drawn once, on the first tracker thread that gets there)."""
        if self.workers and metrics:
            self.last_step = metrics[-1]["step"]
            self._all("images", self.last_step, Once(self.draw_plots))

    def before_after(self, rows) -> None:
        """The before/after table (`mel.eval.before_after` rows) at the run's last step."""
        if self.workers and rows and self.last_step is not None:
            table = [[r.key.where, r.key.what, r.before, r.after, r.result.diff, r.result.ci_low, r.result.ci_high,
                      r.result.p_value, r.result.n] for r in rows]
            self._all("table", self.last_step, "before_after", BEFORE_AFTER_COLUMNS, table)

    def draw_plots(self) -> dict[str, str]:
        """The figures ``mel report`` draws for this run alone (training reward, meta-experience rates, validation
        when evaluated at steps) and the PNGs the run wrote itself (``report/*.png``: R-MEL's revisions), in a
        temporary folder removed when the trackers close. name -> path; when drawing fails, that is said once and
        what was drawn is logged."""
        import fsspec

        from mel.eval.report import figures
        from mel.eval.runs import load_run

        self.tmp = tempfile.mkdtemp(prefix="mel-trackers-")
        images: dict[str, str] = {}
        report = artifacts.join(self.run.run_dir, "report")
        try:
            images.update(figures([load_run(self.run.run_dir)], self.tmp)[0])
            for name in artifacts.list_names(report):
                if name.endswith(".png"):
                    fs, path = fsspec.core.url_to_fs(artifacts.join(report, name))
                    fs.get_file(path, os.path.join(self.tmp, name))
                    images[name[:-len(".png")]] = os.path.join(self.tmp, name)
        except Exception as exc:  # noqa: BLE001 -- a plot is not worth a tracker
            progress.note(f"trackers: the run's plots could not all be drawn ({type(exc).__name__}: {exc})")
        return images

    def close(self, failed: bool = False) -> None:
        """Let every tracker finish (at most ``CLOSE_TIMEOUT_S`` in all), then end their threads."""
        for worker in self.workers:
            worker.submit(worker.close, failed)
            worker.jobs.put(None)
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        for worker in self.workers:
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                progress.note(f"tracker {worker.key} is still busy after {CLOSE_TIMEOUT_S:.0f} s; left behind")
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.workers = []
