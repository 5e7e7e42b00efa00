"""Runs on a real multi-node Ray cluster on this machine (Ray's own ``ray.cluster_utils.Cluster``: a head node and a
second node declaring one logical GPU), and on a cluster made by ``ray start --head`` joined with ``--ray auto``, as a
user would: the policy stages run on the resident policy worker on the GPU node, verification fans out over both
nodes, the metrics equal the in-process path's, a rerun recomputes nothing, and a killed policy worker is recovered
(with run.checkpoint_every = 2, by replaying the update whose state it held).
MEL on the tiny config, so every policy stage (rollout, extract, replay, update) goes through the actor. Marked e2e;
CI runs them, but for the ``ray start`` cluster and the killed policy worker (also marked slow: the CI budget)."""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import REPO

pytestmark = pytest.mark.e2e
TINY = str(REPO / "configs" / "tiny.yaml")
MEL = str(REPO / "configs" / "methods" / "mel.yaml")
STEPS = 2
# seconds and throughputs differ between runs; everything else in a metrics row must be equal
TIMINGS = {"gen_tokens_per_s", "train_tokens_per_s"}
POLICY_STAGES = ("rollouts", "experiences", "meta_experiences", "update")


def _train(run_dir: Path, ray_address: str | None, steps: int = STEPS, *overrides: str) -> str:
    from flows.train import train
    from mel.progress import progress

    buf = io.StringIO()
    progress.stream = buf
    try:
        train(config_path=MEL, base=TINY, overrides=[f"run.steps={steps}", "cluster.verify_chunk=16", *overrides],
              run_dir=str(run_dir), ray=ray_address)
    finally:
        progress.stream = None
    return buf.getvalue()


def _learning(run_dir: Path, steps: int = STEPS) -> list[dict]:
    rows = pq.read_table(run_dir / "metrics.parquet").to_pylist()[:steps]
    return [{k: v for k, v in r.items() if k not in TIMINGS and not k.endswith("_s")} for r in rows]


def _placement(run_dir: Path, step: int, name: str) -> dict:
    return json.loads((run_dir / f"step_{step:04d}" / f"{name}.parquet.manifest.json").read_text())["placement"]


def _task_runs(stage: str) -> int:
    """Task runs of ``stage`` (named ``verify step 1``, ...) on the Prefect server this process reports to (the
    session's test server)."""
    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    names = [f"{stage} step {s + 1}" for s in range(STEPS)]
    with get_client(sync_client=True) as client:
        return len(client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=names))))


@pytest.fixture(scope="module")
def local_run(prefect_harness, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("local") / "run"
    _train(run_dir, None)
    return run_dir


@pytest.fixture
def ray_start_head(tmp_path):
    """A cluster as a user makes it: ``ray start --head`` (its own temp dir, no dashboard), stopped afterwards (``ray
    stop`` stops every Ray process of this machine: this test runs before the module's ``Cluster`` starts)."""
    ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent))
    assert ray_bin, "the ray command is not installed beside this Python"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    temp = Path("/tmp") / f"ray-head-{os.getpid()}"  # short: Ray's socket paths must fit 107 bytes
    port = "6391"
    subprocess.run([ray_bin, "start", "--head", "--port", port, "--num-cpus", "2", "--include-dashboard=false",
                    "--disable-usage-stats", f"--temp-dir={temp}"], env=env, check=True, capture_output=True,
                   timeout=180)
    try:
        yield {**env, "RAY_ADDRESS": f"127.0.0.1:{port}"}
    finally:
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow  # the CI budget (make test <= 20 min on 2 cores): make test-all runs it
def test_mel_run_joins_a_ray_start_cluster_with_ray_auto(local_run, ray_start_head, tmp_path):
    run_dir = tmp_path / "auto"
    env = {**ray_start_head, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)  # the run starts one local Prefect server that every Ray worker reports to
    proc = subprocess.run([sys.executable, "-m", "cli", "run", MEL, "--base", TINY, "--set", "run.steps=1",
                           "--run-dir", str(run_dir), "--ray", "auto"], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Ray cluster: 1 node, 2 CPUs, 0 GPUs" in proc.stderr, proc.stderr
    assert "policy worker runs on CPU" in proc.stderr
    # the policy worker started with the run (before its first step) is the one that ran every policy stage
    up = re.search(r"mel: policy worker up in [\d.]+ s \(pid (\d+), node \w+, 1 CPU\)", proc.stderr)
    assert up, proc.stderr
    assert {_placement(run_dir, 0, n)["pid"] for n in POLICY_STAGES} == {int(up.group(1))}
    assert _learning(run_dir, 1) == _learning(local_run, 1)
    assert _placement(run_dir, 0, "verdicts")["chunks"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two nodes: the head (2 CPUs) and a GPU node (2 CPUs, 1 logical GPU); this process is its driver."""
    import ray
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    gpu_node = c.add_node(num_cpus=2, num_gpus=1)
    c.wait_for_nodes()
    from tasks.cluster import init_kwargs

    kwargs = init_kwargs(c.address)
    ray.init(**kwargs)
    try:
        yield c, gpu_node.node_id
    finally:
        ray.shutdown()
        c.shutdown()


def test_metrics_equal_the_local_path_and_stages_run_where_their_resources_are(local_run, cluster, tmp_path):
    c, gpu_node = cluster
    import ray

    run_dir = tmp_path / "ray"
    before = _task_runs("verify")
    out = _train(run_dir, c.address)
    assert "reused" not in out.split("step  reward")[0], out
    assert _learning(run_dir) == _learning(local_run)
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 2 and gpu_node in nodes
    for step in range(STEPS):
        for name in POLICY_STAGES:  # the policy worker: on the GPU node, holding its GPU
            where = _placement(run_dir, step, name)
            assert where["node_id"] == gpu_node and where["resources"].get("GPU") == 1.0, (name, where)
        verify = _placement(run_dir, step, "verdicts")
        chunks = verify["chunks"]
        assert [ch["items"] for ch in chunks] == [16] * 4  # 8 prompts x 8 samples in chunks of 16, in order
        assert {ch["node_id"] for ch in chunks} == nodes, chunks  # spread over both nodes
        assert all(ch["resources"] == {"CPU": 1.0} for ch in chunks)
    pids = {_placement(run_dir, s, n)["pid"] for s in range(STEPS) for n in POLICY_STAGES}
    assert len(pids) == 1, "one resident policy worker for the whole run"
    # the verify tasks ran in Ray workers, and reported to this run's one Prefect server
    assert _task_runs("verify") - before == STEPS

    rerun = _train(run_dir, c.address)
    assert f"all {STEPS * 6} stages reused" in rerun, rerun


@pytest.mark.slow  # the CI budget: the resident state's replay is in CI on the local path (test_resident_state)
def test_a_killed_policy_worker_is_recreated_and_replays_the_state_it_held(local_run, cluster, tmp_path):
    """run.checkpoint_every = 2: step 1 keeps its trained state in the policy worker (no checkpoint written); the
    worker is killed in step 2, after its verification; Ray recreates it, and the new worker rebuilds step 1's state
    by replaying step 1's update from the cached artifacts (nothing generated again). The run ends as the local
    run (k = 1) did."""
    c, _ = cluster
    run_dir = tmp_path / "killed"
    marker = run_dir / "step_0001" / "verdicts.parquet.manifest.json"  # step 2's extract comes next
    killed: list[int] = []

    def kill_the_worker() -> None:
        deadline = time.time() + 600
        while not marker.exists() and time.time() < deadline:
            time.sleep(0.05)
        pid = _placement(run_dir, 1, "rollouts")["pid"]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill_the_worker, daemon=True)
    killer.start()
    out = _train(run_dir, c.address, STEPS, "run.checkpoint_every=2")
    killer.join(timeout=5)
    assert killed, "the run ended before the policy worker could be killed"
    assert not (run_dir / "step_0000" / "checkpoint").exists()  # step 1 wrote no checkpoint
    after = {_placement(run_dir, 1, n)["pid"] for n in POLICY_STAGES[1:]}
    assert killed[0] not in after, "a stage after the kill claims the killed process"
    assert "[step 1] replayed the update" in out and "identical to the recorded state" in out, out
    assert _learning(run_dir) == _learning(local_run)
