"""Serve the flows as Prefect deployments (the local path): trigger runs from the Prefect UI, and the scheduled sweeps.

    prefect server start &                                   # or point PREFECT_API_URL at your server
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m deploy.deploy

Deployments are discovered from ``flows/`` (every module's ``@flow`` objects); ``OVERRIDES`` below holds the few
per-deployment settings (default parameters). The scheduled deployments are those of ``prefect.yaml`` (the
production path: ``prefect deploy`` to a process work pool, ``prefect worker start``), served here with the same
names, parameters and schedules: ``mel-sweep/nightly-tiny`` and ``mel-sweep/weekly-seeds``, each a sweep file.
Runs started from the UI take typed, described parameters (``flows/params.py``): ``config_path`` (a shipped
config), ``method``, ``steps``, ``seed``, ``overrides`` (``["run.steps=4", ...]``), ``run_dir``, ``ray``; evaluation
runs take every option of ``mel eval``, which runs the same ``mel-eval`` flow (the fields of
``mel.eval.plan.EvalRequest``); a sweep takes its ``sweep_file``.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

import yaml

import flows

PREFECT_YAML = Path(__file__).resolve().parents[1] / "prefect.yaml"

OVERRIDES: dict[str, dict[str, Any]] = {
    "mel-train": {"parameters": {"config_path": "configs/demo.yaml"}},
    "mel-step": {"skip": True},  # a subflow of mel-train, not started on its own
    # mel-sweep: its deployments (one per sweep file, each scheduled) are prefect.yaml's.
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


def project_deployments(path: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    """The deployments ``prefect.yaml`` declares (name, entrypoint, parameters, schedules, work pool)."""
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f).get("deployments") or []


def _schedules(specs: list[dict[str, Any]]) -> list[Any]:
    """prefect.yaml's ``schedules`` entries (cron, optional timezone and active) as schedule objects."""
    from prefect.client.schemas.schedules import CronSchedule

    unsupported = [s for s in specs if "cron" not in s]
    if unsupported:
        raise ValueError(f"prefect.yaml: only cron schedules are served here, got {unsupported}")
    return [{"schedule": CronSchedule(cron=s["cron"], timezone=s.get("timezone")), "active": s.get("active", True)}
            for s in specs]


def build_deployments() -> list[Any]:
    found = discover_flows()
    by_entrypoint = {f"{fl.fn.__module__.replace('.', '/')}.py:{fl.fn.__name__}": fl for fl in found.values()}
    deployments, from_project = [], set()
    for spec in project_deployments():
        fl = by_entrypoint[spec["entrypoint"]]
        from_project.add(fl.name)
        deployments.append(fl.to_deployment(name=spec["name"], parameters=spec.get("parameters", {}),
                                             schedules=_schedules(spec.get("schedules") or []),
                                             description=spec.get("description")))
    for name, fl in sorted(found.items()):
        settings = OVERRIDES.get(name, {})
        if settings.get("skip") or name in from_project:
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
