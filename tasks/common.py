"""Shared task settings: the cache policy and the one place a task loads the run's config."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Optional

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.utilities.hashing import hash_objects

from mel import artifacts
from mel.config import Config, load_config

TASK_RUN_KEY = "prefect_task_run"  # the record's manifest key: the task run whose result Prefect keeps for it


@dataclass
class ManifestCache(CachePolicy):
    """Prefect's cache, keyed by the artifacts' manifests, so that it cannot disagree with the files: ``done(params)``
    is the task's record URI and whether its work is done (`mel.stages.step.Stage.complete` for a stage: outputs
    complete and made from what the inputs hold now). Done: the key names the task run that made or reused the
    record (`stamp`), whose stored result Prefect shows as a ``Cached`` run; not done: the key is this run's own, so
    no stored result can stand in for work whose files are gone or whose inputs changed."""

    done: Optional[Callable[[dict[str, Any]], tuple[str, bool]]] = None

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> Optional[str]:
        if task_ctx is None or self.done is None:
            return None
        uri, done = self.done(inputs)
        stamped = artifacts.read_manifest(uri).get(TASK_RUN_KEY) if done else None
        return hash_objects(task_ctx.task.name, uri, stamped or str(task_ctx.task_run.id), raise_on_failure=True)


def stamp(uri: str, reused: bool) -> None:
    """Name the running task run in the record ``uri`` (`ManifestCache`): where it made the record, or reused one no
    task run has named yet (written outside Prefect, or by a run whose stamp did not land)."""
    from prefect.runtime import task_run

    if task_run.id and not (reused and artifacts.read_manifest(uri).get(TASK_RUN_KEY)):
        artifacts.annotate_manifest(uri, **{TASK_RUN_KEY: str(task_run.id)})


@lru_cache(maxsize=8)
def run_config(config_uri: str, config_hash: str) -> Config:
    """The resolved config saved in the run directory (its hash is part of every task's cache key)."""
    cfg = load_config(config_uri)
    from mel.config import config_hash as compute_hash

    if compute_hash(cfg) != config_hash:
        raise ValueError(f"{config_uri} does not hash to {config_hash}: the run directory holds another config")
    return cfg
