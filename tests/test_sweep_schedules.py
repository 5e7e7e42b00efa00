"""The production path of the scheduled sweeps, against a real ``prefect server start`` (`prefect_server`): a process
work pool, ``prefect --no-prompt deploy --all`` from ``prefect.yaml``, ``prefect worker start``, and one run scheduled
a few seconds ahead (a flow run in state Scheduled, what the server's scheduler creates) that the worker picks up and
runs to completion: a one-cell sweep (tiny config, 1 step, GRPO, 1 seed) whose report must exist. Each of
prefect.yaml's schedules must have scheduled runs, and ``prefect deployment ls`` must list them. Marked e2e; the two
server tests are also marked slow (the CI budget: `make test-all`); CI reads prefect.yaml and checks, in
`tests/test_prefect_server.py`, that the same schedules served by `deploy/deploy.py` get their scheduled runs."""
from __future__ import annotations

import datetime
import subprocess
import time

import pytest
import yaml

from conftest import REPO
from prefect_server import PREFECT, get, post, scheduled_runs, stop

pytestmark = pytest.mark.e2e
POOL = "mel-process"


def _prefect(env: dict, *args: str) -> str:
    out = subprocess.run([PREFECT, *args], env=env, capture_output=True, text=True, timeout=180, cwd=REPO)
    assert out.returncode == 0, f"prefect {' '.join(args)}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def deployed(prefect_server):
    """prefect.yaml deployed to a process work pool, as its header says."""
    env = prefect_server["env"]
    _prefect(env, "work-pool", "create", POOL, "--type", "process")
    _prefect(env, "--no-prompt", "deploy", "--all")
    return prefect_server


def _project() -> list[dict]:
    with open(REPO / "prefect.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)["deployments"]


def test_prefect_yaml_schedules_each_sweep_file():
    specs = _project()
    assert len(specs) >= 2 and all(s["work_pool"]["name"] == POOL for s in specs)
    files = {s["parameters"]["sweep_file"] for s in specs}
    assert len(files) == len(specs) and all((REPO / f).exists() for f in files)
    assert all(s["schedules"] and s["entrypoint"] == "flows/sweep.py:sweep" for s in specs)


@pytest.mark.slow  # the CI budget; CI checks both schedules get runs in test_prefect_server.py
def test_each_schedule_has_scheduled_runs(deployed):
    listed = " ".join(_prefect(deployed["env"], "deployment", "ls").split())
    names = [s["name"] for s in _project()]
    runs: dict[str, list] = {}
    deadline = time.time() + 120
    while time.time() < deadline and not all(runs.get(n) for n in names):
        runs = {n: scheduled_runs(deployed["api"], n) for n in names}
        time.sleep(2)
    for name in names:
        assert name in listed
        assert runs[name], f"no scheduled run of mel-sweep/{name}"


@pytest.mark.slow  # the CI budget (make test <= 20 min on 2 cores): make test-all runs it
def test_a_worker_runs_a_scheduled_sweep_to_its_report(deployed, tmp_path):
    sweep_file = tmp_path / "ci.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "name": "ci-tiny", "base": str(REPO / "configs" / "tiny.yaml"), "methods": ["grpo"], "seeds": [0],
        "set": ["run.steps=1"], "runs_root": str(tmp_path / "runs"), "report": {"out": str(tmp_path / "report")}}))
    api = deployed["api"]
    deployment = next(d for d in post(api, "/deployments/filter", {"limit": 100}) if d["name"] == "nightly-tiny")
    when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=5)
    run = post(api, f"/deployments/{deployment['id']}/create_flow_run", {
        "parameters": {"sweep_file": str(sweep_file)},
        "state": {"type": "SCHEDULED", "name": "Scheduled", "state_details": {"scheduled_time": when.isoformat()}}})
    assert run["state"]["type"] == "SCHEDULED"
    log = open(tmp_path / "worker.log", "w")
    worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", POOL, "--limit", "1"], cwd=REPO,
                              env={**deployed["env"], "PREFECT_WORKER_QUERY_SECONDS": "2"}, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 480
        state = run["state"]["type"]
        while time.time() < deadline and state not in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(2)
            state = get(api, f"/flow_runs/{run['id']}")["state"]["type"]
    finally:
        stop(worker)
        log.close()
    assert state == "COMPLETED", f"{state}:\n{(tmp_path / 'worker.log').read_text()[-4000:]}"
    report = tmp_path / "report"
    assert (report / "report.md").exists() and (report / "sweep.json").exists()
    assert "grpo" in (report / "sweep.md").read_text()
    artifacts = post(api, "/artifacts/filter", {"artifacts": {"key": {"any_": ["sweep-ci-tiny"]}}, "limit": 5})
    assert artifacts and artifacts[0]["flow_run_id"] == run["id"]
