"""A sweep: one training run per point of a grid of config overrides, each a ``mel-train`` subflow.

    python -m flows.sweep configs/tiny.yaml 'optimizer.lr=[1e-5,1e-4]' 'algorithm.kl_coef=[0,0.05]'

Served as a scheduled deployment by ``deploy/deploy.py``. Every run gets its own run directory
(``runs/<name>-<hash>``), so a sweep scheduled again resumes each run where it stopped.
"""
from __future__ import annotations

import itertools
import sys

import yaml
from prefect import flow

from flows.train import train


def grid_overrides(grid: dict[str, list]) -> list[list[str]]:
    """{"optimizer.lr": [1e-5, 1e-4], "run.seed": [0, 1]} -> the 4 override lists of the cartesian product."""
    keys = sorted(grid)
    return [[f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
             for k, v in zip(keys, values)]
            for values in itertools.product(*(grid[k] for k in keys))]


@flow(name="mel-sweep", log_prints=False)
def sweep(config_path: str, grid: dict[str, list], base_overrides: list[str] | None = None,
          ray: str | None = None) -> list[str]:
    """Train every grid point; returns their run directories. ``ray``: a Ray address (or ``local``) every run
    goes to (`tasks.cluster`), joined once for the whole sweep."""
    owned = False
    if ray:
        from tasks.cluster import connect

        owned = connect(ray)
    try:
        return [train(config_path, (base_overrides or []) + point, ray=ray) for point in grid_overrides(grid)]
    finally:
        if owned:
            import ray as ray_module

            ray_module.shutdown()


def _parse_cli(args: list[str]) -> tuple[str, dict[str, list]]:
    grid = {}
    for text in args[1:]:
        key, values = text.split("=", 1)
        grid[key] = yaml.safe_load(values)
    return args[0], grid


if __name__ == "__main__":
    path, grid = _parse_cli(sys.argv[1:])
    sweep(path, grid)
