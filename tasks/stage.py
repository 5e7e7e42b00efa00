"""The Prefect task of a stage, made from its table entry (`mel.stages.table`): one cached task per stage.

Each task takes the stage's name, the run's config URI and hash, the run directory, the step, its input artifact
URIs (by role) and the stats of the step's earlier stages, and returns the stage's ``StageResult`` (its output URIs
and stats). It is cached with ``INPUTS + TASK_SOURCE`` (results persisted next to the run), and ``run_stage`` itself
returns at once when the stage's outputs are already complete, so a rerun recomputes nothing that finished. A stage
with a ``report`` publishes it as a Prefect markdown artifact.
"""
from __future__ import annotations

from functools import cache
from typing import Mapping

from prefect import Task, task
from prefect.artifacts import create_markdown_artifact

from mel.stages.step import Stage, StageResult, StepStats, run_stage
from tasks.common import STAGE_CACHE, run_config


@cache
def stage_task(stage: Stage) -> Task:
    """The task that runs ``stage`` (one per stage object)."""

    def run(stage_name: str, config_uri: str, config_hash: str, run_dir: str, step: int,
            inputs: Mapping[str, str | None], upstream: StepStats) -> StageResult:
        # stage_name is only part of the cache key: every stage's task has this same source
        result = run_stage(stage, run_config(config_uri, config_hash), run_dir, step, inputs, upstream)
        if stage.report is not None:
            report = stage.report(result)
            create_markdown_artifact(report.markdown, key=report.key, description=report.description)
        return result

    return task(run, name=stage.name, cache_policy=STAGE_CACHE, persist_result=True)
