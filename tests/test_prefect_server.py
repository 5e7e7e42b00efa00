"""Against a real ``prefect server start`` (its own PREFECT_HOME and port on 127.0.0.1): the README's deployment
command serves the deployments, the ``prefect`` CLI lists them, and the server's scheduler creates both scheduled
sweeps' runs (the server comes from ``tests/prefect_server.py``). These failed with SQLAlchemy 2.1 (the scheduler
crashed: "Can't evaluate bulk DML statement") and fastapi 0.153/0.154 (the CLI's null filters got 422): the pins in
pyproject.toml and constraints.txt come from here. Then runs triggered as the UI's Run form triggers them (train,
eval, report), what a run's page shows, and the UI's Retry of a failed run. Marked e2e; CI runs them."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from prefect_server import PREFECT, deployment_names, get, scheduled_runs, stop
from prefect_server import post as _post

pytestmark = pytest.mark.e2e
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
    return get(api, f"/flow_runs/{run_id}")


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
    by_type = {}  # the newest version of each (the metrics table has one per step)
    for a in sorted((a for a in arts if a["key"]), key=lambda a: _timestamp(a["created"])):
        by_type[a["key"].rsplit("-", 1)[-1]] = a
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


@pytest.mark.slow  # the CI budget (make test <= 20 min on 2 cores): make test-all runs it
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
