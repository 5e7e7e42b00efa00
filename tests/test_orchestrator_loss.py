"""The Prefect server a run reports to goes away mid-run (`cli.run_failures`): the run stops within seconds with one
line that names the server and says the same command resumes (exit 75), leaves nothing running, and the same
command resumes, reusing every stage that had finished.

The kill point is random (seeded; printed, ``pytest -s``): the k-th stage of the run to start, k drawn among all of
them, plus a random delay. The watchdog itself is tested against a local HTTP server (a server that answers, even
with an error status, is alive; one that stops answering for the grace period is not; a blip shorter than that is
tolerated; one that takes the connection but answers late is busy, and only a long silence ends the run), and an
unreachable server is named before any work (CI runs these). The runs whose server is killed are marked e2e and slow
(the CI budget): a small two-step run whose rerun goes through this session's Prefect test server, and the issue's
scenario (the tiny config, 4 steps, killed during step 2; the same server brought back on its port, and the same
command run again).
"""
from __future__ import annotations

import http.server
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from cli.run_failures import EXIT_SERVER_LOST, GRACE_S, server_lost_line, server_watch
from conftest import REPO
from prefect_server import free_port, run_server
from small_run import SMALL, mel_run_in_process, progress, session_pids

SEED = 2403
STARTED = re.compile(r"^\[step (\d+)/\d+\] (\w+) +\.\.\.$")


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200
    delay_s = 0.0

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        time.sleep(self.delay_s)
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def _serve(status: int = 200, delay_s: float = 0.0) -> http.server.ThreadingHTTPServer:
    handler = type("Health", (_Health,), {"status": status, "delay_s": delay_s})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _watch(api: str, seconds: float, grace_s: float = 0.6, busy_grace_s: float = 60.0) -> list[tuple[float, str]]:
    """Run the watchdog on ``api`` for ``seconds`` (probes time out after 0.2 s); when it called ``on_lost``
    (seconds from the start) and why."""
    lost: list[tuple[float, str]] = []
    t0 = time.monotonic()
    with server_watch(api, lambda reason: lost.append((time.monotonic() - t0, reason)), grace_s=grace_s, poll_s=0.1,
                      busy_grace_s=busy_grace_s, probe_timeout_s=0.2):
        time.sleep(seconds)
    return lost


@pytest.mark.parametrize("status", [200, 503])
def test_a_server_that_answers_is_alive_whatever_its_status(status) -> None:
    server = _serve(status)
    try:
        assert _watch(f"http://127.0.0.1:{server.server_port}/api", 1.5) == []
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_gone_for_the_grace_period_is_lost_and_a_blip_is_not() -> None:
    server = _serve()
    port = server.server_port
    api = f"http://127.0.0.1:{port}/api"
    server.shutdown()
    server.server_close()
    (when, reason), = _watch(api, 2.0)
    assert 0.6 <= when < 1.5 and "refused" in reason.lower()

    def blip() -> None:  # down for 0.3 s (under the 0.6 s grace), then back on the same port
        time.sleep(0.3)
        nonlocal server
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Health)
        threading.Thread(target=server.serve_forever, daemon=True).start()

    threading.Thread(target=blip).start()
    try:
        assert _watch(api, 1.5) == []
    finally:
        time.sleep(0.4)
        server.shutdown()
        server.server_close()


def test_a_server_that_takes_the_connection_but_is_slow_is_busy_not_gone() -> None:
    server = _serve(delay_s=0.5)  # every probe times out (0.2 s) after the connection is made
    api = f"http://127.0.0.1:{server.server_port}/api"
    try:
        assert _watch(api, 1.5) == []  # past the 0.6 s grace of a server that is gone
        (when, reason), = _watch(api, 2.0, busy_grace_s=0.8)  # a hung server still ends the run, later
        assert 0.8 <= when < 1.9 and reason.startswith("took the connection, no answer in 0.2 s"), (when, reason)
    finally:
        server.shutdown()
        server.server_close()


def test_an_unreachable_server_is_named_before_any_work(tmp_path) -> None:
    api = f"http://127.0.0.1:{free_port()}/api"
    proc = subprocess.run([sys.executable, "-m", "cli", "run", "configs/tiny.yaml", "--run-dir", str(tmp_path / "run")],
                          cwd=REPO, env={**os.environ, "PREFECT_API_URL": api}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"mel run: cannot reach the Prefect server at {api} "
                                                           "(PREFECT_API_URL): ")
    assert not (tmp_path / "run" / "step_0000").exists()


def _kill_server_at_random_point(args: list[str], server: dict, rng: random.Random, steps: int,
                                 only_step: int | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """``mel run ARGS`` against ``server``, whose process group is SIGKILLed when a randomly drawn stage starts (of
    step ``only_step``, 1-based, else of any step), plus a random delay; the run's output and the seconds from the
    kill to its exit."""
    stages = 3  # rollout, verify, update: the tiny config's GRPO step
    starts = [(s, i) for s in range(1, steps + 1) for i in range(stages) if only_step in (None, s)]
    step, index = rng.choice(starts)
    delay = rng.uniform(0.0, 1.5)
    env = {**server["env"], "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    err: list[str] = []
    threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True).start()
    out, seen, killed_at = [], 0, None
    for line in proc.stdout:
        out.append(line)
        started = STARTED.match(line.strip())
        if killed_at is None and started and int(started.group(1)) == step:
            seen += 1
            if seen == index + 1:
                print(f"\nkilling the server {delay:.2f} s after step {step} {started.group(2)} started")
                time.sleep(delay)
                os.killpg(server["proc"].pid, signal.SIGKILL)
                killed_at = time.monotonic()
    proc.wait(timeout=120)
    assert killed_at is not None, "".join(out)
    took = time.monotonic() - killed_at
    time.sleep(0.5)  # the stderr reader's last lines
    leftover = session_pids(proc.pid)
    assert not leftover, f"left running after the run ended: {leftover}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(out), "".join(err)), took


def _assert_one_line(killed: subprocess.CompletedProcess, api: str, took: float) -> None:
    print(f"exit {killed.returncode} {took:.1f} s after the kill")
    assert killed.returncode == EXIT_SERVER_LOST, killed.stdout + killed.stderr
    assert took < GRACE_S + 10, f"{took:.1f} s from the kill to the exit"
    output = killed.stdout + killed.stderr
    assert "Traceback" not in output and "httpx" not in output, output
    lines = [line for line in killed.stderr.splitlines() if line.startswith("mel run:")]
    assert len(lines) == 1 and lines[0] == killed.stderr.strip().splitlines()[-1], output
    assert lines[0] == server_lost_line(api, "[Errno 111] Connection refused"), lines[0]


def _finished(out: str) -> set[str]:
    return {f"{s} {stage}" for s, stage in re.findall(r"^\[step (\d+)/\d+\] (\w+) +done ", out, re.M)}


@pytest.mark.e2e
@pytest.mark.slow  # the CI budget (make test <= 20 min on 2 cores); CI runs the watchdog's and the start's tests
def test_server_killed_at_a_random_point_stops_within_seconds_and_the_run_resumes(prefect_harness, tmp_path):
    run_dir = tmp_path / "run"
    args = ["run", "configs/tiny.yaml", "--run-dir", str(run_dir), *SMALL, "--set", "run.steps=2"]
    home = tmp_path / "prefect-home"
    home.mkdir()
    server_run = run_server(home, REPO)
    server = next(server_run)
    try:
        killed, took = _kill_server_at_random_point(args, server, random.Random(f"{SEED}:small"), steps=2)
    finally:
        server_run.close()
    _assert_one_line(killed, server["api"], took)

    out = mel_run_in_process(args)  # through this session's test server: the run directory is all a resume needs
    finished = _finished(killed.stdout)
    everything = re.search(r"^all (\d+) stages reused from cached artifacts", out, re.M)
    if everything:  # the kill landed in the last stage, which finished before the run stopped: one summary line
        assert int(everything[1]) == len(finished) == 6, out
    else:
        assert {f"{s} {stage}" for s, stage, how in progress(out) if how == "reused"} == finished, out
    assert "wall time" in out


@pytest.mark.e2e
@pytest.mark.slow
def test_the_issue_scenario_server_back_on_its_port_and_the_same_command_resumes(tmp_path):
    """The tiny config, 4 steps, the server killed at a random point of step 2; then the same server (database, port)
    back and the same command (environment included) again."""
    run_dir = tmp_path / "run"
    args = ["run", "configs/tiny.yaml", "--run-dir", str(run_dir), "--set", "run.steps=4"]
    home, port = tmp_path / "prefect-home", free_port()
    home.mkdir()
    server_run = run_server(home, REPO, port=port)
    server = next(server_run)
    try:
        killed, took = _kill_server_at_random_point(args, server, random.Random(f"{SEED}:issue"), steps=4,
                                                    only_step=2)
    finally:
        server_run.close()
    _assert_one_line(killed, server["api"], took)

    server_run = run_server(home, REPO, port=port)
    server = next(server_run)
    try:
        again = subprocess.run([sys.executable, "-m", "cli", *args], cwd=REPO, env=server["env"],
                               capture_output=True, text=True, timeout=900)
    finally:
        server_run.close()
    assert again.returncode == 0, again.stdout + again.stderr
    reused = {f"{s} {stage}" for s, stage, how in progress(again.stdout) if how == "reused"}
    assert reused == _finished(killed.stdout) and {"1 rollout", "1 verify", "1 update"} <= reused, again.stdout
