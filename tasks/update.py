"""Update task: RL update (+ lambda * NLL of the step's meta-experiences), checkpoint and step metrics
-> ``step_NNNN/checkpoint/``, ``step_NNNN/update.parquet``."""
from __future__ import annotations

from prefect import task

from mel.stages.common import StageResult
from mel.stages.update import run_update
from tasks.common import STAGE_CACHE, run_config


@task(name="update", cache_policy=STAGE_CACHE, persist_result=True)
def update(
    config_uri: str, config_hash: str, run_dir: str, step: int, checkpoint_uri: str, rollouts_uri: str,
    verdicts_uri: str, meta_experiences_uri: str | None = None,
) -> StageResult:
    return run_update(run_config(config_uri, config_hash), run_dir, step, checkpoint_uri, rollouts_uri, verdicts_uri,
                      meta_experiences_uri)
