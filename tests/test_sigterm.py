"""SIGTERM ends a ``mel`` command through its exit handlers (`cli.preflight.exit_on_sigterm`), which stop what it
started (Prefect's temporary server, an embedded Ray); SIGTERM's default action skipped them and left a temporary
Prefect server running. The mechanism is checked in a bare process; the slow test stops a real ``mel run`` with its
temporary server and finds nothing of its session left."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import pytest

from conftest import REPO
from small_run import session_pids

PROBE = """
import atexit, os, signal, time
from cli.preflight import exit_on_sigterm
atexit.register(print, "exit handlers ran", flush=True)
exit_on_sigterm()
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(30)
print("not stopped", flush=True)
"""


def test_sigterm_raises_system_exit_143_so_exit_handlers_run() -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 143 and proc.stdout == "exit handlers ran\n", proc.stdout + proc.stderr
    assert proc.stderr.strip() == "mel: stopped by SIGTERM; what finished is kept: the same command resumes"


def test_a_handler_set_by_the_caller_is_kept() -> None:
    mine = "signal.signal(signal.SIGTERM, lambda *a: os._exit(7)); exit_on_sigterm()"
    probe = PROBE.replace("exit_on_sigterm()", mine)
    assert subprocess.run([sys.executable, "-c", probe], cwd=REPO, timeout=60).returncode == 7


@pytest.mark.e2e
@pytest.mark.slow  # the CI budget: a temporary Prefect server's start; the mechanism above runs in CI
def test_mel_run_stopped_by_sigterm_leaves_no_temporary_server(tmp_path) -> None:
    (tmp_path / "home").mkdir()
    env = {**{k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}, "PREFECT_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-m", "cli", "run", "configs/tiny.yaml", "--set", "run.steps=1",
                             "--run-dir", str(tmp_path / "run")], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        for line in proc.stdout:
            if "rollout  ..." in line:  # the temporary server is up: the run reports to it
                break
        proc.send_signal(signal.SIGTERM)
        out = proc.stdout.read()
        assert proc.wait(timeout=120) == 143, out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert session_pids(proc.pid, wait_s=30) == []
