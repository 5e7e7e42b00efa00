"""Prepare the base model: resolve ``model.source`` to a local Hugging Face folder (converting the shipped GGUF or
building the tiny random model once)."""
from __future__ import annotations

from prefect import task

from mel.models import resolve_model
from tasks.common import run_config


@task(name="prepare-model", retries=0)
def prepare_model(config_uri: str, config_hash: str) -> str:
    return resolve_model(run_config(config_uri, config_hash).model)
