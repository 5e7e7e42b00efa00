"""A run directory on an S3 API server: moto's standalone server (``moto_server``, a separate process on 127.0.0.1)
is the object store, s3fs is fsspec's S3 backend, and the endpoint and credentials reach both through the standard
AWS environment variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...), as they would for a real bucket.

The artifact store on S3: tables and folders round-trip, a damaged object is not complete, a killed write's leftover
object is removed by the next write, and a folder written again at the same URI is fetched again (a local copy keyed
by the URI alone served the old weights). End to end (e2e): ``mel run`` as a user runs it, one step into
``s3://bucket/run``; the same command with ``run.steps=2`` resumes it (step 1 reused, step 2 trained from step 1's
checkpoint read back from the bucket); the same command again reuses every stage without starting Prefect. The
issue's exact commands (the tiny config, 2 steps, then the same command) are also marked slow.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow as pa
import pytest

from mel import artifacts
from conftest import REPO
from prefect_server import free_port, stop
from small_run import SMALL, mel_run_in_process, progress

MOTO_SERVER = str(Path(sys.executable).parent / "moto_server")
SCHEMA = pa.schema([("x", pa.int64())])


@pytest.fixture(scope="module")
def s3_env() -> dict[str, str]:
    """A standalone moto S3 server with an empty ``bucket``; the environment that points AWS clients at it."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([MOTO_SERVER, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.2)
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/bucket", method="PUT"), timeout=10).close()
        yield env
    finally:
        stop(proc)


@pytest.fixture
def s3(s3_env, monkeypatch, request):
    """This process's fsspec pointed at the server; a fresh prefix under the bucket for the test."""
    import s3fs

    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()  # an instance made before the environment was set keeps its endpoint
    yield f"s3://bucket/{request.node.name}"
    s3fs.S3FileSystem.clear_instance_cache()


def test_tables_round_trip_and_a_damaged_object_is_not_complete(s3) -> None:
    uri = artifacts.join(s3, "t.parquet")
    artifacts.write_rows(uri, [{"x": 1}, {"x": 2}], SCHEMA)
    assert artifacts.is_complete(uri) and artifacts.read_table(uri, SCHEMA).to_pylist() == [{"x": 1}, {"x": 2}]
    import fsspec

    with fsspec.open(uri, "wb") as f:
        f.write(b"not the data")
    assert not artifacts.is_complete(uri)
    with pytest.raises(FileNotFoundError):
        artifacts.read_table(uri)


def test_a_killed_writes_leftover_object_is_removed_by_the_next_write(s3) -> None:
    import fsspec

    uri = artifacts.join(s3, "t.parquet")
    with fsspec.open(uri + ".tmp-deadbeef", "wb") as f:  # what a kill between mv's copy and its delete leaves
        f.write(b"partial")
    artifacts.write_rows(uri, [{"x": 3}], SCHEMA)
    assert artifacts.list_names(s3) == ["t.parquet", "t.parquet.manifest.json"]


def test_a_folder_written_again_at_the_same_uri_is_fetched_again(s3, tmp_path) -> None:
    uri = artifacts.join(s3, "checkpoint")
    for weights in (b"old weights", b"new weights"):
        artifacts.write_folder(uri, lambda d, w=weights: (d / "model.safetensors").write_bytes(w))
        assert artifacts.is_complete(uri)
        local = Path(artifacts.fetch_folder(uri, cache_dir=tmp_path))
        assert (local / "model.safetensors").read_bytes() == weights


@pytest.mark.e2e
def test_a_run_on_s3_resumes_from_the_bucket(s3_env, prefect_harness, tmp_path) -> None:
    from prefect.settings import PREFECT_API_URL

    run_dir = "s3://bucket/run-small"
    args = ["run", "configs/tiny.yaml", "--run-dir", run_dir, *SMALL]
    env = {**os.environ, **s3_env, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_HOME": str(tmp_path)}
    first = subprocess.run([sys.executable, "-m", "cli", *args, "--set", "run.steps=1"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert progress(first.stdout) == [("1", "rollout", "done"), ("1", "verify", "done"), ("1", "update", "done")]

    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    out = mel_run_in_process([*args, "--set", "run.steps=2"], env=s3_env)  # a new process would do the same
    assert progress(out) == [("1", "rollout", "reused"), ("1", "verify", "reused"), ("1", "update", "reused"),
                             ("2", "rollout", "done"), ("2", "verify", "done"), ("2", "update", "done")], out
    again = mel_run_in_process([*args, "--set", "run.steps=2"], env=s3_env)
    assert "all 6 stages reused from cached artifacts; nothing recomputed" in again, again
    s3fs.S3FileSystem.clear_instance_cache()

    fs = s3fs.S3FileSystem(endpoint_url=s3_env["AWS_ENDPOINT_URL"], key="testing", secret="testing")
    objects = fs.find("bucket/run-small")
    assert not [o for o in objects if ".tmp-" in o], objects
    for step in ("step_0000", "step_0001"):
        assert f"bucket/run-small/{step}/checkpoint.manifest.json" in objects
    assert "bucket/run-small/step_0001/checkpoint/model.safetensors" in objects


@pytest.mark.e2e
@pytest.mark.slow
def test_the_issue_commands_on_s3(s3_env, tmp_path) -> None:
    """``mel run configs/tiny.yaml --run-dir s3://bucket/run --set run.steps=2``, then the same command again."""
    cmd = [sys.executable, "-m", "cli", "run", "configs/tiny.yaml", "--run-dir", "s3://bucket/run", "--set",
           "run.steps=2"]
    env = {**os.environ, **s3_env, "PREFECT_HOME": str(tmp_path)}
    env.pop("PREFECT_API_URL", None)  # as a user would: a temporary local Prefect server
    runs = [subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stdout + run.stderr
    assert [how for _, _, how in progress(runs[0].stdout)] == ["done"] * 6
    assert "all 6 stages reused from cached artifacts; nothing recomputed" in runs[1].stdout, runs[1].stdout
