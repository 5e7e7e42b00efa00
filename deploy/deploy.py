"""Serve the flows as Prefect deployments: trigger runs from the Prefect UI, and a scheduled sweep.

    prefect server start &                                   # or point PREFECT_API_URL at your server
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m deploy.deploy

Deployments are discovered from ``flows/`` (every module's ``@flow`` objects); ``OVERRIDES`` below holds the few
per-deployment settings (default parameters, schedules). Runs started from the UI take the same parameters as the
CLI: ``config_path``, ``overrides`` (``["run.steps=4", ...]``), ``run_dir``; evaluation runs take every option of
``mel eval``, which runs the same ``mel-eval`` flow (``target``, ``benchmarks``, ``limit``, ``ks``, ``fields``,
``kind``, ...: the fields of ``mel.eval.plan.EvalRequest``).
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import flows

OVERRIDES: dict[str, dict[str, Any]] = {
    "mel-train": {"parameters": {"config_path": "configs/demo.yaml"}},
    "mel-step": {"skip": True},  # a subflow of mel-train, not started on its own
    "mel-sweep": {
        "parameters": {"config_path": "configs/tiny.yaml", "grid": {"run.seed": [0, 1, 2]}},
        "cron": "0 3 * * *",  # nightly
    },
    # Evaluate a run's checkpoints from the UI: fill in `target` (a run directory or a model).
    "mel-eval": {"parameters": {"benchmarks": ["humaneval"], "limit": 20, "steps": "all"}},
}


def discover_flows() -> dict[str, Any]:
    """Every Prefect flow defined in a module of ``flows/``, by flow name."""
    from prefect import Flow

    found: dict[str, Any] = {}
    for info in pkgutil.iter_modules(flows.__path__, "flows."):
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if isinstance(obj, Flow) and obj.__module__ == module.__name__:
                found[obj.name] = obj
    return found


def build_deployments() -> list[Any]:
    deployments = []
    for name, fl in sorted(discover_flows().items()):
        settings = OVERRIDES.get(name, {})
        if settings.get("skip"):
            continue
        deployments.append(fl.to_deployment(
            name=f"{name}-deployment", parameters=settings.get("parameters", {}), cron=settings.get("cron"),
        ))
    return deployments


def main() -> None:
    from prefect import serve

    serve(*build_deployments())


if __name__ == "__main__":
    main()
