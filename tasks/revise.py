"""Revise task (R-MEL / MEL+Extra): pairs recovered from all-negative groups -> ``step_NNNN/revised_pairs.parquet``
and every attempt -> ``step_NNNN/revisions.parquet``."""
from __future__ import annotations

from prefect import task

from mel.stages.common import StageResult
from mel.stages.revise import run_revise
from tasks.common import STAGE_CACHE, run_config


@task(name="revise", cache_policy=STAGE_CACHE, persist_result=True)
def revise(config_uri: str, config_hash: str, run_dir: str, step: int, checkpoint_uri: str, rollouts_uri: str,
           verdicts_uri: str, pairs_uri: str) -> StageResult:
    return run_revise(run_config(config_uri, config_hash), run_dir, step, checkpoint_uri, rollouts_uri, verdicts_uri,
                      pairs_uri)
