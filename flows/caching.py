"""Cached task calls shared by the flows: where Prefect keeps a run's task results, and running a task (its cache is
keyed by its artifacts' manifests, `tasks.common.ManifestCache`: a hit is done work whose files are there)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from mel import artifacts


def results_storage(run_dir: str) -> Path:
    """Where Prefect persists task results (its cache records): beside a local run, else in the user cache."""
    if artifacts.is_local(run_dir):
        return Path(artifacts.local_path(run_dir)).resolve() / "_prefect_results"
    digest = hashlib.sha256(run_dir.encode()).hexdigest()[:16]
    return Path(os.path.expanduser("~/.cache/mel/prefect-results")) / digest


def _final_state(task_fn, params: dict, remote: dict | None):
    """Run a task in this process, or with ``remote`` (Ray resources) as a Ray task through the flow's
    ``RayTaskRunner``; its final state."""
    if remote is None:
        return task_fn(**params, return_state=True)
    from prefect_ray.context import remote_options

    with remote_options(**remote):
        future = task_fn.submit(**params)
    future.wait()
    return future.state


def run_cached(task_fn, storage: Path, remote: dict | None = None, **params):
    """Run a task with results persisted in ``storage``; returns ``(result, cached)`` (Prefect's ``Cached`` run)."""
    state = _final_state(task_fn.with_options(result_storage=storage), params, remote)
    return state.result(), state.name == "Cached"
