"""Extract task (MEL): a meta-experience M = (s*, C, H) per pair -> ``step_NNNN/experiences.parquet``."""
from __future__ import annotations

from prefect import task

from mel.stages.common import StageResult
from mel.stages.extract import run_extract
from tasks.common import STAGE_CACHE, run_config


@task(name="extract", cache_policy=STAGE_CACHE, persist_result=True)
def extract(config_uri: str, config_hash: str, run_dir: str, step: int, checkpoint_uri: str, pairs_uri: str
            ) -> StageResult:
    return run_extract(run_config(config_uri, config_hash), run_dir, step, checkpoint_uri, pairs_uri)
