"""The Prefect task of a stage, made from its table entry (`mel.stages.table`): one cached task per stage.

Each task takes the stage's name, the run's config URI and hash, the run directory, the step, its input artifact
URIs (by role) and the stats of the step's earlier stages, and returns the stage's ``StageResult`` (its output URIs
and stats). Whether it is done is `Stage.complete`'s to say (its outputs' manifests, and what its inputs held when
they were made): ``run_stage`` reuses such outputs, and the task's cache (`tasks.common.ManifestCache`, results
persisted next to the run) is keyed by the same check, so Prefect shows a done stage as ``Cached`` and never a stage
whose files are gone or whose inputs changed. A stage with a ``report`` publishes it as a Prefect markdown artifact.

On a Ray cluster (``cluster.ray``), a stage that needs the policy (``Resources(gpu=True)``) runs on the run's
resident policy worker (`tasks.policy_worker`), and the others run as Ray tasks with their table resources (the flow
submits them through prefect-ray's ``RayTaskRunner``), fanning out their independent work (`tasks.cluster`).
"""
from __future__ import annotations

from functools import cache
from typing import Mapping

from prefect import Task, task
from prefect.artifacts import create_markdown_artifact

from mel.stages.step import Stage, StageResult, StepStats, run_stage
from tasks.common import ManifestCache, run_config, stamp


@cache
def stage_task(stage: Stage) -> Task:
    """The task that runs ``stage`` (one per stage object)."""

    def run(stage_name: str, config_uri: str, config_hash: str, run_dir: str, step: int,
            inputs: Mapping[str, str | None], upstream: StepStats) -> StageResult:
        # stage_name is only part of the cache key: every stage's task has this same source
        cfg = run_config(config_uri, config_hash)
        if cfg.cluster.ray is None:
            result = run_stage(stage, cfg, run_dir, step, inputs, upstream)
        elif stage.resources.gpu:  # the run's resident policy worker holds the model
            from tasks.policy_worker import run_on_policy_worker

            result = run_on_policy_worker(stage, cfg, run_dir, step, inputs, upstream)
        else:  # a Ray task of its own (see flows.train), its independent work fanned out over the cluster
            from tasks.cluster import RayFanout, placement

            result = run_stage(stage, cfg, run_dir, step, inputs, upstream, fanout=RayFanout(cfg),
                               placement=placement())
        stamp(result.uri, result.reused)
        if stage.report is not None:
            report = stage.report(result)
            create_markdown_artifact(report.markdown, key=report.key, description=report.description)
        return result

    def done(params: dict) -> tuple[str, bool]:
        record = next(iter(stage.output_uris(params["run_dir"], params["step"]).values()))
        return record, stage.complete(params["run_dir"], params["step"], params["inputs"])

    # task(**options)(run) is Prefect's task(run, **options), in the form its overloads type
    return task(name=stage.name, task_run_name=_run_name, cache_policy=ManifestCache(done=done),
                persist_result=True)(run)


def _run_name() -> str:
    """A stage's task run, as the Prefect UI lists it: ``rollout step 1`` (steps from 1, as the CLI prints them)."""
    from prefect.runtime import task_run

    params = task_run.parameters
    return f"{params['stage_name']} step {params['step'] + 1}"
