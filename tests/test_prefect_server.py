"""Against a real ``prefect server start`` (its own PREFECT_HOME and port on 127.0.0.1): the README's deployment
command serves the deployments, the ``prefect`` CLI lists them, and the server's scheduler creates the scheduled
sweep's runs. These failed with SQLAlchemy 2.1 (the scheduler crashed: "Can't evaluate bulk DML statement") and
fastapi 0.153/0.154 (the CLI's null filters got 422): the pins in pyproject.toml and constraints.txt come from here.
Marked slow; CI runs them."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow
PREFECT = str(Path(sys.executable).parent / "prefect")
DEPLOYMENTS = {"mel-train/mel-train-deployment", "mel-sweep/mel-sweep-deployment", "mel-eval/mel-eval-deployment",
               "mel-report/mel-report-deployment"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _post(api: str, path: str, body: dict) -> list:
    req = urllib.request.Request(api + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
           "PYTHONPATH": str(REPO)}
    log = open(home / "server.log", "w")
    proc = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(api + "/health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        assert proc.poll() is None, (home / "server.log").read_text()[-3000:]
        time.sleep(0.5)
    else:
        _stop(proc)
        pytest.fail("the Prefect server did not answer in 180 s")
    yield {"env": env, "api": api, "log": home / "server.log"}
    _stop(proc)
    log.close()


@pytest.fixture(scope="module")
def served(server):
    """``python -m deploy.deploy``, as the README says, against the server."""
    proc = subprocess.Popen([sys.executable, "-m", "deploy.deploy"], env=server["env"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    names: set[str] = set()
    while time.time() < deadline and not DEPLOYMENTS <= names:
        assert proc.poll() is None, "python -m deploy.deploy ended"
        try:
            found = _post(server["api"], "/deployments/filter", {"limit": 50})
            flows = {f["id"]: f["name"] for f in _post(server["api"], "/flows/filter", {"limit": 50})}
            names = {f"{flows.get(d['flow_id'])}/{d['name']}" for d in found}
        except OSError:
            pass
        time.sleep(1)
    assert DEPLOYMENTS <= names, names
    yield server
    _stop(proc)


def test_prefect_cli_lists_the_deployments(served) -> None:
    out = subprocess.run([PREFECT, "deployment", "ls"], env=served["env"], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    listed = " ".join(out.stdout.split())  # rich may wrap long names
    for name in DEPLOYMENTS:
        assert name.split("/")[0] in listed, out.stdout


def test_the_scheduler_creates_the_scheduled_sweeps_runs(served) -> None:
    deadline = time.time() + 120
    runs: list = []
    while time.time() < deadline and not runs:
        runs = _post(served["api"], "/flow_runs/filter", {
            "deployments": {"name": {"any_": ["mel-sweep-deployment"]}},
            "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}, "limit": 10})
        time.sleep(2)
    log = served["log"].read_text()
    assert "InvalidRequestError" not in log, log[-3000:]
    assert len(runs) >= 1, "no scheduled run of mel-sweep was created"
    assert all(r["state"]["type"] == "SCHEDULED" for r in runs)
