"""A real ``prefect server start`` for tests: its own PREFECT_HOME and port on 127.0.0.1, the REST calls the tests
make to it, and process helpers. The ``prefect_server`` fixture (conftest) starts one per test module."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from prefect.client.base import PrefectHttpxSyncClient

PREFECT = str(Path(sys.executable).parent / "prefect")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """End a process started with ``start_new_session=True`` and its children: SIGTERM, then SIGKILL after 20 s."""
    if proc.poll() is not None:  # already ended (a test killed it) and reaped
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _client(api: str) -> PrefectHttpxSyncClient:
    """Prefect's own HTTP client: it retries what the server answers with 429/502/503 (a busy SQLite database is
    answered 503, "retry"), as every Prefect client and worker does, and raises on any other error status."""
    return PrefectHttpxSyncClient(base_url=api, timeout=30)


def post(api: str, path: str, body: dict) -> list | dict:
    with _client(api) as client:
        return client.post(api + path, json=body).json()


def get(api: str, path: str) -> dict:
    with _client(api) as client:
        return client.get(api + path).json()


def deployment_names(api: str) -> set[str]:
    """``flow/deployment`` of every deployment on the server."""
    found = post(api, "/deployments/filter", {"limit": 100})
    flows = {f["id"]: f["name"] for f in post(api, "/flows/filter", {"limit": 100})}
    return {f"{flows.get(d['flow_id'])}/{d['name']}" for d in found}


def scheduled_runs(api: str, deployment: str) -> list[dict]:
    """The SCHEDULED flow runs of the deployment named ``deployment``."""
    return post(api, "/flow_runs/filter", {"deployments": {"name": {"any_": [deployment]}},
                                           "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}, "limit": 10})


def run_server(home: Path, repo: Path, port: int | None = None) -> Iterator[dict]:
    """Start ``prefect server start`` (scheduler loop every 2 s) on ``port`` (default: a free one) and wait for its
    health check; yields ``env`` (for ``prefect`` CLI calls and workers: PREFECT_HOME, PREFECT_API_URL,
    PYTHONPATH=repo), ``api``, ``log``, ``home`` and ``proc`` (the server process, leader of its own process group).
    Started again with the same ``home`` and ``port``, it is the same server back (its database is in ``home``)."""
    port = port or free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
           "PREFECT_RUNNER_POLL_FREQUENCY": "1",  # served deployments pick a triggered run up within 1 s, not 10
           "PYTHONPATH": str(repo), "PREFECT_LOGGING_LEVEL": "INFO"}  # whatever an earlier test left in os.environ
    log = open(home / "server.log", "a")
    proc = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=repo)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(api + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None:
                raise RuntimeError("the Prefect server ended:\n" + (home / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        else:
            raise RuntimeError("the Prefect server did not answer in 180 s")
        yield {"env": env, "api": api, "log": home / "server.log", "home": home, "proc": proc}
    finally:
        stop(proc)
        log.close()
