"""Code verification v0: each completion runs in its own sandboxed process; the trusted parent decides the verdict.

How one sample runs (`verify_code`):
  1. `extract_code` turns the raw completion into a program (never raises).
  2. A fresh process ``python -I mel/verify/_harness.py FD ...`` starts in a new session (its own process group), in a
     fresh scratch directory as cwd, with a cleaned environment (PATH, LANG, HOME=TMPDIR=scratch), wrapped by the
     strongest isolation that works here (`isolation_mode()`, probed once and cached):
       ``netns+nobody``  (running as root) ``unshare --net`` then ``setpriv`` to uid/gid 65534, no new privileges,
                         empty capability bounding set;
       ``userns+netns``  ``unshare --user --net --map-root-user``;
       ``nobody``        (root, no namespaces) ``setpriv`` only;   ``none``  plain process.
  3. The harness sets its own rlimits FIRST, before it reads the job (CPU seconds, RLIMIT_AS, RLIMIT_FSIZE,
     RLIMIT_NOFILE, no core dumps, RLIMIT_NPROC only for the nobody modes since it counts per user). They are set there
     rather than in a ``preexec_fn`` because ``preexec_fn`` is unsafe in a threaded parent (and ours is); no untrusted
     code runs before the job is read, so the effect is the same.
  4. The job (program + tests; never the expected io outputs) goes over stdin as JSON. The harness sends one JSON line
     per test AFTER it ran, then ``{"done": true}``, over a separate pipe (``pass_fds``), never stdout.
  5. The parent drains stdin/stdout/stderr/results with a wall deadline, caps output, then SIGKILLs the whole process
     group, reaps, and removes the scratch directory. PASSED iff "done" arrived, every test reported in order, and every
     test is ok -- for io tests "ok" is the PARENT's comparison of the tagged plain return value with the expected
     literal (floats: ``math.isclose(rel_tol=1e-9, abs_tol=atol)``). Exit codes and stdout never count.

Covered: ``sys.exit``/``os._exit``/``SystemExit``/``KeyboardInterrupt`` anywhere (no "done" or a failed test -> not
passed); fake results printed to stdout; objects with a custom ``__eq__``/``__lt__``/``__bool__``/arithmetic and
builtin-type subclasses (io values are tagged by exact builtin type and compared by the parent; in assert/check test
code every comparison, ``not``/``and``/``or`` operand and assert condition is rewritten to act on fresh plain copies);
infinite loops (CPU rlimit + wall deadline); memory bombs (RLIMIT_AS); huge stdout/stderr (capped, killed beyond
the limit); huge files (RLIMIT_FSIZE); network (only in the ``netns`` modes); children left in the process group
(killed); writing to another sample's result pipe (``close_fds``).
Not covered (v0): deliberately adversarial code that attacks the harness inside its own process (writes forged
protocol lines to the result fd, monkeypatches the harness module; for assert/check styles the per-test verdict is
computed in that process -- io verdicts are not, and io expected outputs never reach it); user-defined behaviour
reached through calls inside asserts (``isinstance`` on a subclass, ``math.isclose`` via ``__float__``) and ``is``
comparisons; processes that leave the process group (``setsid``) and fork bombs (RLIMIT_NPROC only in the nobody
modes); network in the ``nobody``/``none`` modes; filesystem writes outside the scratch directory in the
``userns+netns``/``none`` modes (caller's uid there); no seccomp, no PID or mount namespace, no cgroup.
"""
from __future__ import annotations

import ast
import json
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

from mel.data.types import CodeTests
from mel.verify._harness import untag
from mel.verify.extract import extract_code
from mel.verify.types import Status, Verdict

__all__ = ["verify_code", "isolation_mode", "HARNESS_PATH"]

HARNESS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_harness.py")
OUTPUT_LIMIT = 8 * 1024 * 1024  # stdout+stderr bytes before the run is killed (status output_limit)
RESULT_LIMIT = 32 * 1024 * 1024  # bytes on the result channel
FSIZE_MB = 16
KEEP_BYTES = 4096  # of stdout/stderr, kept for details
NOBODY = 65534
_SETPRIV = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--no-new-privs",
            "--bounding-set=-all", "--"]
_MODES: dict[str, tuple[list[str], bool]] = {  # name -> (command prefix, runs as nobody)
    "netns+nobody": (["unshare", "--net", "--", *_SETPRIV], True),
    "userns+netns": (["unshare", "--user", "--net", "--map-root-user", "--"], False),
    "nobody": (list(_SETPRIV), True),
    "none": ([], False),
}
_mode_lock = threading.Lock()
_mode: str | None = None


def _probe(prefix: list[str]) -> bool:
    try:
        out = subprocess.run([*prefix, sys.executable, "-I", HARNESS_PATH, "--probe"], cwd="/", capture_output=True,
                             timeout=30, env={"PATH": os.defpath, "LANG": "C.UTF-8"}, start_new_session=True)
        return out.returncode == 0 and out.stdout.strip() == b"ok"
    except (OSError, subprocess.SubprocessError):
        return False


def isolation_mode() -> str:
    """The isolation in force for code runs (probed once per process and cached): see the module docstring."""
    global _mode
    with _mode_lock:
        if _mode is None:
            root = os.geteuid() == 0
            names = ["netns+nobody", "userns+netns", "nobody", "none"] if root else ["userns+netns", "none"]
            _mode = next((n for n in names if n == "none" or _probe(_MODES[n][0])), "none")
        return _mode


@dataclass
class _Run:
    messages: list[dict[str, Any]] = field(default_factory=list)
    ready: bool = False
    done: bool = False
    corrupt: str = ""
    timed_out: bool = False
    output_exceeded: str = ""
    returncode: int | None = None
    stderr: bytes = b""


def _job(code: str, tests: CodeTests) -> bytes:
    return json.dumps({"code": code, "style": tests.style, "entry_point": tests.entry_point,
                       "setup_code": tests.setup_code, "asserts": list(tests.asserts),
                       "check_code": tests.check_code, "inputs": list(tests.inputs)}).encode()


def _exited(pid: int) -> bool:
    try:  # WNOWAIT: do not reap, so the pid (= process group id) cannot be reused before killpg
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _parse_results(run: _Run, buf: bytes) -> bytes:
    *lines, rest = buf.split(b"\n")
    for line in lines:
        if run.done:
            run.corrupt = "data after the done message"
            continue
        try:
            msg = json.loads(line)
            if type(msg) is not dict:
                raise ValueError("not an object")
        except Exception:  # noqa: BLE001 - anything unparsable means the channel was tampered with
            run.corrupt = "unparsable result line"
            continue
        if msg.get("ready") is True and not run.ready:
            run.ready = True
        elif msg.get("done") is True:
            run.done = True
        else:
            run.messages.append(msg)
    return rest


def _drive(proc: subprocess.Popen, rfd: int, payload: bytes, deadline: float) -> _Run:
    run, rbuf, sent, out_total = _Run(), b"", 0, 0
    err_keep = bytearray()
    sel = selectors.DefaultSelector()
    assert proc.stdin and proc.stdout and proc.stderr
    for f in (proc.stdin, proc.stdout, proc.stderr):
        os.set_blocking(f.fileno(), False)
    os.set_blocking(rfd, False)
    sel.register(proc.stdin, selectors.EVENT_WRITE)
    for f in (proc.stdout, proc.stderr, rfd):
        sel.register(f, selectors.EVENT_READ)

    def pump(key: selectors.SelectorKey) -> None:
        nonlocal sent, out_total, rbuf
        if key.fileobj is proc.stdin:
            try:
                sent += os.write(key.fd, payload[sent:sent + 65536])
            except BlockingIOError:
                return
            except OSError:
                sent = len(payload)
            if sent >= len(payload):
                sel.unregister(proc.stdin)
                proc.stdin.close()
            return
        try:
            data = os.read(key.fd, 65536)
        except BlockingIOError:
            return
        if not data:
            sel.unregister(key.fileobj)
            return
        if key.fileobj == rfd:
            rbuf = _parse_results(run, rbuf + data)
            if len(rbuf) > RESULT_LIMIT or len(run.messages) > 1_000_000:
                run.output_exceeded = "result channel over its limit"
        else:
            out_total += len(data)
            if key.fileobj is proc.stderr and len(err_keep) < KEEP_BYTES:
                err_keep.extend(data[:KEEP_BYTES - len(err_keep)])
            if out_total > OUTPUT_LIMIT:
                run.output_exceeded = f"stdout+stderr over {OUTPUT_LIMIT} bytes"

    try:
        while not (run.done or run.output_exceeded or run.corrupt):
            now = time.monotonic()
            if now >= deadline:
                run.timed_out = True
                break
            for key, _ in sel.select(timeout=min(0.05, deadline - now)):
                pump(key)
            if _exited(proc.pid):  # (pipes all closed but still running: keep waiting until the deadline)
                for _ in range(64):  # drain what is still buffered in the pipes
                    keys = [k for k, _ in sel.select(timeout=0)]
                    if not keys:
                        break
                    for key in keys:
                        pump(key)
                break
    finally:
        sel.close()
        for kill in (lambda: os.killpg(proc.pid, signal.SIGKILL), proc.kill):  # the group, then the leader itself
            try:  # (before reaping: the pid cannot be reused meanwhile)
                kill()
            except (ProcessLookupError, PermissionError):
                pass
        run.returncode = proc.wait()
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f and not f.closed:
                f.close()
    run.stderr = bytes(err_keep)
    return run


def _same(a: Any, b: Any, atol: float) -> bool:
    """Equality of fresh plain values (Python semantics) with a float tolerance."""
    ta, tb = type(a), type(b)
    num = (int, float, bool)
    if ta in num and tb in num:
        if ta is float or tb is float:
            if math.isnan(a) and math.isnan(b):
                return True
            return a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=atol)
        return a == b
    if ta is complex or tb is complex:
        return a == b or (ta in num + (complex,) and tb in num + (complex,)
                          and math.isclose(abs(complex(a) - complex(b)), 0.0, abs_tol=max(atol, 1e-12)))
    if ta in (list, tuple) and ta is tb:
        return len(a) == len(b) and all(_same(x, y, atol) for x, y in zip(a, b))
    if ta is dict and tb is dict:
        return a.keys() == b.keys() and all(_same(a[k], b[k], atol) for k in a)
    return bool(a == b)


def _short(x: Any, n: int = 120) -> str:
    s = repr(x)
    return s if len(s) <= n else s[:n] + "..."


def _test_name(tests: CodeTests, k: int) -> str:
    if tests.style == "io":
        return f"test {k} ({tests.entry_point}(*{tests.inputs[k][:80]}))"
    if tests.style == "assert":
        return f"test {k} ({_short(tests.asserts[k], 80)})"
    return "test 0 (check)"


def _decide(run: _Run, tests: CodeTests, expected: list[Any] | None) -> tuple[Status, str, int]:
    n = tests.num_tests
    first = run.messages[0] if run.messages else {}
    if "syntax_error" in first:
        return "syntax_error", str(first["syntax_error"]), 0
    if "bad_tests" in first:
        return "sandbox_error", f"test code does not compile: {first['bad_tests']}", 0
    if "runtime_error" in first:
        return ("memory" if first.get("memory") else "runtime_error"), str(first["runtime_error"]), 0
    ok_count, failure, failure_memory = 0, "", False
    for pos, msg in enumerate(run.messages):
        if msg.get("i") != pos or pos >= n or type(msg.get("ok")) is not bool:
            run.corrupt = run.corrupt or f"unexpected result message at position {pos}"
            break
        ok, err = msg["ok"], str(msg.get("err", ""))
        if ok and expected is not None:
            try:
                got = untag(msg["value"])
                ok = _same(got, expected[pos], tests.atol)
                err = "" if ok else f"returned {_short(got)}, expected {_short(expected[pos])}"
            except Exception as e:  # noqa: BLE001 - a malformed value is a failure, never a crash
                ok, err = False, f"invalid returned value ({type(e).__name__})"
        ok_count += ok
        if not ok and not failure:
            failure, failure_memory = f"{_test_name(tests, pos)}: {err}", bool(msg.get("memory"))
    if run.corrupt:
        return "sandbox_error", f"result channel corrupted: {run.corrupt}", 0
    if run.done and len(run.messages) == n:
        if not failure:
            return "passed", "", ok_count
        return ("memory" if failure_memory else "failed"), failure, ok_count
    progress = f"after {len(run.messages)} of {n} tests"
    if run.timed_out:
        return "timeout", f"wall time limit hit {progress}", ok_count
    if run.output_exceeded:
        return "output_limit", f"{run.output_exceeded} {progress}", ok_count
    rc = run.returncode
    if not run.ready:
        return "sandbox_error", f"harness did not start (exit {rc}): {run.stderr[-500:].decode(errors='replace')}", 0
    if rc in (-signal.SIGXCPU, -signal.SIGKILL):
        return "timeout", f"CPU time limit hit {progress}", ok_count
    if rc == -signal.SIGXFSZ:
        return "output_limit", f"file size limit hit {progress}", ok_count
    err = run.stderr.decode(errors="replace")
    if any(s in err for s in ("MemoryError", "Cannot allocate memory", "bad_alloc", "out of memory")):
        return "memory", f"out of memory {progress}", ok_count
    if failure:
        return "failed", failure, ok_count
    return "runtime_error", f"process exited (code {rc}) {progress} without reporting completion", ok_count


def _run_one(completion: str, tests: CodeTests, timeout_s: float, memory_mb: int) -> Verdict:
    t0 = time.monotonic()
    n = tests.num_tests
    try:
        expected = [ast.literal_eval(o) for o in tests.outputs] if tests.style == "io" else None
    except Exception as e:  # noqa: BLE001
        return Verdict(False, "sandbox_error", f"bad expected output literal: {e}", 0, n, time.monotonic() - t0)
    scratch = ""
    try:
        code = extract_code(completion)
        prefix, as_nobody = _MODES[isolation_mode()]
        scratch = tempfile.mkdtemp(prefix="mel-sbx-")
        if as_nobody:
            os.chown(scratch, NOBODY, NOBODY)
        cpu_s = max(1, math.ceil(timeout_s)) + 1
        rfd, wfd = os.pipe()
        try:
            cmd = [*prefix, sys.executable, "-I", HARNESS_PATH, str(wfd), str(cpu_s), str(memory_mb), str(FSIZE_MB),
                   str(128 if as_nobody else 0)]
            env = {"PATH": os.defpath, "LANG": "C.UTF-8", "HOME": scratch, "TMPDIR": scratch}
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    cwd=scratch, env=env, pass_fds=(wfd,), close_fds=True, start_new_session=True)
        except BaseException:
            os.close(rfd)
            raise
        finally:
            os.close(wfd)
        try:
            run = _drive(proc, rfd, _job(code, tests), t0 + timeout_s)
        finally:
            os.close(rfd)
        status, detail, passed_count = _decide(run, tests, expected)
        return Verdict(status == "passed", status, detail, passed_count, n, time.monotonic() - t0)
    except Exception as e:  # noqa: BLE001 - the verifier never raises on a completion
        return Verdict(False, "sandbox_error", f"{type(e).__name__}: {e}", 0, n, time.monotonic() - t0)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def verify_code(completions: Sequence[str], tests: Sequence[CodeTests], *, timeout_s: float = 5.0,
                memory_mb: int = 512, workers: int = 2) -> list[Verdict]:
    """One verdict per (raw completion, tests) pair, in order; samples run concurrently on `workers` threads."""
    if len(completions) != len(tests):
        raise ValueError(f"{len(completions)} completions but {len(tests)} test sets")
    if not completions:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(completions)))) as pool:
        return list(pool.map(lambda ct: _run_one(ct[0], ct[1], timeout_s, memory_mb), zip(completions, tests)))
