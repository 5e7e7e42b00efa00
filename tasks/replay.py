"""Replay task (MEL): replay validation and the draw of the step's K meta-experiences
-> ``step_NNNN/meta_experiences.parquet``, published as a Prefect markdown artifact (accepted and rejected M)."""
from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact

from mel import artifacts, schemas
from mel.experience.show import markdown_report
from mel.stages.common import StageResult
from mel.stages.replay import run_replay
from tasks.common import STAGE_CACHE, run_config


@task(name="replay", cache_policy=STAGE_CACHE, persist_result=True)
def replay(config_uri: str, config_hash: str, run_dir: str, step: int, checkpoint_uri: str, experiences_uri: str
           ) -> StageResult:
    result = run_replay(run_config(config_uri, config_hash), run_dir, step, checkpoint_uri, experiences_uri)
    rows = artifacts.read_table(result.uri, schemas.META_EXPERIENCES).to_pylist()
    create_markdown_artifact(markdown_report(rows, step, artifacts.read_manifest(result.uri)),
                             key=f"meta-experiences-step-{step:04d}",
                             description=f"Meta-experiences of step {step}: accepted and rejected, with the replay "
                                         "verdict")
    return result
