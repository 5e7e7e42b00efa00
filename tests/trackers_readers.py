"""What the trackers wrote, read back through each tracker's own means (for ``tests/test_trackers.py``):
TensorBoard's ``EventAccumulator``, the records of a W&B offline run (its ``.wandb`` file, decoded with wandb's own
protobuf ``Record``), and a real ``mlflow server`` (started here) through its REST API."""
from __future__ import annotations

import glob
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

# ---------------------------------------------------------------------------------------------------------- TensorBoard


def tensorboard_scalars(folder: str) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value), ...] as TensorBoard shows them (purged events left out)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(folder, size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def tensorboard_tags(folder: str) -> dict[str, list[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(folder, size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    return acc.Tags()


def tensorboard_hparams(folder: str) -> dict:
    """The HParams tab's row of the run: hyperparameter -> value."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(folder)
    acc.Reload()
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}


# ---------------------------------------------------------------------------------------------------------------- W&B

_HEADER = 7  # ":W&B", magic 0xBEE1, version
_BLOCK = 32 * 1024  # LevelDB log format: records in 32 KiB blocks, each chunk with a 7-byte header
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def wandb_records(path: str) -> list:
    """The protobuf ``Record``s of a ``.wandb`` file (W&B's transaction log, LevelDB's log format)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B transaction log"
    payloads, partial, pos = [], b"", _HEADER
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # the block's tail is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == _FULL:
            payloads.append(chunk)
        elif kind in (_FIRST, _MIDDLE):
            partial += chunk
        elif kind == _LAST:
            payloads.append(partial + chunk)
            partial = b""
    records = []
    for payload in payloads:
        record = pb.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


def wandb_offline_runs(run_dir: str) -> list[str]:
    """The ``.wandb`` files of the offline runs under ``run_dir/wandb`` (one per start or resume), oldest first."""
    return sorted(glob.glob(os.path.join(run_dir, "wandb", "offline-run-*", "run-*.wandb")))


def wandb_history(path: str) -> list[tuple[int, dict]]:
    """(step, {key: value}) of every history row of the file (keys starting with ``_`` left out)."""
    rows = []
    for record in wandb_records(path):
        if record.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            rows.append((record.history.step.num, {k: v for k, v in items.items() if not k.startswith("_")}))
    return rows


def wandb_run(path: str, wait_s: float = 15.0):
    """The file's run record (id, project, group, display name). Read again for up to ``wait_s`` while it is not
    there: once, in a full test run on 2 busy cores, a resumed run's file had no run record yet when read right after
    ``wandb.finish()`` returned (W&B's service, a process of its own, writes the file)."""
    deadline = time.monotonic() + wait_s
    while True:
        found = [r.run for r in wandb_records(path) if r.WhichOneof("record_type") == "run"]
        if found or time.monotonic() > deadline:
            assert found, f"{path}: no run record after {wait_s:.0f} s"
            return found[0]
        time.sleep(0.2)


def wandb_config(path: str) -> dict:
    """The run's config as logged (the run record's, then each config update), top-level key -> value."""
    config: dict = {}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        updates = record.run.config.update if kind == "run" else record.config.update if kind == "config" else []
        config.update({u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in updates})
    return config


# ------------------------------------------------------------------------------------------------------------- MLflow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """``mlflow server`` in a process group of its own (SQLite store, proxied artifacts, job runner off); `wait`
    until it answers. Started early, waited for late, so its start overlaps other tests."""

    def __init__(self, home: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home / "mlflow-server.log"
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", "1", "--backend-store-uri", f"sqlite:///{home}/mlflow.db",
                 "--artifacts-destination", str(home / "artifacts")],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=home, start_new_session=True)
        self.started = time.monotonic()

    def wait(self, timeout_s: float = 180.0) -> str:
        while time.monotonic() - self.started < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=2).read()
                return self.url
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"mlflow server not up after {timeout_s} s:\n{self.log.read_text()[-3000:]}")

    def get(self, endpoint: str, **params) -> dict:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        with urllib.request.urlopen(f"{self.url}/api/2.0/mlflow/{endpoint}?{query}", timeout=30) as r:
            return json.loads(r.read())

    def post(self, endpoint: str, body: dict) -> dict:
        request = urllib.request.Request(f"{self.url}/api/2.0/mlflow/{endpoint}", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as r:
            return json.loads(r.read())

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        metrics = self.get("metrics/get-history", run_id=run_id, metric_key=key, max_results=1000)["metrics"]
        return sorted((int(m.get("step", 0)), m["value"]) for m in metrics)

    def runs(self, experiment: str) -> list[dict]:
        exp = self.get("experiments/get-by-name", experiment_name=experiment)["experiment"]
        return self.post("runs/search", {"experiment_ids": [exp["experiment_id"]]}).get("runs", [])

    def artifacts(self, run_id: str, path: str = "") -> list[str]:
        files = self.get("artifacts/list", run_id=run_id, path=path).get("files", [])
        return sorted(f["path"] for f in files)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
