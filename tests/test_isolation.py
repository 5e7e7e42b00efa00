"""The sandbox fails closed: without an isolation that gives the whole contract, candidate code does not run, unless
the user opts into ``none`` by name -- and then every progress line says so.

A machine without bubblewrap and without usable namespaces is simulated for real by running the CLI with a ``PATH``
on which neither ``bwrap`` nor ``unshare`` can be found (the sandbox looks both up on ``PATH``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mel.data.types import CodeTests
from mel.verify import sandbox
from mel.verify.sandbox import IsolationUnavailable, describe_isolation, isolation_mode, verify_code

REPO = Path(__file__).resolve().parents[1]
MEL = [sys.executable, "-m", "cli"]
ADD = CodeTests(style="io", entry_point="add", inputs=("[1, 2]",), outputs=("3",))


@pytest.fixture
def no_isolation_tools(tmp_path, monkeypatch):
    """This process, as on a machine with neither tool: PATH without them, and the probe results forgotten."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setattr(sandbox, "_resolved", {})
    sandbox.shutdown_sandbox_workers()
    yield
    sandbox.shutdown_sandbox_workers()


def _env_without_isolation(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PATH": str(tmp_path / "empty-bin"), "PYTHONPATH": str(REPO)}


def test_auto_refuses_to_run_code_without_isolation(no_isolation_tools, tmp_path) -> None:
    marker = tmp_path / "ran"
    program = f"open({str(marker)!r}, 'w').close()\ndef add(a, b):\n    return a + b\n"
    with pytest.raises(IsolationUnavailable) as err:
        verify_code([program], [ADD])
    message = str(err.value)
    assert "no sandbox isolation works on this machine" in message
    assert "apt install bubblewrap" in message and "verify.isolation: none" in message
    assert "bwrap: bwrap is not installed" in message and "unshare: unshare is not installed" in message
    assert not marker.exists()  # nothing ran, not even in a weaker mode


@pytest.mark.parametrize("name", ["bwrap", "unshare"])
def test_a_named_isolation_that_is_missing_is_refused(no_isolation_tools, name: str) -> None:
    with pytest.raises(IsolationUnavailable, match=f"isolation '{name}' does not work on this machine"):
        isolation_mode(name)


def test_none_runs_only_when_asked_for_and_says_so(no_isolation_tools, capfd) -> None:
    (verdict,) = verify_code(["def add(a, b):\n    return a + b\n"], [ADD], isolation="none")
    assert verdict.passed
    assert "NOT isolated" in capfd.readouterr().err
    assert describe_isolation("none") == "none (NOT ISOLATED: opted in)"
    assert describe_isolation("unshare") == "unshare"


def test_auto_gives_a_full_isolation_here() -> None:
    assert isolation_mode() in sandbox.available_isolations() and isolation_mode() in ("bwrap", "unshare")


def _rows(tmp_path: Path) -> Path:
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"completion": "def add(a, b):\n    return a + b\n",
                                "test_list": ["assert add(1, 2) == 3"]}) + "\n")
    return rows


def test_cli_verify_refuses_in_one_line_and_runs_with_the_opt_in(tmp_path) -> None:
    rows, out = _rows(tmp_path), tmp_path / "out.parquet"
    env = _env_without_isolation(tmp_path)
    refused = subprocess.run([*MEL, "verify", "code", str(rows), "--out", str(out)], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mel verify: no sandbox isolation works"), refused.stderr
    assert "apt install bubblewrap" in lines[0] and "--isolation none" in lines[0]
    assert not out.exists()

    opted = subprocess.run([*MEL, "verify", "code", str(rows), "--out", str(out), "--isolation", "none"], env=env,
                           cwd=REPO, capture_output=True, text=True, timeout=120)
    assert opted.returncode == 0, opted.stderr
    progress = [line for line in opted.stderr.splitlines() if line.startswith("mel verify code")]
    assert progress and all("sandbox none (NOT ISOLATED: opted in)" in line for line in progress), opted.stderr
    assert "passed 1/1" in progress[-1]


def test_cli_run_refuses_before_any_server_starts(tmp_path) -> None:
    env = _env_without_isolation(tmp_path)
    proc = subprocess.run([*MEL, "run", "configs/tiny.yaml", "--set", "data.taskset=easy_code", "--run-dir",
                           str(tmp_path / "run")], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("mel run: no sandbox isolation works"), proc.stderr
    assert "--set verify.isolation=none" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_unshare_jail_holds_for_an_unprivileged_user() -> None:
    """The non-root path (``unshare --user --map-root-user``), where this test runs as root: the worker's probe
    reports ``ok`` only with a read-only root and no capability left."""
    if os.geteuid() != 0:
        command = [*sandbox._unshare_prefix(), sys.executable, "-I", sandbox.ZYGOTE_PATH, "--jail"]
        assert sandbox._probe(command) == ""
        return
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    reads_zygote = f"open({sandbox.ZYGOTE_PATH!r}).close()"
    python = next((p for p in ("/usr/bin/python3", sys.executable)
                   if subprocess.run([*drop, p, "-c", reads_zygote], capture_output=True).returncode == 0), None)
    if python is None:
        pytest.skip("uid 65534 may not run an interpreter on the worker file here")
    unprivileged = ["unshare", "--user", "--map-root-user", "--mount", "--net", "--pid", "--ipc", "--uts", "--fork",
                    "--kill-child", "--"]
    assert sandbox._probe([*drop, *unprivileged, python, "-I", sandbox.ZYGOTE_PATH, "--jail"]) == ""
