"""Code verification: candidate programs run in pre-started, isolated sandbox workers; a trusted process decides.

How a sample runs (`verify_code`):
  1. `extract_code` turns the raw completion into a program (never raises).
  2. A sandbox worker -- ``python -I mel/verify/_zygote.py``, started once and reused, inside the strongest isolation
     that works here (`isolation_mode()`, probed once and reported) -- keeps a CHILD forked ahead for the next
     sample and passes this process the child's call and reply pipes over a Unix socket. The worker is a fork server
     only: it never holds a program, a test or a value, so no sample can find another's in the memory it inherits.
     Workers are started from one long-lived thread (bubblewrap's ``--die-with-parent`` ends a worker with the
     thread that started it) and reused by every call; ``workers`` samples are in flight at a time, each taken up as
     soon as a worker is free (no batch waits for its slowest sample).
  3. Here (`mel.verify.remote`), the program goes down the call pipe with the PLANNED calls (`mel.verify.plan`:
     the tests' calls of program functions whose arguments are literals or names living in the child, up to the
     first statement that uses the program otherwise); the child runs the program and the setup code, reports the
     names it defines, evaluates each planned call's source (so its arguments -- set literals, instances of the
     program's classes, setup objects -- are built as plain CPython builds them) and streams back each result. The
     TEST CODE RUNS IN THIS PROCESS: each planned call reads its result, every later call goes through a proxy bound
     to the program's name (builtin names excepted, but for the entry point), and every returned value -- plain data
     of exact builtin types -- is rebuilt as fresh objects. For ``io`` tests the returned values are compared with
     the expected outputs here (floats with ``atol``); ``assert``/``check`` code evaluates here on plain values. If
     the tests do not read the planned results in plan order (a skipped call, a proxy call while results are left),
     the sample is run again in a fresh child with no plan, call by call. The worker reports how the child ended
     (deadline, output limit, signal, exit). An exit code, printed text or a crash never counts as a pass.

Isolation (``isolation=``, ``verify.isolation``; ``isolation_mode()`` says which is in force) FAILS CLOSED: ``auto``
takes the first of ``bwrap``, ``unshare`` that works here and, where neither does, raises `IsolationUnavailable`
(saying how to get isolation) before any candidate code runs. Both give the same contract:
  ``bwrap``     bubblewrap as an unprivileged user (uid 65534 when we are root): new user, PID, network, IPC and UTS
                namespaces; a read-only view of /usr, /lib*, /bin, /sbin, /etc and the interpreter only (no /work,
                /home, /root: the tests and datasets on disk are not visible); private tmpfs /tmp; no network.
  ``unshare``   util-linux's ``unshare`` (new mount, PID, network, IPC, UTS namespaces, and a user namespace when we
                are not root); the worker (``_zygote.py --jail``) then mounts a new root the way bubblewrap does --
                read-only binds of the same directories, a fresh /proc of its own PID namespace, a /dev with null,
                zero, full, random and urandom only, private size-capped tmpfs /tmp and /dev/shm -- pivots into it,
                detaches the host's tree, and drops every capability (uid 65534 when we are root; no new privileges).
  ``docker``    (the ``docker`` SDK and a Docker engine or podman's Docker API; ``mel.verify.docker_backend``) the same
                worker in a container of ``$MEL_SANDBOX_IMAGE`` with ``--network none``, a read-only root, tmpfs /tmp,
                uid 65534, a pids limit and only the worker file mounted.
  ``none``      a plain process with the limits below and NO isolation: only when asked for by name (an explicit
                opt-in, warned about on stderr and shown in every progress line and manifest); never a fallback.
In ``bwrap``, ``unshare`` and ``docker`` mode, after each sample every process left in the sample's PID namespace is
killed (the worker is a subreaper, so it knows whether any is left; a worker that finds itself outside a PID
namespace of its own refuses to run samples). Limits in every mode, on the child: CPU seconds, address space
(``memory_mb``), file size, open files, processes (``docker``: the container's pids limit instead; none in ``none``
mode), output bytes; a wall-clock
deadline per sample after which the child's process group is killed (and, if the worker itself stops answering, the
whole worker). Cleaned environment; a fresh scratch directory per sample as cwd.

Covered: planned calls (the child is sent the calls, never a comparison or an expected value; a planned result is
plain data like a proxy reply, so a program class's ``__eq__`` never runs here; forged or patched evaluation in the
child only yields other values; a run read out of plan order never counts); exits of every kind (``sys.exit``,
``os._exit``, ``atexit``/``excepthook`` tricks: no result -> not passed); custom ``__eq__``/``__hash__``/``__bool__``,
builtin-type subclasses, patched builtins or ``AssertionError``, top-level ``def abs``/``def sorted`` (they live in
the child; tests run here on fresh builtins); forged protocol messages (the child holds no descriptor but its own two
pipes, and a forged reply is only a value); reading the tests or a sibling sample's program (never in the child's
memory, nor on its file system); files a sample leaves in /tmp (removed after each sample); infinite loops, sleeping
children, memory bombs, huge output, fork bombs (limits, then the process group and PID namespace are killed);
network (no interface but loopback); writing outside the scratch directory and the private /tmp (read-only root);
seeing or signalling host processes and reaching host Unix sockets (own PID and network namespaces, no host /run or
/tmp); killing the worker (the sample is retried once in a fresh worker, then ``sandbox_error``).
Not covered: escapes through kernel bugs (no seccomp filter); the opted-in ``none`` mode isolates nothing (processes
that leave the process group can outlive the sample, host files are readable and world-writable ones writable). A
sample can slow other samples down (shared CPU). Test code is trusted and runs in this process (a test that loops
forever without calling the program is not interrupted).
Faithful to plain Python where the tests call the program with arguments the child can build (the planned calls:
all 974 MBPP reference solutions get plain CPython's verdict, 164/164 HumanEval canonical solutions pass). A copy
the program forks runs apart and answers nothing (it ends where it would first reply): the verdict is the original
process's, as a plain script's exit status is. Calls
through the proxy take positional plain arguments only; in-place changes a function makes to list/dict arguments are
copied back, other argument mutations are not seen. Objects of the program's classes never reach the tests (a test
that reads ``f(x).attr`` fails), and setup values built from program names live in the child only. A run that
diverges from plan order (mostly failing samples: a short-circuit, an assert message that calls the program) costs a
second child. The child learns every planned call's arguments up front (never an expected value).
"""
from __future__ import annotations

import math
import os
import queue
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Sequence

from mel.data.types import CodeTests
from mel.verify.plan import Plan, literal, plan_tests
from mel.verify._zygote import JOB, REASONS, REPORT
from mel.verify.remote import Diverged, Remote, SampleEnded, run_tests
from mel.verify.extract import extract_code
from mel.verify.types import Verdict
from mel.verify.zygote_paths import SANDBOX_ZYGOTE, ZYGOTE_PATH

__all__ = [
    "verify_code", "call_outputs", "isolation_mode", "describe_isolation", "available_isolations",
    "IsolationUnavailable", "ISOLATIONS", "FULL_ISOLATIONS", "shutdown_sandbox_workers", "ZYGOTE_PATH", "worker_python",
]

NOBODY = 65534
NPROC = 256
MAX_PROGRAM_BYTES = 1 << 20
_SETPRIV = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--no-new-privs",
            "--bounding-set=-all", "--"]


def _bwrap_prefix(python: str) -> list[str]:
    binds = []
    for path in ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc"):
        binds += ["--ro-bind-try", path, path]
    prefix_dir = os.path.dirname(os.path.dirname(os.path.realpath(python)))
    if not prefix_dir.startswith("/usr"):
        binds += ["--ro-bind-try", prefix_dir, prefix_dir]
    owner = _SETPRIV if os.geteuid() == 0 else []
    return [*owner, "bwrap", "--unshare-all", "--die-with-parent", "--new-session", *binds,
            "--ro-bind", ZYGOTE_PATH, SANDBOX_ZYGOTE, "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
            "--chdir", "/tmp", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8", "--"]


def _unshare_prefix() -> list[str]:
    """util-linux ``unshare``: new mount, network, PID, IPC and UTS namespaces (and a user namespace when we are not
    root); the worker then builds its own read-only root and drops every privilege (``_zygote.py --jail``)."""
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return ["unshare", *user, "--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child", "--"]


def _candidate_pythons() -> list[str]:
    found: list[str] = []
    for p in (getattr(sys, "_base_executable", None), sys.executable, "/usr/bin/python3"):
        if p and os.path.exists(p) and os.path.realpath(p) not in [os.path.realpath(f) for f in found]:
            found.append(p)
    return found


class _Mode:
    def __init__(self, name: str, command: list[str], sweep: bool, nproc: int, worker_class: Any = None) -> None:
        self.name, self.command, self.sweep, self.nproc = name, command, sweep, nproc
        self.worker_class = worker_class or _Worker
        self.warned = False  # ``none``: the opt-in warning is printed once per process


def _probe(command: list[str]) -> str:
    """``""`` when a worker started with ``command`` reports that its isolation holds, else why not (one line)."""
    try:
        out = subprocess.run([*command, "--probe"], cwd="/", capture_output=True, timeout=30,
                             env={"PATH": os.defpath, "LANG": "C.UTF-8"}, start_new_session=True)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{command[0]}: {exc}"
    if out.returncode == 0 and out.stdout.startswith(b"ok 3."):
        return ""
    said = (out.stderr or out.stdout).decode("utf-8", "replace").strip().splitlines()
    return f"{command[0]}: {said[-1] if said else f'exit status {out.returncode}'}"[:300]


def _bwrap_modes() -> list[_Mode]:
    if not shutil.which("bwrap"):
        return []
    return [_Mode("bwrap", [*_bwrap_prefix(py), py, "-I", SANDBOX_ZYGOTE], True, NPROC) for py in _candidate_pythons()]


def _unshare_modes() -> list[_Mode]:
    if not shutil.which("unshare"):
        return []
    return [_Mode("unshare", [*_unshare_prefix(), py, "-I", ZYGOTE_PATH, "--jail"], True, NPROC)
            for py in _candidate_pythons()]


def _none_modes() -> list[_Mode]:
    return [_Mode("none", [sys.executable, "-I", ZYGOTE_PATH], False, 0)]


def _docker_modes() -> list[_Mode]:
    from mel.verify.docker_backend import DockerWorker, docker_available, sandbox_image

    ok, why = docker_available()
    if not ok:
        raise IsolationUnavailable(f"isolation 'docker' unavailable: {why}")

    class _Docker(DockerWorker):
        sample = _Worker.sample

    return [_Mode("docker", [sandbox_image()], True, 0, _Docker)]


# Each isolation's candidate workers, strongest first. ``bwrap``, ``unshare`` and ``docker`` give the whole contract
# (FULL_ISOLATIONS); ``none`` is a plain process with the limits only, used solely when asked for by name.
_MODES: dict[str, Callable[[], list[_Mode]]] = {
    "bwrap": _bwrap_modes, "unshare": _unshare_modes, "docker": _docker_modes, "none": _none_modes,
}
AUTO_ORDER = ("bwrap", "unshare")
ISOLATIONS = ("auto", *_MODES)
FULL_ISOLATIONS = ("bwrap", "unshare", "docker")
HOW_TO_ISOLATE = (
    "install bubblewrap (Debian/Ubuntu: apt install bubblewrap; Fedora: dnf install bubblewrap), or allow user "
    "namespaces for util-linux's unshare (sysctl kernel.unprivileged_userns_clone=1, "
    "kernel.apparmor_restrict_unprivileged_userns=0)"
)
OPT_OUT = ("to run candidate code with resource limits only and NO isolation, opt in explicitly: "
           "verify.isolation: none in the config (mel run ... --set verify.isolation=none) or "
           "mel verify code --isolation none")


class IsolationUnavailable(RuntimeError):
    """No sandbox that gives the whole contract works here (or not the one asked for): candidate code is not run."""


_mode_lock = threading.Lock()
_resolved: dict[str, _Mode | str] = {}  # isolation -> its working mode, or why it does not work here


def _resolve(name: str) -> _Mode | str:
    if name not in _resolved:
        why = []
        for mode in _MODES[name]():
            problem = "" if name in ("none", "docker") else _probe(mode.command)
            if not problem:
                _resolved[name] = mode
                break
            why.append(problem)
        else:
            _resolved[name] = "; ".join(dict.fromkeys(why)) or f"{name} is not installed"
    return _resolved[name]


def _current_mode(isolation: str = "auto") -> _Mode:
    """The worker mode of ``isolation`` (``auto``: the first of `AUTO_ORDER` that works); raises
    `IsolationUnavailable` with what to do when it cannot be had, and never falls back to weaker isolation."""
    if isolation not in ISOLATIONS:
        raise ValueError(f"unknown sandbox isolation {isolation!r}; known: {', '.join(ISOLATIONS)}")
    with _mode_lock:
        names = AUTO_ORDER if isolation == "auto" else (isolation,)
        reasons = []
        for name in names:
            try:
                found = _resolve(name)
            except IsolationUnavailable as exc:
                found = str(exc)
            if isinstance(found, _Mode):
                if name == "none" and not found.warned:
                    found.warned = True
                    print("mel.verify: WARNING verify.isolation is 'none': candidate code runs with resource limits "
                          "only, NOT isolated from this machine (opted in)", file=sys.stderr)
                return found
            reasons.append(f"{name}: {found}")
    what = "no sandbox isolation works on this machine" if isolation == "auto" else f"isolation {isolation!r} " \
        "does not work on this machine"
    raise IsolationUnavailable(f"{what} ({'; '.join(reasons)}), so candidate code is not run. To isolate it, "
                               f"{HOW_TO_ISOLATE}; {OPT_OUT}.")


def isolation_mode(isolation: str = "auto") -> str:
    """The isolation in force for code runs asked for as ``isolation``: ``bwrap``, ``unshare``, ``docker`` or (opted
    in) ``none``; raises `IsolationUnavailable` where it cannot be had."""
    return _current_mode(isolation).name


def worker_python(isolation: str = "auto") -> str:
    """The Python interpreter that the sandbox workers of ``isolation`` run, as a path on this machine (``""`` for
    ``docker``: the image's own)."""
    mode = _current_mode(isolation)
    return "" if mode.name == "docker" else mode.command[mode.command.index("-I") - 1]


def describe_isolation(name: str) -> str:
    """How progress lines and summaries show an isolation mode: ``none`` never goes unnoticed."""
    return "none (NOT ISOLATED: opted in)" if name == "none" else name


def available_isolations() -> list[str]:
    """The local isolations that give the whole contract on this machine (``bwrap``, ``unshare``), strongest first."""
    out = []
    for name in AUTO_ORDER:
        with _mode_lock:
            if isinstance(_resolve(name), _Mode):
                out.append(name)
    return out


# --------------------------------------------------------------------------------------------------- workers
class WorkerDied(Exception):
    pass


def _read_report(sock: socket.socket, timeout: float) -> dict:
    """The worker's REPORT of how a child ended (``_zygote.py``), as ``{"reason", "exit", "signal", "output",
    "output_bytes"}``."""
    end = time.monotonic() + timeout
    buf = b""
    need = REPORT.size
    while len(buf) < need:
        left = end - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            raise WorkerDied("worker stopped answering")
        chunk = sock.recv(max(need - len(buf), 4096))
        if not chunk:
            raise WorkerDied("worker ended")
        buf += chunk
        if len(buf) >= REPORT.size:
            need = REPORT.size + REPORT.unpack_from(buf)[4]
    reason, exit_status, signal_number, nbytes, _ = REPORT.unpack_from(buf)
    if len(buf) > need or reason >= len(REASONS):
        raise WorkerDied("worker broke the protocol")
    return {"reason": REASONS[reason], "exit": None if exit_status < 0 else exit_status,
            "signal": None if signal_number < 0 else signal_number,
            "output": buf[REPORT.size:].decode("utf-8", "replace"), "output_bytes": nbytes}


class _Worker:
    """One sandbox worker (a fork server, see ``_zygote.py``) and its control socket; one thread at a time."""

    def __init__(self, mode: _Mode) -> None:
        self.mode = mode
        self.ctl, theirs = socket.socketpair()
        try:
            self.proc = subprocess.Popen(mode.command, stdin=theirs.fileno(), stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, cwd="/", start_new_session=True,
                                         env={"PATH": os.defpath, "LANG": "C.UTF-8"})
        finally:
            theirs.close()

    def sample(self, program: str, tests: CodeTests, timeout_s: float, memory_mb: int) -> dict:
        """Run one sample: its planned calls made ahead in the child, the tests here; if the tests did not read the
        planned results in plan order, the sample again in a fresh child, call by call."""
        outcome = _attempt(self, program, tests, plan_tests(tests), timeout_s, memory_mb)
        if outcome.get("diverged"):
            outcome = _attempt(self, program, tests, plan_tests(tests, sequential=True), timeout_s, memory_mb)
        return outcome

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, grace_s: float = 0.0) -> None:
        """Stop the worker: EOF first when ``grace_s`` (it exits, and bubblewrap's own init is reaped by bubblewrap
        instead of being orphaned), SIGKILL to the whole group after that."""
        if grace_s > 0:
            try:
                self.ctl.shutdown(socket.SHUT_RDWR)
                self.proc.wait(timeout=grace_s)
            except (OSError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        self.ctl.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _attempt(worker: Any, program: str, tests: CodeTests, plan: Plan, timeout_s: float, memory_mb: int) -> dict:
    """One child of ``worker`` for one sample: fork it in the worker, run the tests here against it (``plan``: the
    calls it makes ahead), collect how it ended. ``"diverged"`` in the outcome: discard it and run without a plan."""
    try:
        worker.ctl.sendall(JOB.pack(float(timeout_s), int(memory_mb), worker.mode.nproc, worker.mode.sweep))
        if not select.select([worker.ctl], [], [], 30.0)[0]:
            raise WorkerDied("worker did not fork a child")
        msg, fds, _, _ = socket.recv_fds(worker.ctl, 16, 3)
    except OSError as exc:
        raise WorkerDied(f"worker gone: {exc}") from None
    if msg != b"F" or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        raise WorkerDied("worker broke the protocol")
    call_w, reply_r, pidfd = fds
    remote = Remote(call_w, reply_r, time.monotonic() + timeout_s)
    diverged = ended = False
    try:
        outcome = run_tests(remote, program, tests, plan)
    except SampleEnded as exc:
        ended, outcome = True, {"status": "ended", "detail": str(exc), "results": []}
    except Diverged:
        diverged, outcome = True, {"status": "diverged", "detail": "", "results": []}
    finally:
        if remote.pending and not ended:  # the child may be computing results nobody will read: end it now
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except OSError:  # not ours to signal (a container's uid): the worker's deadline ends it
                pass
        for fd in (call_w, reply_r, pidfd):
            os.close(fd)  # EOF: the child exits
    outcome["end"] = _read_report(worker.ctl, timeout_s + 30.0)
    outcome["memory"] = remote.memory
    # Output written by calls the tests never read (they were done, results were left) may have hit the limit: only
    # a run without a plan can say. A run that ended waiting for a result wrote only what plain Python would have.
    unread = not ended and remote.pending > 0
    outcome["diverged"] = diverged or (unread and outcome["end"].get("reason") == "output_limit")
    return outcome


class _Spawner:
    """Starts sandbox workers from one daemon thread that lives as long as this process. bubblewrap's
    ``--die-with-parent`` (``PR_SET_PDEATHSIG``) kills a worker when the THREAD that started it ends, so a worker
    started by one of `verify_code`'s pool threads died with that thread at the end of the call, and every call
    (each chunk of ``mel verify code``, each training step) paid for starting its workers again."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)  # a forked copy of this process has no spawner thread

    def reset(self) -> None:
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def start(self, mode: _Mode) -> Any:
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._serve, name="mel-sandbox-spawner", daemon=True)
                self.thread.start()
        done: Future = Future()
        self.jobs.put((mode, done))
        return done.result()

    def _serve(self) -> None:
        while True:
            mode, done = self.jobs.get()
            try:
                done.set_result(mode.worker_class(mode))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                done.set_exception(exc)


_SPAWNER = _Spawner()


class _Pool:
    def __init__(self) -> None:
        self.idle: dict[str, queue.LifoQueue] = {}
        self.all: list[_Worker] = []
        self.lock = threading.Lock()

    def _queue(self, name: str) -> queue.LifoQueue:
        with self.lock:
            q = self.idle.get(name)
            if q is None:
                q = self.idle[name] = queue.LifoQueue()
            return q

    def acquire(self, mode: _Mode) -> _Worker:
        try:
            worker = self._queue(mode.name).get_nowait()
            if worker.alive():
                return worker
            self._forget(worker)
        except queue.Empty:
            pass
        worker = _SPAWNER.start(mode)
        with self.lock:
            self.all.append(worker)
        return worker

    def release(self, worker: _Worker) -> None:
        self._queue(worker.mode.name).put(worker)

    def _forget(self, worker: _Worker) -> None:
        worker.kill()
        with self.lock:
            if worker in self.all:
                self.all.remove(worker)

    def discard(self, worker: _Worker) -> None:
        self._forget(worker)

    def shutdown(self) -> None:
        with self.lock:
            workers, self.all = self.all, []
        for worker in workers:
            worker.kill(grace_s=2.0)
        with self.lock:
            self.idle = {}


_POOL = _Pool()


def shutdown_sandbox_workers() -> None:
    """Stop every pre-started sandbox worker (they are also stopped at exit)."""
    _POOL.shutdown()


import atexit  # noqa: E402

atexit.register(shutdown_sandbox_workers)


# --------------------------------------------------------------------------------------------------- verdicts
def _close(a: Any, b: Any, atol: float) -> bool:
    """Expected ``b`` vs returned ``a``, both fresh builtins: exact, except floats within ``atol``."""
    if type(a) is float or type(b) is float:
        if type(a) not in (int, float) or type(b) not in (int, float) or type(a) is bool or type(b) is bool:
            return False
        if math.isnan(a) and math.isnan(b):
            return True
        return math.isclose(a, b, rel_tol=1e-9 if atol == 0 else 0.0, abs_tol=atol)
    if type(a) is not type(b):
        return False
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(_close(x, y, atol) for x, y in zip(a, b))
    if type(a) is dict:
        return a.keys() == b.keys() and all(_close(a[k], b[k], atol) for k in a)
    return a == b


_SIGXCPU = 24


def _short(value: Any) -> str:
    try:
        return f"{value!r:.200}"
    except ValueError:  # an int past the decimal-digit limit
        return f"<{type(value).__name__} too long to print>"


def _verdict(raw: dict, tests: CodeTests, seconds: float) -> Verdict:
    """The trusted decision for one sample from the test results and how the child ended."""
    total = tests.num_tests
    end = raw.get("end", {})
    output = end.get("output", "")
    status, detail = raw["status"], raw.get("detail", "")
    if end.get("reason") == "sandbox_error":
        status, detail = "sandbox_error", output
    elif end.get("reason") == "output_limit":
        status, detail = "output_limit", f"the program wrote more than {end.get('output_bytes', 0)} bytes"
    elif status == "ended":
        if end.get("reason") == "timeout" or end.get("signal") == _SIGXCPU:
            status, detail = "timeout", f"time limit of {raw.get('timeout_s')}s reached"
        elif end.get("signal") is not None:
            status = "memory" if raw.get("memory") else "runtime_error"
            detail = f"killed by signal {end['signal']}"
        else:
            status, detail = "runtime_error", f"the program exited (status {end.get('exit')}) while being tested"
    oks: list[bool] = []
    first_error, first_raised = "", False
    for k, r in enumerate(raw.get("results", [])):
        if tests.style == "io" and "value" in r and r.get("ok") is None:
            try:
                ok = _close(r["value"], literal(tests.outputs[k]), tests.atol)
                err = "" if ok else f"returned {_short(r['value'])}, expected {tests.outputs[k]:.200}"
            except (ValueError, SyntaxError, IndexError) as exc:
                ok, err = False, f"bad expected output: {exc}"
        else:
            ok, err = bool(r.get("ok")), r.get("err", "")
        oks.append(ok)
        if not ok and not first_error:
            first_error, first_raised = f"test {k}: {err}", bool(r.get("raised"))
    passed_count = sum(oks)
    if status == "passed":
        if len(oks) == total and all(oks):
            return Verdict(True, "passed", "", passed_count, total, seconds)
        if len(oks) < total:
            status, detail = "sandbox_error", f"only {len(oks)} of {total} tests ran"
        else:
            status = "runtime_error" if first_raised else "failed"
            if first_raised and first_error.split(": ", 2)[1:2] == ["MemoryError"]:
                status = "memory"
            detail = first_error
    if output and status != "passed":
        detail = f"{detail} | output: {output[:300]}"
    return Verdict(False, status, detail[:2000], passed_count, total, seconds)


def _run_one(program: str, tests: CodeTests, timeout_s: float, memory_mb: int, isolation: str) -> Verdict:
    t0 = time.monotonic()
    if len(program.encode("utf-8", "replace")) > MAX_PROGRAM_BYTES:
        return Verdict(False, "output_limit", "program larger than 1 MiB", 0, tests.num_tests, 0.0)
    mode = _current_mode(isolation)
    last = ""
    for _attempt in range(2):  # a worker killed by the sample (or stuck) is replaced, and the sample retried once
        worker = _POOL.acquire(mode)
        try:
            raw = worker.sample(program, tests, timeout_s, memory_mb)
        except WorkerDied as exc:
            _POOL.discard(worker)
            last = str(exc)
            continue
        except BaseException:
            _POOL.discard(worker)
            raise
        _POOL.release(worker)
        raw["timeout_s"] = timeout_s
        return _verdict(raw, tests, time.monotonic() - t0)
    return Verdict(False, "sandbox_error", last, 0, tests.num_tests, time.monotonic() - t0)


def verify_code(
    completions: Sequence[str],
    tests: Sequence[CodeTests],
    *,
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    workers: int = 2,
    isolation: str = "auto",
    extract: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> list[Verdict]:
    """One verdict per (completion, tests) pair, in order; never raises on any completion text.

    The samples stream through ``workers`` sandbox workers: each worker takes the next sample as soon as it is done
    with one, so a slow sample holds up only its own worker. ``progress(done, total)`` is called as each verdict is
    made (from the thread that made it, one call at a time).
    ``isolation``: ``auto`` (bubblewrap, else unshare; see `isolation_mode`), ``bwrap``, ``unshare``, ``docker`` or,
    opted into by name, ``none``; `IsolationUnavailable` is raised, before any code runs, where it cannot be had.
    ``extract=False``: the
    completions are already programs (assembled by the caller, e.g. the eval stage's human-eval rule) and run as
    they are, without `extract_code`."""
    if len(completions) != len(tests):
        raise ValueError(f"{len(completions)} completions but {len(tests)} test specs")
    _current_mode(isolation)  # missing isolation is a configuration error, raised once, not a verdict per sample
    lock, done = threading.Lock(), [0]

    def one(i: int) -> Verdict:
        try:
            program = extract_code(completions[i]) if extract else completions[i]
            verdict = _run_one(program, tests[i], timeout_s, memory_mb, isolation)
        except Exception as exc:  # the verifier never crashes on an input
            verdict = Verdict(False, "sandbox_error", f"{type(exc).__name__}: {exc}"[:500], 0, tests[i].num_tests, 0.0)
        if progress is not None:
            with lock:
                done[0] += 1
                progress(done[0], len(completions))
        return verdict

    if workers <= 1 or len(completions) <= 1:
        return [one(i) for i in range(len(completions))]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, range(len(completions))))


def _to_literal(value: Any) -> str:
    """``repr``, except that integers too long for decimal conversion are written in hex (``ast.literal_eval`` reads
    both)."""
    t = type(value)
    if t is int and value.bit_length() > 10_000:
        return hex(value)
    if t is list:
        return "[" + ", ".join(_to_literal(v) for v in value) + "]"
    if t is tuple:
        return "(" + "".join(_to_literal(v) + ", " for v in value) + ")"
    if t is dict:
        return "{" + ", ".join(f"{_to_literal(k)}: {_to_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _literal(result: dict) -> tuple[bool, str]:
    if result.get("ok") is not None or "value" not in result:
        return False, result.get("err", "")
    try:
        return True, _to_literal(result["value"])
    except (ValueError, RecursionError) as exc:
        return False, f"{type(exc).__name__}: {exc}"[:500]


def call_outputs(
    program: str, entry_point: str, inputs: Sequence[str], *, timeout_s: float = 5.0, memory_mb: int = 512,
    isolation: str = "auto",
) -> list[tuple[bool, str]]:
    """Run ``entry_point(*args)`` of a program in the sandbox for each input literal; returns ``(True, repr of the
    value)`` or ``(False, error)`` per input (used to compute EvalPlus expected outputs from canonical solutions)."""
    tests = CodeTests(style="io", entry_point=entry_point, inputs=tuple(inputs), outputs=tuple("None" for _ in inputs))
    mode = _current_mode(isolation)
    worker = _POOL.acquire(mode)
    try:
        raw = worker.sample(program, tests, timeout_s, memory_mb)
    except WorkerDied as exc:
        _POOL.discard(worker)
        return [(False, f"sandbox_error: {exc}")] * len(inputs)
    _POOL.release(worker)
    out = [_literal(r) for r in raw.get("results", [])]
    why = f"{raw['status']}: {raw.get('detail', '')}"
    return out + [(False, why)] * (len(inputs) - len(out))
