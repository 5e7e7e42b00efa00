"""A run on a Ray cluster (``cluster.ray`` / ``mel run --ray``): joining the cluster, where a call runs, and the
verify stage's fanout over the cluster's CPUs.

Addresses: ``local`` starts an embedded Ray for the run (dashboard off, usage stats off); ``auto`` joins the
cluster ``ray start --head`` made on this machine; ``HOST:PORT`` or ``ray://HOST:PORT`` joins that one. The policy
worker (the Ray actor that runs the generating and training stages) is in `tasks.policy_worker`.
"""
from __future__ import annotations

import math
import os
import sys
from typing import Any, Callable, Iterable

import ray

from mel.config import Config

NAMESPACE = "mel"
# Settings every Ray worker of a run gets (its environment is the raylet's, not the driver's).
WORKER_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}
# Set in this process before Ray starts here (``local``): no usage stats, no token authentication and no metrics
# collection (nothing reads them: the dashboard is off) for a cluster that lives only as long as the run on this
# machine, and workers at this process's priority: Ray starts its workers at niceness 15 by default, so that on a
# machine with few cores the policy worker lost the CPU to every other process (its rollout and update ran 5-19%
# slower than in-process on the demo, measured with ``benchmarks/ray_overhead.py`` on 2 cores).
LOCAL_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "RAY_enable_metrics_collection": "0",
             "RAY_worker_niceness": "0"}


def init_kwargs(address: str) -> dict[str, Any]:
    """``ray.init``'s arguments for ``cluster.ray`` (see the module docstring)."""
    env = {**WORKER_ENV, **{k: v for k, v in os.environ.items() if k.startswith(("PREFECT_LOGGING_", "MEL_"))}}
    kwargs: dict[str, Any] = {"namespace": NAMESPACE, "runtime_env": {"env_vars": env},
                              "log_to_driver": False, "ignore_reinit_error": True}
    if address == "local":
        kwargs |= {"include_dashboard": False}
    else:
        kwargs["address"] = address
    return kwargs


def connect(address: str) -> bool:
    """Join (or, for ``local``, start) the run's Ray cluster; True when this call connected (the caller then owns the
    connection and shuts it down), False when this process was already connected."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address == "local":
        for key, value in LOCAL_ENV.items():
            os.environ.setdefault(key, value)
    ray.init(**init_kwargs(address))
    return True


def describe() -> str:
    """One line about the connected cluster: nodes, CPUs, GPUs."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    total = ray.cluster_resources()
    return (f"Ray cluster: {len(nodes)} node{'s' * (len(nodes) != 1)}, {total.get('CPU', 0):g} CPUs, "
            f"{total.get('GPU', 0):g} GPUs")


def placement() -> dict[str, Any]:
    """Where the calling process runs: its Ray node id, the resources Ray assigned it, and its pid."""
    ctx = ray.get_runtime_context()
    return {"node_id": ctx.get_node_id(), "resources": dict(ctx.get_assigned_resources()), "pid": os.getpid()}


def resources_text(resources: dict[str, float]) -> str:
    """Ray's assigned resources as a short text: ``1 CPU, 1 GPU``; ``no reserved resources`` when empty."""
    return ", ".join(f"{v:g} {k}" for k, v in sorted(resources.items())) or "no reserved resources"


def import_stages() -> dict[str, Any]:
    """Import every stage module (and with them the engines, torch, transformers) in this worker; its placement."""
    import mel.stages.table  # noqa: F401

    return placement()


def _warm() -> dict[str, Any]:
    import prefect.artifacts  # noqa: F401  (what a stage's Prefect task, tasks.stage, runs on in a Ray worker)
    import prefect.task_engine  # noqa: F401
    import tasks.common  # noqa: F401

    return import_stages()


def warm_task_workers(resources: Iterable[dict[str, int]]) -> None:
    """Have one Ray worker per resource request in ``resources`` (a stage's ``Resources.remote_options()``) import
    what a stage task runs on, without waiting: started with the run, so that the first step's stage task finds a
    worker that has imported it all (a fresh worker made the demo's first verify stage call take 6.6-9.6 s instead of
    0.3-0.5 s, measured with ``benchmarks/ray_overhead.py``; Ray hands an idle worker of the run's job to the next
    task that fits it)."""
    for options in {tuple(sorted(r.items())) for r in resources}:
        ray.remote(_warm).options(**dict(options), name="warm-stage-worker").remote()


def _run_chunk(fn: Callable[[list], list], items: list) -> tuple[list, dict[str, Any]]:
    return list(fn(items)), {**placement(), "items": len(items)}


class RayFanout:
    """The verify stage's fanout on a cluster: the items go out in chunks of ``cluster.verify_chunk``, one Ray task
    of ``cluster.verify_cpus`` CPUs each (each with its own sandbox workers), spread over the cluster's nodes, and come
    back in order. Items that fit in one chunk are verified where the stage runs (its sandbox workers stay warm from
    step to step; a new Ray task would start a worker process and its sandbox workers again: about 2 s a step,
    measured with ``benchmarks/ray_overhead.py`` on the demo config)."""

    def __init__(self, cfg: Config) -> None:
        self.chunk = cfg.cluster.verify_chunk
        self.cpus = cfg.cluster.verify_cpus
        self._placements: list[dict[str, Any]] = []

    def map(self, fn: Callable[[list], list], items: list) -> list:
        if not items:
            return []
        n = math.ceil(len(items) / self.chunk)
        if n == 1:  # nothing to spread: no hop to another worker
            results, where = _run_chunk(fn, items)
            self._placements = [where]
            return results
        remote = ray.remote(_run_chunk).options(num_cpus=self.cpus, name="verify-chunk", scheduling_strategy="SPREAD")
        fn_ref = ray.put(fn)
        refs = [remote.remote(fn_ref, items[i * self.chunk:(i + 1) * self.chunk]) for i in range(n)]
        out: list = []
        self._placements = []
        for results, where in ray.get(refs):
            out += results
            self._placements.append(where)
        if len(out) != len(items):
            raise RuntimeError(f"verification fanout returned {len(out)} results for {len(items)} items")
        return out

    def placements(self) -> list[dict[str, Any]]:
        return list(self._placements)


def say(text: str) -> None:
    print(f"mel: {text}", file=sys.stderr, flush=True)
