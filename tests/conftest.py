"""Shared fixtures: one Prefect test server for the session, the tiny random model, quiet libraries."""
from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def child_pids(pid: int) -> set[int]:
    """The direct children of process ``pid`` (from /proc), for tests that check nothing was left running."""
    kids: set[int] = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.update(int(x) for x in f.read().split())
        except OSError:
            pass
    return kids


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` are skipped, saying why, where torch sees no CUDA device."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=f"needs a CUDA device: torch {torch.__version__} sees none "
                                   "(torch.cuda.is_available() is False)")
    for item in gpu:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """A real ``prefect server start`` for the test module (`prefect_server.run_server`): its ``env``, ``api``,
    ``log``."""
    from prefect_server import run_server

    yield from run_server(tmp_path_factory.mktemp("prefect-home"), REPO)


@pytest.fixture(scope="session")
def tiny_model_path() -> str:
    from mel.config import ModelConfig
    from mel.models import resolve_model

    return resolve_model(ModelConfig(source="tiny-random"))


@pytest.fixture(scope="session")
def tiny_model(tiny_model_path):
    from mel.models import load_model_and_tokenizer

    return load_model_and_tokenizer(tiny_model_path)


def published_artifacts(artifact_filter: dict) -> list[str]:
    """The data of the newest Prefect artifacts (at most 5) matching ``artifact_filter`` (the ``artifacts`` part of
    ``POST /artifacts/filter``), on this process's Prefect API, through the raw filter endpoint: this Prefect client
    sends null filters that the pinned server refuses (HTTP 422)."""
    import asyncio

    from prefect.client.orchestration import get_client

    async def read() -> list[str]:
        async with get_client() as client:
            response = await client._client.post("/artifacts/filter", json={
                "artifacts": artifact_filter, "sort": "CREATED_DESC", "limit": 5, "offset": 0})
            response.raise_for_status()
            return [a["data"] for a in response.json()]

    return asyncio.run(read())
