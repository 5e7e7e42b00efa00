"""Pair task (MEL): contrastive (y+, y-) pairs from the step's verdicts -> ``step_NNNN/pairs.parquet``."""
from __future__ import annotations

from prefect import task

from mel.stages.common import StageResult
from mel.stages.pair import run_pair
from tasks.common import STAGE_CACHE, run_config


@task(name="pair", cache_policy=STAGE_CACHE, persist_result=True)
def pair(config_uri: str, config_hash: str, run_dir: str, step: int, rollouts_uri: str, verdicts_uri: str
         ) -> StageResult:
    return run_pair(run_config(config_uri, config_hash), run_dir, step, rollouts_uri, verdicts_uri)
