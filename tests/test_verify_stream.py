"""Samples stream through the sandbox workers: a slow sample holds up only its own worker (``mel verify code`` used to
hand the pool chunks of 16 rows and wait for each), progress counts samples as they finish, and the workers live on
from one call to the next (bubblewrap's ``--die-with-parent`` ended them with the pool thread that started them)."""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from mel.data.types import CodeTests, Problem
from mel.verify import sandbox, verify_problems
from mel.verify.jsonl import parse_code_rows, verify_code_rows
from mel.verify.types import Verdict

ADD = CodeTests(style="assert", asserts=("assert add(1, 2) == 3",))
N = 40


@pytest.fixture
def slow_first(monkeypatch):
    """``sandbox._run_one`` replaced: the sample ``slow`` finishes only once every other sample has (or after 10 s,
    recording that it had to give up); the others finish at once. Returns the record of what happened."""
    seen: dict = {"done": [], "gave_up": False}
    lock, others_done = threading.Lock(), threading.Event()

    def run_one(program, tests, timeout_s, memory_mb, isolation):
        if program == "slow" and not others_done.wait(10.0):
            seen["gave_up"] = True
        with lock:
            seen["done"].append(program)
            if len(seen["done"]) == N - 1 and "slow" not in seen["done"]:
                others_done.set()
        return Verdict(True, "passed", "", 1, 1, 0.0)

    monkeypatch.setattr(sandbox, "_run_one", run_one)
    monkeypatch.setattr(sandbox, "_current_mode", lambda isolation="auto": None)
    return seen


def _programs() -> list[str]:
    return ["slow"] + [f"fast {i}" for i in range(1, N)]


def test_cli_rows_stream_past_a_slow_row(slow_first, tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(f'{{"completion": "{p}", "test_list": ["assert add(1, 2) == 3"]}}\n' for p in _programs()))
    rows = parse_code_rows(str(path)).rows
    rows = [type(r)(r.line, r.format, p, r.carried, r.tests) for r, p in zip(rows, _programs())]
    progress: list[tuple[int, int]] = []
    records = verify_code_rows(rows, workers=2, progress=lambda done, total: progress.append((done, total)))
    assert not slow_first["gave_up"], "rows after the slow one waited for it"
    assert slow_first["done"][-1] == "slow"
    assert [r["line"] for r in records] == list(range(1, N + 1)) and all(r["passed"] for r in records)
    assert progress == [(k, N) for k in range(1, N + 1)]


def test_training_verify_streams_past_a_slow_sample(slow_first) -> None:
    # the verify stage's verify_batch (and each Ray chunk of it) is one verify_problems call
    problems = [Problem(f"p{i}", "code", "add", tests=ADD) for i in range(N)]
    verdicts = verify_problems(problems, _programs(), workers=2)
    assert not slow_first["gave_up"], "samples after the slow one waited for it"
    assert slow_first["done"][-1] == "slow" and len(verdicts) == N


@pytest.mark.parametrize("isolation", sandbox.available_isolations())
def test_sandbox_workers_outlive_the_call_that_started_them(isolation: str) -> None:
    sandbox.shutdown_sandbox_workers()
    programs, tests = ["def add(a, b):\n    return a + b\n"] * 6, [ADD] * 6
    try:
        assert all(v.passed for v in sandbox.verify_code(programs, tests, workers=2, isolation=isolation))
        first = sorted(w.proc.pid for w in sandbox._POOL.all)
        time.sleep(0.3)  # a worker killed with the thread that started it is gone by now
        assert all(w.alive() for w in sandbox._POOL.all)
        assert all(v.passed for v in sandbox.verify_code(programs, tests, workers=2, isolation=isolation))
        assert sorted(w.proc.pid for w in sandbox._POOL.all) == first, "the second call had to start new workers"
    finally:
        sandbox.shutdown_sandbox_workers()


def test_a_worker_outside_a_pid_namespace_of_its_own_refuses_to_sweep(monkeypatch) -> None:
    # The sweep kills every process in sight and empties /tmp and /dev/shm: right in the sandbox's own namespaces,
    # ruinous on the host. A worker run where it is not PID 1 or 2 (here: in this process) must fail closed. The
    # destructive functions are replaced, so that a regression records calls instead of doing damage.
    from mel.verify import _zygote

    called: list[str] = []
    monkeypatch.setattr(_zygote, "_sweep", lambda: called.append("sweep"))
    monkeypatch.setattr(_zygote, "_empty_private_tmp", lambda: called.append("empty /tmp"))
    monkeypatch.setattr(_zygote, "prefork", lambda ctl: called.append("fork") or RuntimeError("no child here"))
    assert not _zygote._own_namespaces()
    host, worker = socket.socketpair()
    server = threading.Thread(target=_zygote.serve, args=(worker,), daemon=True)
    server.start()
    try:
        host.sendall(_zygote.JOB.pack(5.0, 256, 64, True))
        end = sandbox._read_report(host, 10.0)
    finally:
        host.close()
        server.join(10)
    assert end["reason"] == "sandbox_error" and "refusing to run samples" in end["output"], end
    assert "sweep" not in called and "empty /tmp" not in called
    worker.close()
