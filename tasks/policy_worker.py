"""The resident policy worker of a run on Ray: one Ray actor per run (named after its run directory) that runs the
generating and training stages (the stage table's ``Resources(gpu=True)`` entries: rollout, revise, extract,
replay, update) on its GPU.

It holds the policy for the whole run (`mel.stages.policy`): the trainer state (model, optimizer) and an engine on
it, carried from each update to the next step's stages, so the model is loaded once per run; with
``run.checkpoint_every = k`` the state of the steps between written checkpoints exists only here. The artifact
contract is the in-process one: every stage writes its Parquet artifacts and manifests under the run directory, and
a stage whose outputs are complete is not run again, so caching and resume are those of the local path. If the
actor dies, Ray recreates it (``cluster.policy_restarts`` times) and retries the call; the new actor loads the
stage's input checkpoint (the newest written one, replaying the updates after it from their cached artifacts) and
the stage's seeded outputs come out the same.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Mapping

import ray

from mel.config import Config
from mel.stages.step import Stage, StageResult, StepStats, run_stage
from tasks.cluster import NAMESPACE, import_stages, placement, say


class PolicyWorker:
    """The actor's class (made a Ray actor by `policy_worker`)."""

    def run(self, stage: Stage, cfg: Config, run_dir: str, step: int, inputs: Mapping[str, str | None],
            upstream: StepStats) -> StageResult:
        return run_stage(stage, cfg, run_dir, step, inputs, upstream, placement=placement())

    def warm(self) -> dict[str, Any]:
        """Import what the stages run on (every stage module, torch, transformers): the flow calls it when it has
        joined the cluster (`start_policy_worker`), so that the first step's rollout finds the worker up. Returns
        its placement."""
        return import_stages()

    def info(self) -> dict[str, Any]:
        """Its pid, node and resources, and how many models it has loaded (`ENGINE_CACHE.loads`)."""
        from mel.engines.base import ENGINE_CACHE

        return {**placement(), "model_loads": ENGINE_CACHE.loads}


def actor_name(run_dir: str) -> str:
    return "mel-policy-" + hashlib.sha256(run_dir.encode()).hexdigest()[:12]


_warned_no_gpu = False
# The handles this process holds, by run directory: Ray ends an actor (not detached) once no handle to it is left,
# so the flow's process keeps one for the run's whole life (the actor dies with the run, never outlives it).
_HANDLES: dict[str, Any] = {}


def policy_worker(cfg: Config, run_dir: str):
    """The run's policy worker: the live actor of that name, or a new one asking for ``cluster.policy_gpus`` GPUs
    (none, said once, when the cluster has no GPU at all)."""
    if run_dir in _HANDLES:
        return _HANDLES[run_dir]
    global _warned_no_gpu
    gpus = cfg.cluster.policy_gpus
    if gpus and not ray.cluster_resources().get("GPU"):
        if not _warned_no_gpu:
            say("the Ray cluster has no GPU; the policy worker runs on CPU")
            _warned_no_gpu = True
        gpus = 0
    options = {"name": actor_name(run_dir), "namespace": NAMESPACE, "get_if_exists": True, "num_gpus": gpus,
               "num_cpus": cfg.cluster.policy_cpus, "max_restarts": cfg.cluster.policy_restarts,
               "max_task_retries": cfg.cluster.policy_restarts,
               "runtime_env": {"env_vars": {"MEL_POLICY_WORKER": "1", "OMP_NUM_THREADS": str(
                   cfg.run.torch_threads or os.cpu_count() or 1)}}}
    _HANDLES[run_dir] = ray.remote(PolicyWorker).options(**options).remote()
    return _HANDLES[run_dir]


def start_policy_worker(cfg: Config, run_dir: str) -> dict[str, Any]:
    """Start the run's policy worker and wait until it has imported what its stages use (`PolicyWorker.warm`): part
    of the run's start on the cluster, not of its first step. Returns where it runs (`tasks.cluster.placement`)."""
    return ray.get(policy_worker(cfg, run_dir).warm.remote())


def release_policy_workers() -> None:
    """Drop this process's handles (the run is over: Ray then ends its policy worker)."""
    _HANDLES.clear()


def run_on_policy_worker(stage: Stage, cfg: Config, run_dir: str, step: int, inputs: Mapping[str, str | None],
                         upstream: StepStats) -> StageResult:
    """Run ``stage`` on the run's policy worker and wait for it."""
    worker = policy_worker(cfg, run_dir)
    return ray.get(worker.run.remote(stage, cfg, run_dir, step, inputs, upstream))
