"""Shared task settings: the cache policy and the one place a task loads the run's config."""
from __future__ import annotations

from functools import lru_cache

from prefect.cache_policies import INPUTS, TASK_SOURCE

from mel.config import Config, load_config

STAGE_CACHE = INPUTS + TASK_SOURCE


@lru_cache(maxsize=8)
def run_config(config_uri: str, config_hash: str) -> Config:
    """The resolved config saved in the run directory (its hash is part of every task's cache key)."""
    cfg = load_config(config_uri)
    from mel.config import config_hash as compute_hash

    if compute_hash(cfg) != config_hash:
        raise ValueError(f"{config_uri} does not hash to {config_hash}: the run directory holds another config")
    return cfg
