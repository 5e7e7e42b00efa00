"""Screenshots of the Prefect UI for the README: a real ``prefect server start``, the README's deployment command, a
``mel-train`` run triggered through the API (what the Run form sends), then headless Chromium on the Run form, the
completed run's page (its steps and logs), one step's stage task runs and the per-step metrics artifact.

    python docs/screenshots.py                  # writes docs/ui-*.png (needs Debian's chromium: apt install chromium)

About two minutes on 2 cores (the tiny config, 2 steps).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
BIN = Path(sys.executable).parent


def _post(api: str, path: str, body: dict):
    req = urllib.request.Request(api + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _get(api: str, path: str):
    with urllib.request.urlopen(api + path, timeout=30) as resp:
        return json.loads(resp.read())


def _wait_for(what: str, check, timeout: float = 600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            found = check()
            if found:
                return found
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit(f"screenshots: {what} did not happen in {timeout:.0f} s")


def shoot(chromium: str, url: str, out: Path, height: int = 1100) -> None:
    subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size=1500,{height}", "--virtual-time-budget=20000", f"--screenshot={out}", url],
                   check=True, capture_output=True, timeout=180)
    print(f"wrote {out.relative_to(REPO)} ({url})", flush=True)


def main() -> int:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        print("screenshots: needs chromium (Debian/Ubuntu: apt install chromium)", file=sys.stderr)
        return 2
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ui, api = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/api"
    tmp = Path(tempfile.mkdtemp(prefix="mel-screens-"))
    env = {**os.environ, "PREFECT_HOME": str(tmp / "home"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)]
    try:
        _wait_for("the server start", lambda: _get(api, "/health"), 180)
        procs.append(subprocess.Popen([sys.executable, "-m", "deploy.deploy"], env=env, cwd=REPO,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        deployment = _wait_for("the deployments", lambda: _post(api, "/deployments/filter", {
            "deployments": {"name": {"any_": ["mel-train-deployment"]}}}), 180)[0]
        shoot(chromium, f"{ui}/deployments/deployment/{deployment['id']}/run", DOCS / "ui-run-form.png", 1500)
        run = _post(api, f"/deployments/{deployment['id']}/create_flow_run", {"parameters": {
            "config_path": "configs/tiny.yaml", "steps": 2, "run_dir": str(tmp / "run")}})
        done = _wait_for("the triggered run", lambda: (r := _get(api, f"/flow_runs/{run['id']}"))["state"]["type"]
                         in ("COMPLETED", "FAILED", "CRASHED") and r)
        print(f"run {done['name']}: {done['state']['type']}", flush=True)
        time.sleep(3)  # the last log lines and artifacts
        shoot(chromium, f"{ui}/runs/flow-run/{run['id']}", DOCS / "ui-run-page.png", 1300)
        step = _post(api, "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [run["id"]]}},
                                                "sort": "START_TIME_ASC"})[0]
        shoot(chromium, f"{ui}/runs/flow-run/{step['id']}", DOCS / "ui-step-tasks.png", 1000)
        metrics = _post(api, "/artifacts/filter", {"artifacts": {"key": {"like_": "%-metrics"}}})
        if metrics:
            shoot(chromium, f"{ui}/artifacts/artifact/{metrics[0]['id']}", DOCS / "ui-metrics-artifact.png", 1000)
    finally:
        for proc in reversed(procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
