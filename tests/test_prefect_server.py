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


# -- runs triggered as the UI's Run form triggers them, and the UI's Retry ------------------------------------------

GSM8K = REPO.parent / "shared" / "datasets" / "gsm8k" / "test.jsonl"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _deployment_id(api: str, name: str) -> str:
    found = _post(api, "/deployments/filter", {"deployments": {"name": {"any_": [name]}}, "limit": 5})
    assert len(found) == 1, found
    return found[0]["id"]


def _trigger(api: str, deployment: str, parameters: dict) -> str:
    """What the UI's Run form sends: a flow run of the deployment with these parameters; returns its id."""
    run = _post(api, f"/deployments/{_deployment_id(api, deployment)}/create_flow_run", {"parameters": parameters})
    return run["id"]


def _flow_run(api: str, run_id: str) -> dict:
    with urllib.request.urlopen(f"{api}/flow_runs/{run_id}", timeout=10) as resp:
        return json.loads(resp.read())


def _wait(api: str, run_id: str, timeout: float = 600, after: float = 0.0) -> dict:
    """The flow run once it reaches a terminal state (one entered after ``after``, a timestamp, for a retried run)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = _flow_run(api, run_id)
        state = run.get("state") or {}
        if state.get("type") in TERMINAL and _timestamp(state["timestamp"]) > after:
            return run
        time.sleep(1)
    pytest.fail(f"flow run {run_id} did not end in {timeout} s: {_flow_run(api, run_id).get('state')}")


def _timestamp(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _task_runs_since(api: str, since: float) -> list[tuple[str, str]]:
    """(name, state name) of the task runs created after ``since`` (the stage tasks run inside ``mel-step``
    subflow runs, not under the triggered run's id)."""
    runs = _post(api, "/task_runs/filter", {"limit": 200, "sort": "EXPECTED_START_TIME_DESC"})
    return [(r["name"], r["state"]["name"]) for r in runs if _timestamp(r["created"]) > since]


@pytest.fixture(scope="module")
def gsm8k_file(tmp_path_factory) -> Path:
    """16 GSM8K problems as the run's task set (a file the retry test takes away and puts back)."""
    if not GSM8K.exists():
        pytest.skip(f"{GSM8K} is missing (../shared/datasets beside the repository)")
    path = tmp_path_factory.mktemp("data") / "gsm8k.jsonl"
    path.write_text("".join(GSM8K.read_text().splitlines(keepends=True)[:16]))
    return path


def _train_parameters(run_dir: Path, data: Path) -> dict:
    return {"config_path": "configs/tiny.yaml", "run_dir": str(run_dir),
            "overrides": ["run.steps=2", "data.taskset=gsm8k", f"data.path={data}", "data.prompts_per_step=4",
                          "rollout.group_size=4"]}


@pytest.fixture(scope="module")
def triggered(served, gsm8k_file, tmp_path_factory) -> dict:
    """``mel-train`` triggered with parameters through the API, run to completion by the served deployment."""
    run_dir = tmp_path_factory.mktemp("triggered") / "run"
    run = _wait(served["api"], _trigger(served["api"], "mel-train-deployment", _train_parameters(run_dir, gsm8k_file)))
    assert run["state"]["type"] == "COMPLETED", run["state"]
    return {"run_dir": run_dir, "run": run}


@pytest.fixture(scope="module")
def triggered_run(triggered) -> Path:
    return triggered["run_dir"]


def test_a_triggered_runs_page_shows_its_stages_metrics_and_summary(served, triggered) -> None:
    """What the run's page in the UI shows: its artifacts (progress, per-step metrics, summary with the checkpoint)
    and the CLI's stage lines in its logs."""
    run = triggered["run"]
    children = _post(served["api"], "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [run["id"]]}}})
    ids = [run["id"], *(c["id"] for c in children)]
    assert len(children) == 2, children  # the two mel-step subflow runs
    arts = _post(served["api"], "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": ids}}, "limit": 50})
    by_type = {(a["key"] or "").rsplit("-", 1)[-1]: a for a in arts if a["key"]}
    assert {"progress", "metrics", "summary"} <= set(by_type), [a["key"] for a in arts]
    assert by_type["progress"]["data"] == 100.0
    metrics = json.loads(by_type["metrics"]["data"]) if isinstance(by_type["metrics"]["data"], str) \
        else by_type["metrics"]["data"]
    assert [m["step"] for m in metrics] == [1, 2] and "reward_mean" in metrics[0]
    assert "step_0001/checkpoint" in by_type["summary"]["data"]
    wanted = ("mel run tiny: 2 steps", "[step 1/2] rollout", "[step 2/2] update   done", "wall time")
    deadline = time.time() + 30  # the last lines reach the server a moment after the run's final state
    while True:
        logs = _post(served["api"], "/logs/filter", {"logs": {"flow_run_id": {"any_": ids}}, "limit": 200})
        text = "\n".join(entry["message"] for entry in logs)
        if all(line in text for line in wanted) or time.time() > deadline:
            break
        time.sleep(1)
    for line in wanted:
        assert line in text, text[-3000:]


def test_triggered_train_eval_and_report_runs_complete(served, triggered_run, tmp_path) -> None:
    import pyarrow.parquet as pq

    metrics = pq.read_table(triggered_run / "metrics.parquet").to_pylist()
    assert [m["step"] for m in metrics] == [0, 1]
    assert (triggered_run / "step_0001" / "checkpoint" / "model.safetensors").exists()

    run = _wait(served["api"], _trigger(served["api"], "mel-eval-deployment", {
        "target": str(triggered_run), "benchmarks": ["humaneval"], "limit": 2, "samples": 1, "temperature": 0.0,
        "max_new_tokens": 16, "steps": "final"}))
    assert run["state"]["type"] == "COMPLETED", run["state"]
    summary = pq.read_table(triggered_run / "eval" / "summary.parquet").to_pylist()
    assert {r["benchmark"] for r in summary} == {"humaneval"} and all(r["num_problems"] == 2 for r in summary)

    out = tmp_path / "report"
    run = _wait(served["api"], _trigger(served["api"], "mel-report-deployment", {
        "run_dirs": [str(triggered_run)], "out": str(out), "n_resamples": 200}))
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert (out / "report.md").exists() and (out / "report.html").exists()


def test_retry_of_a_failed_run_reuses_its_completed_stages(served, triggered_run, gsm8k_file, tmp_path) -> None:
    """A run whose data file vanishes after its first step fails in step 2's rollout; with the file back, ``prefect
    flow-run retry`` (the UI's Retry) runs it again: step 1 comes back cached, untouched, step 2 runs, and the
    metrics equal the uninterrupted run's (``triggered_run``, the same parameters)."""
    import pyarrow.parquet as pq

    data = tmp_path / "gsm8k.jsonl"
    data.write_bytes(gsm8k_file.read_bytes())
    run_dir = tmp_path / "run"
    run_id = _trigger(served["api"], "mel-train-deployment", _train_parameters(run_dir, data))
    first_update = run_dir / "step_0000" / "update.parquet.manifest.json"
    deadline = time.time() + 600
    while not first_update.exists() and time.time() < deadline:
        assert _flow_run(served["api"], run_id)["state"]["type"] not in TERMINAL, "the run ended before step 2"
        time.sleep(0.05)
    hidden = data.rename(tmp_path / "gsm8k.jsonl.away")
    failed = _wait(served["api"], run_id)
    assert failed["state"]["type"] == "FAILED", failed["state"]
    assert not (run_dir / "step_0001" / "rollouts.parquet.manifest.json").exists()
    step1 = {p.name: p.read_text() for p in (run_dir / "step_0000").glob("*.parquet.manifest.json")}

    hidden.rename(data)
    retried_at = time.time()
    out = subprocess.run([PREFECT, "flow-run", "retry", run_id], env=served["env"], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    done = _wait(served["api"], run_id, after=retried_at)
    assert done["state"]["type"] == "COMPLETED", done["state"]
    assert done["run_count"] >= 2
    assert {p.name: p.read_text() for p in (run_dir / "step_0000").glob("*.parquet.manifest.json")} == step1
    since = _task_runs_since(served["api"], retried_at)
    stages = {name: state for name, state in since if " step " in name}  # the stage tasks, named by stage and step
    assert stages == {"rollout step 1": "Cached", "verify step 1": "Cached", "update step 1": "Cached",
                      "rollout step 2": "Completed", "verify step 2": "Completed", "update step 2": "Completed"}, since
    learning = [c for c in pq.read_schema(run_dir / "metrics.parquet").names if not c.endswith(("_s", "_per_s"))]
    assert pq.read_table(run_dir / "metrics.parquet").select(learning).to_pylist() == \
        pq.read_table(triggered_run / "metrics.parquet").select(learning).to_pylist()
