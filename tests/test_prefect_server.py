"""Against a real ``prefect server start`` (its own PREFECT_HOME and port on 127.0.0.1): the README's deployment
command serves the deployments, the ``prefect`` CLI lists them, and the server's scheduler creates both scheduled
sweeps' runs (the server comes from ``tests/prefect_server.py``). These failed with SQLAlchemy 2.1 (the scheduler crashed: "Can't evaluate bulk DML statement") and
fastapi 0.153/0.154 (the CLI's null filters got 422): the pins in pyproject.toml and constraints.txt come from here.
Marked slow; CI runs them."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from conftest import REPO
from prefect_server import PREFECT, deployment_names, scheduled_runs, stop

pytestmark = pytest.mark.slow
DEPLOYMENTS = {"mel-train/mel-train-deployment", "mel-sweep/nightly-tiny", "mel-sweep/weekly-seeds",
               "mel-eval/mel-eval-deployment", "mel-report/mel-report-deployment"}
SCHEDULED = ("nightly-tiny", "weekly-seeds")


@pytest.fixture(scope="module")
def served(prefect_server):
    """``python -m deploy.deploy``, as the README says, against the server."""
    server = prefect_server
    proc = subprocess.Popen([sys.executable, "-m", "deploy.deploy"], env=server["env"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    names: set[str] = set()
    while time.time() < deadline and not DEPLOYMENTS <= names:
        assert proc.poll() is None, "python -m deploy.deploy ended"
        try:
            names = deployment_names(server["api"])
        except OSError:
            pass
        time.sleep(1)
    assert DEPLOYMENTS <= names, names
    yield server
    stop(proc)


def test_prefect_cli_lists_the_deployments(served) -> None:
    out = subprocess.run([PREFECT, "deployment", "ls"], env=served["env"], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    listed = " ".join(out.stdout.split())  # rich may wrap long names
    for name in DEPLOYMENTS:
        assert name.split("/")[0] in listed, out.stdout


def test_the_scheduler_creates_each_scheduled_sweeps_runs(served) -> None:
    """Both served schedules (prefect.yaml's, also served by deploy/deploy.py) get scheduled runs."""
    deadline = time.time() + 120
    runs: dict[str, list] = {}
    while time.time() < deadline and not all(runs.get(name) for name in SCHEDULED):
        runs = {name: scheduled_runs(served["api"], name) for name in SCHEDULED}
        time.sleep(2)
    log = served["log"].read_text()
    assert "InvalidRequestError" not in log, log[-3000:]
    for name in SCHEDULED:
        assert runs[name], f"no scheduled run of mel-sweep/{name} was created"
        assert all(r["state"]["type"] == "SCHEDULED" for r in runs[name])
