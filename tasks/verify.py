"""Verify task: score the step's rollouts in the sandbox / with math-verify -> ``step_NNNN/verdicts.parquet``."""
from __future__ import annotations

from prefect import task

from mel.stages.common import StageResult
from mel.stages.verify import run_verify
from tasks.common import STAGE_CACHE, run_config


@task(name="verify", cache_policy=STAGE_CACHE, persist_result=True)
def verify(config_uri: str, config_hash: str, run_dir: str, step: int, rollouts_uri: str) -> StageResult:
    return run_verify(run_config(config_uri, config_hash), run_dir, step, rollouts_uri)
