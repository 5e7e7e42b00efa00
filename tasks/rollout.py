"""Rollout task: sample the step's groups with the current policy -> ``step_NNNN/rollouts.parquet``."""
from __future__ import annotations

from prefect import task

from mel.stages.common import StageResult
from mel.stages.rollout import run_rollout
from tasks.common import STAGE_CACHE, run_config


@task(name="rollout", cache_policy=STAGE_CACHE, persist_result=True)
def rollout(config_uri: str, config_hash: str, run_dir: str, step: int, checkpoint_uri: str) -> StageResult:
    return run_rollout(run_config(config_uri, config_hash), run_dir, step, checkpoint_uri)
