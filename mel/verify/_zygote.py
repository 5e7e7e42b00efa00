"""Sandbox worker, executed BY PATH inside the isolation wrapper: ``python -I _zygote.py``. Standard library only.

The worker is a fork server that never sees a program, a test or a value. Its standard input is a Unix socket to the
host (the control channel). It keeps one CHILD forked ahead (`prefork`: made before the host asks, so the fork and
the child's set-up overlap with the host's work on the previous sample). For each sample the host sends the limits;
the worker writes them down the child's call pipe, hands the host its ends of the child's pipes and a pidfd of the
child over the socket (SCM_RIGHTS), and then only watches: it drains the child's stdout/stderr (capped), enforces
the wall-clock deadline, and when the child is gone it kills the child's process group, reaps it and reports how it
ended; then, before it reads the next request or forks the next child, it kills every other process left (in a PID
namespace of its own), reaps, removes the scratch directory and empties the private /tmp. So the worker's memory --
which every child inherits -- never holds another sample's program, tests or answers, and nothing of one sample is
left when the next one's child is forked.

The child, before any candidate code runs, redirects stdout/stderr to the capped pipe, closes every other
descriptor (the control socket included), moves into a fresh scratch directory (its environment, ``HOME``/``TMPDIR``
= that directory, is set by the worker before the fork), waits for its limits and sets them; then it reads the
program from its call pipe, runs it and then the setup code (the plain script's order), reports the names it
defines, makes the calls the host PLANNED (``mel.verify.plan``: each call's source text evaluated here, in plan
order, its result tagged and sent as soon as it returns), and then answers calls: ``{"name", "args"}`` ->
``{"value", "args"}`` (returned value and arguments after the call, as tagged plain data of exact builtin types) or
``{"error", "message"}``. The tests themselves -- every comparison on a result -- run in the host
(``mel.verify.sandbox``), on fresh builtin values; the child is sent calls only, never an expected value.

Frames between host and child: 4-byte big-endian length + a body: ``marshal`` from the host (trusted data, read in
the child), JSON from the child (read by the host, which never unmarshals what a child wrote); the worker's own are
fixed binary records.
    host -> worker (socket):  a JOB record (timeout_s, memory_mb, nproc, sweep)
    worker -> host (socket):  b"F" with the call pipe's write end, the reply pipe's read end and the child's pidfd
                              (the host ends a child left computing planned results it will not read)
    worker -> child (call pipe): the same JOB record (its limits), before the host gets the pipe
    host -> child (call pipe):   {"program", "setup", "calls": [[name, source], ...], "entry_point", "param",
                                 "literal", "thunks": [magic, params, marshalled code] or None} then {"name",
                                 "args"} per call; EOF ends the child
    child -> host (reply pipe):  {"syntax_error"} | {"runtime_error", "memory"}
                                 | {"ready": {name: "call" | ["value", v]}}, then one reply per planned call
                                 ({"value"} | {"error", "message"}, with "unbound" where the called name was not
                                 found and nothing ran), then one reply per call
    worker -> host (socket):  a REPORT record (reason: none, timeout, output_limit or sandbox_error; exit status;
                              signal; bytes written), then the first output bytes (or sandbox_error's message)
"""
import ast
import builtins
import collections
import ctypes
import json
import marshal
import os
import resource
import select
import shutil
import signal
import socket
import struct
import sys
import time

# Pre-imported so candidates that import them start fast in the forked child.
import bisect, functools, heapq, itertools, math, random, re, string, typing  # noqa: E401,F401

_type = type
_MAGIC = __import__("_frozen_importlib_external").MAGIC_NUMBER  # this interpreter's bytecode version
OUTPUT_LIMIT = 8 << 20  # bytes of stdout+stderr a sample may write
KEEP_OUTPUT = 2000
# The fork server's own frames are fixed binary records (no JSON: the less Python runs in the worker while a child
# shares its memory pages, the fewer pages are copied).
JOB = struct.Struct(">dIIB")  # timeout_s, memory_mb, nproc (0: none), sweep
REPORT = struct.Struct(">BhhQI")  # reason (index in REASONS), exit status, signal (-1: none), output bytes, kept bytes
REASONS = (None, "timeout", "output_limit", "sandbox_error")
_MAX_DEPTH, _MAX_NODES = 400, 2_000_000
_BUILTIN_TYPES = {t.__name__: t for t in (int, float, complex, str, bytes, bool, list, tuple, dict, set, frozenset,
                                         type(None), object)}
_PLAIN_DICTS = (dict, collections.Counter, collections.OrderedDict, collections.defaultdict)


class NonPlain(Exception):
    pass


def tag(x, _depth=0, _count=None):
    """Plain tagged data for a value made only of exact builtin types; raises NonPlain otherwise."""
    count = _count if _count is not None else [0]
    count[0] += 1
    if _depth > _MAX_DEPTH or count[0] > _MAX_NODES:
        raise NonPlain("value too deep or too large")
    t = _type(x)
    if x is None:
        return ["N"]
    if t is bool:
        return ["b", x]
    if t is int:
        return ["i", hex(x)]
    if t is float:
        return ["f", float.hex(x)]
    if t is complex:
        return ["c", float.hex(x.real), float.hex(x.imag)]
    if t is str:
        return ["s", str.__str__(x)]
    if t is bytes:
        return ["y", bytes.hex(x)]
    if t is list or t is tuple or t is set or t is frozenset:
        code = "l" if t is list else "t" if t is tuple else "S" if t is set else "F"
        return [code, [tag(v, _depth + 1, count) for v in t.__iter__(x)]]
    for d in _PLAIN_DICTS:
        if t is d:
            return ["d", [[tag(k, _depth + 1, count), tag(v, _depth + 1, count)] for k, v in dict.items(x)]]
    if t is type:  # a builtin type passed as an argument (MBPP: remove_datatype(xs, int))
        for name, builtin_type in _BUILTIN_TYPES.items():
            if x is builtin_type:
                return ["T", name]
    raise NonPlain("non-plain value of type " + t.__qualname__)


def untag(d):
    """Fresh builtin objects from tagged data (the inverse of `tag`)."""
    code = d[0]
    if code == "N":
        return None
    if code == "b":
        return bool(d[1])
    if code == "i":
        return int(d[1], 16)
    if code == "f":
        return float.fromhex(d[1])
    if code == "c":
        return complex(float.fromhex(d[1]), float.fromhex(d[2]))
    if code == "s":
        return str(d[1])
    if code == "y":
        return bytes.fromhex(d[1])
    if code in ("l", "t", "S", "F"):
        items = [untag(v) for v in d[1]]
        return {"l": list, "t": tuple, "S": set, "F": frozenset}[code](items)
    if code == "d":
        return {untag(k): untag(v) for k, v in d[1]}
    if code == "T":
        return _BUILTIN_TYPES[d[1]]
    raise ValueError("unknown tag " + str(code))


# ---------------------------------------------------------------------------------------------------- framing
def _read_exact(fd, n):
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_request(fd):
    """A frame from the host (``marshal``: the host is trusted; a child's frames are JSON, `write_frame`)."""
    (n,) = struct.unpack(">I", _read_exact(fd, 4))
    return marshal.loads(_read_exact(fd, n))


def write_frame(fd, obj):
    data = json.dumps(obj).encode()
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(fd, data):]


def _err(e):
    try:
        return (_type(e).__name__ + ": " + str(e))[:500]
    except BaseException:
        return _type(e).__name__


# ---------------------------------------------------------------------------------------------------- the child
def _child(call_r, reply_w, out_w, scratch):
    """Runs in the forked child: isolate, wait for the sample's limits (written by the worker when the host asks for
    a sample) and set them, then run the program and answer calls. Never returns."""
    os.setsid()
    os.dup2(out_w, 1)
    os.dup2(out_w, 2)
    keep = sorted({1, 2, call_r, reply_w})
    for lo, hi in zip([0] + [k + 1 for k in keep], keep + [1 << 16]):
        if lo < hi:
            os.closerange(lo, hi)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.chdir(scratch)
    try:  # the limits (a JOB record): nothing but this file's code has run here so far
        timeout_s, memory_mb, nproc, _ = JOB.unpack(_read_exact(call_r, JOB.size))
    except EOFError:
        os._exit(0)
    mb = 1024 * 1024
    cpu = int(timeout_s) + 1
    limits = [(resource.RLIMIT_CPU, cpu, cpu + 1), (resource.RLIMIT_AS, memory_mb * mb, memory_mb * mb),
              (resource.RLIMIT_FSIZE, 16 * mb, 16 * mb), (resource.RLIMIT_NOFILE, 64, 64), (resource.RLIMIT_CORE, 0, 0)]
    if nproc:
        limits.append((resource.RLIMIT_NPROC, nproc, nproc))
    for which, soft, hard in limits:
        resource.setrlimit(which, (soft, hard))
    sys.argv = ["solution.py"]
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)  # big-integer tasks print and parse long decimals
    me = os.getpid()

    def send(obj):
        """A reply to the host from this process only: a copy the program forked (``os.fork()`` at top level or in
        a call) ends quietly where it would speak, as a forked copy of a plain script runs apart from the script's
        own outcome; it never reads a request either (it ends at its first reply)."""
        if os.getpid() != me:
            os._exit(0)
        write_frame(reply_w, obj)

    try:
        job = read_request(call_r)
    except EOFError:
        os._exit(0)
    ns = {"__name__": "__main__", "__builtins__": builtins}
    try:
        program = compile(job["program"], "<solution>", "exec", dont_inherit=True)
    except BaseException as e:
        send({"syntax_error": _err(e)})
        os._exit(0)
    try:
        exec(program, ns)
        if job.get("setup"):  # after the program, as in the plain script program + setup + tests
            exec(compile(job["setup"], "<setup>", "exec", dont_inherit=True), ns)
    except BaseException as e:  # SystemExit included: the program did not define cleanly
        send({"runtime_error": _err(e), "memory": isinstance(e, MemoryError)})
        os._exit(0)
    exports = {}
    for name, value in list(ns.items()):
        if name.startswith("__"):
            continue
        if callable(value) and not isinstance(value, type):
            exports[name] = "call"
        else:
            try:
                exports[name] = ["value", tag(value)]
            except NonPlain:
                pass
    send({"ready": exports})
    for reply in _planned(job, ns):
        send(reply)
    while True:
        try:
            request = read_request(call_r)
        except EOFError:
            os._exit(0)
        send(_answer(lambda request=request: ns[request["name"]], request.get("args", ())))


def _answer(function, tagged_args=None):
    """Call ``function()(*args)`` (``args`` untagged from ``tagged_args``; none for a planned call, whose source
    names its arguments) and tag the outcome: ``{"value"}`` (plus ``"args"`` after the call, for the copy-back) or
    ``{"error", "message"}``."""
    try:
        if tagged_args is None:
            value = function()
        else:
            args = [untag(a) for a in tagged_args]
            value = function()(*args)
        try:
            reply = {"value": tag(value)}
            if tagged_args is not None:
                reply["args"] = [tag(a) for a in args]
        except NonPlain as e:
            reply = {"error": "TypeError", "message": "returned a " + str(e), "nonplain": True}
    except BaseException as e:  # the call raised, exited, or was interrupted: an exception in the test
        reply = {"error": _type(e).__name__, "message": _err(e), "memory": isinstance(e, MemoryError)}
    return reply


def _planned(job, ns):
    """The replies to the calls the host planned (``mel.verify.plan``), in plan order: each call's source evaluated
    here, as plain Python would, and its result tagged right after it returns."""
    entry, literal = job.get("entry_point") or "", job.get("literal")
    local = {}
    if job.get("param") and entry in ns:  # HumanEval's check(candidate): candidate is the entry point
        local[job["param"]] = ns[entry]
    calls = job.get("calls") or ()
    thunks = None if literal else _compile_calls(calls, ns, local, job.get("thunks"))
    for k, (name, source) in enumerate(calls):
        if literal:  # io: the source is the argument list
            yield _answer(lambda source=source: ns[entry](*ast.literal_eval(source)))
        elif name in local or name in ns or hasattr(builtins, name):
            yield _answer(thunks[k] if thunks else
                          lambda source=source: eval(compile(source, "<test>", "eval", dont_inherit=True), ns, local))
        else:  # nothing ran: the host may skip this result without a rerun (its own lookup of the name failed too)
            yield {"error": "NameError", "message": "name %r is not defined" % name, "unbound": True}


def thunk_source(params, sources):
    """The source of a function of ``params`` returning one argument-less function per call source (one tuple)."""
    return "lambda %s: (\n%s)" % (", ".join(params), "".join("lambda: (%s),\n" % c for c in sources))


def _compile_calls(calls, ns, local, compiled=None):
    """Every planned call compiled at once (one ``compile`` instead of one per call): a function per call that
    evaluates its source with the program's names as globals and ``local`` (the check parameter) bound, as
    ``eval(source, ns, local)`` does; None where they do not compile together (then each is compiled alone).
    ``compiled``: ``[magic, params, code]``, the host's `thunk_source` compiled once per test spec (used where this
    interpreter's bytecode ``magic`` is the host's and ``params`` are the names bound here)."""
    if not calls:
        return None
    try:
        if compiled and compiled[0] == _MAGIC and list(compiled[1]) == list(local):
            code = marshal.loads(compiled[2])
        else:
            code = compile(thunk_source(local, [c[1] for c in calls]), "<test>", "eval", dont_inherit=True)
        thunks = eval(code, ns)(*local.values())
    except BaseException:
        return None
    return thunks if _type(thunks) is tuple and len(thunks) == len(calls) else None


# ---------------------------------------------------------------------------------------------------- the worker
def _sweep():
    """In a PID namespace of our own: kill every process but this one and its ancestors (escaped children)."""
    if not _own_namespaces():
        return
    keep = {os.getpid(), 1, os.getppid()}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in keep:
            try:
                os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass


def _reap_all(wait_s=0.0):
    """Reap exited children; with ``wait_s``, wait up to that long until none is left (as the PID namespace's init,
    after a sweep, every killed process is our child: none may linger as a zombie)."""
    end = time.monotonic() + wait_s
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                if time.monotonic() >= end:
                    return
                time.sleep(0.0005)
        except ChildProcessError:
            return


def _empty_private_tmp():
    """In the isolating modes (``sweep``) /tmp and /dev/shm are this worker's own tmpfs: empty them after each
    sample, so that no sample finds files an earlier one left (never called where /tmp is the host's)."""
    if not _own_namespaces():
        return
    def writable_again(_fn, path, _exc):
        try:
            os.chmod(os.path.dirname(path), 0o700)
            os.chmod(path, 0o700)
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.unlink(path)
        except OSError:
            pass

    for base in ("/tmp", "/dev/shm"):
        try:
            names = os.listdir(base)
        except OSError:
            continue
        for name in names:
            path = os.path.join(base, name)
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, onerror=writable_again)
                else:
                    os.unlink(path)
            except OSError:
                pass


_scratch_base = []  # type: list[str]


def _scratch_dir():
    """The scratch directory's name, the same for every sample of this worker (the last one is removed before the
    next child is forked; so the child's environment, which names it, need not change): on a tmpfs where /tmp is
    none but /dev/shm is (removing a directory on a disk file system costs up to milliseconds -- ext4 with
    ``discard`` -- on a tmpfs microseconds)."""
    if not _scratch_base:
        base = "/tmp"
        try:
            with open("/proc/self/mounts") as f:
                tmpfs = {line.split()[1] for line in f if line.split()[2:3] == ["tmpfs"]}
            if "/tmp" not in tmpfs and "/dev/shm" in tmpfs and os.access("/dev/shm", os.W_OK | os.X_OK):
                base = "/dev/shm"
        except (OSError, IndexError):
            pass
        _scratch_base.append(base)
    return "%s/mel-sample-%d" % (_scratch_base[0], os.getpid())


_environment_clean = []  # type: list[bool]


def _child_environment(scratch):
    """The environment the child inherits, set here before the fork: changing it in the child would copy the pages
    that libc's environment and Python's ``os.environ`` live on (about half a millisecond a sample). ``HOME`` and
    ``TMPDIR`` name the scratch directory (set again only where its name changed); the rest is set once."""
    if not _environment_clean:
        wanted = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        for key in [k for k in os.environ if k not in wanted]:  # the worker's environment is clean already
            del os.environ[key]
        for key, value in wanted.items():
            if os.environ.get(key) != value:
                os.environ[key] = value
        _environment_clean.append(True)
    if os.environ.get("HOME") != scratch or os.environ.get("TMPDIR") != scratch:
        os.environ["HOME"] = os.environ["TMPDIR"] = scratch


class Child:
    """A child forked ahead of its sample (`prefork`), waiting for its limits on the call pipe."""

    def __init__(self, pid, call_w, reply_r, out_r, scratch):
        self.pid, self.call_w, self.reply_r, self.out_r, self.scratch = pid, call_w, reply_r, out_r, scratch
        self.pidfd = os.pidfd_open(pid)
        self.status = None  # the wait status, once reaped


def prefork(ctl):
    """Fork the next sample's child now, before the host asks for it: the fork and the child's own set-up
    (session, descriptors, scratch directory) then overlap with the host's work on the last sample instead of
    delaying the next one. The child runs nothing but this file's code until it has its limits."""
    scratch = _scratch_dir()
    try:
        os.mkdir(scratch, 0o700)
    except FileExistsError:  # a sample left it behind, not removable: a name of its own for the next one
        scratch = "%s-%d" % (scratch, time.monotonic_ns())
        os.mkdir(scratch, 0o700)
    _child_environment(scratch)
    call_r, call_w = os.pipe()
    reply_r, reply_w = os.pipe()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            ctl.close()
            _child(call_r, reply_w, out_w, scratch)
        finally:
            os._exit(1)
    for fd in (call_r, reply_w, out_w):
        os.close(fd)
    return Child(pid, call_w, reply_r, out_r, scratch)


def serve_sample(ctl, job, child):
    """Give ``child`` the sample's limits (``job``, a JOB record), hand its pipes to the host, watch it; the REPORT
    of how it ended (the clean-up comes after the report: `clean_up`)."""
    try:
        os.write(child.call_w, job)  # a pipe write this small is never partial
        socket.send_fds(ctl, [b"F"], [child.call_w, child.reply_r, child.pidfd])
    finally:
        os.close(child.call_w)
        os.close(child.reply_r)
    deadline = time.monotonic() + JOB.unpack(job)[0]
    output, nbytes, reason = bytearray(), 0, 0
    watch = [child.out_r, child.pidfd]
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            reason = 1  # timeout
            break
        ready = select.select(watch, [], [], left)[0]
        if child.out_r in ready:
            data = os.read(child.out_r, 65536)
            if not data:
                watch.remove(child.out_r)
            nbytes += len(data)
            if len(output) < KEEP_OUTPUT:
                output += data[: KEEP_OUTPUT - len(output)]
            if nbytes > OUTPUT_LIMIT:
                reason = 2  # output_limit
                break
        if child.pidfd in ready:
            break
    _end(child)
    status = child.status
    return report(reason, os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1,
                  os.WTERMSIG(status) if os.WIFSIGNALED(status) else -1, bytes(output), nbytes)


def report(reason, exit_status, signal_number, output, nbytes):
    return REPORT.pack(reason, exit_status, signal_number, nbytes, len(output)) + output


def _end(child):
    """Kill the child's process group and reap the child."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except OSError:
        pass
    if child.status is None:
        child.status = os.waitpid(child.pid, 0)[1]


# [True] once every orphaned descendant of this worker is re-parented to it (PR_SET_CHILD_SUBREAPER)
_subreaper = []  # type: list[bool]


def _descendants_left():
    """Reap what has exited; True while a descendant of this worker lives (always True unless it is PID 1 or a
    subreaper: then no process a sample started can be anything but its descendant)."""
    if os.getpid() != 1 and not _subreaper:
        return True
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return True
        except ChildProcessError:
            return False


def clean_up(child, sweep):
    """After a sample (reported or not): no process of it left (``sweep``: none at all in our PID namespace), its
    scratch directory gone and (``sweep``) the private /tmp and /dev/shm emptied -- all before the next child is
    forked, so nothing of one sample reaches the next."""
    _end(child)
    if sweep and _descendants_left():  # the sweep reads /proc: done only when a process of the sample is left
        _sweep()
        _reap_all(2.0 if os.getpid() == 1 or _subreaper else 0.0)
    elif not sweep:
        _reap_all()
    for fd in (child.out_r, child.pidfd):
        os.close(fd)
    try:
        os.rmdir(child.scratch)  # most samples leave it empty
    except OSError:
        shutil.rmtree(child.scratch, ignore_errors=True)
    if sweep:
        _empty_private_tmp()


def serve(ctl):
    """The worker's loop: a child forked ahead, then for each request (a JOB record) that child served, reported,
    cleaned up after, and the next one forked."""
    fd = ctl.fileno()
    child = None
    while True:
        if child is None:
            try:
                child = prefork(ctl)
            except BaseException as e:  # reported to the host as the next sample's end
                child = e
        try:
            job = _read_exact(fd, JOB.size)
        except (EOFError, OSError):
            return  # the pre-forked child reads EOF on its call pipe and exits
        sweep = JOB.unpack(job)[3]
        if sweep and not _own_namespaces():  # fail closed: no sample runs where the clean-up could not be done
            try:
                ctl.sendall(report(3, -1, -1, b"the sandbox worker is not PID 1 or 2 of a PID namespace of its own: "
                                              b"refusing to run samples", 0))
                continue
            except OSError:
                return
        try:
            if isinstance(child, BaseException):
                raise child
            done = serve_sample(ctl, job, child)
        except BaseException as e:
            done = report(3, -1, -1, _err(e).encode("utf-8", "replace"), 0)
        try:
            ctl.sendall(done)
        except OSError:
            return
        if not isinstance(child, BaseException):
            clean_up(child, sweep)
        child = None


def _own_namespaces():
    """True where this worker is PID 1 or 2 of a PID namespace of its own (``unshare``'s jail, bubblewrap, a
    container), which is where the isolating modes start it, with a private /tmp. The sweep (kill every process in
    sight) and emptying /tmp and /dev/shm are done only there: run on the host by mistake, they would kill the
    host's processes and empty the host's /tmp."""
    return os.getpid() in (1, 2)


def _remote_exception(name, message):
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, BaseException) and cls not in (SystemExit, KeyboardInterrupt):
        try:
            return cls(message)
        except BaseException:
            pass
    return RuntimeError(message)


def _no_dump():
    """Not dumpable (no core files, no ptrace or /proc/PID/mem by the same uid), and a subreaper: every process a
    sample leaves behind is re-parented to this worker, so `clean_up` knows without reading /proc whether any is
    left."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
        if libc.prctl(36, 1, 0, 0, 0) == 0:  # PR_SET_CHILD_SUBREAPER = 36
            _subreaper.append(True)
    except Exception:
        pass


def _warm_up():
    """Pay the one-time costs (parser, compiler, json, tagging) once here instead of in every forked child, then move
    everything allocated so far out of the garbage collector's reach (``gc.freeze``), so a child's collections do not
    touch -- and copy -- the worker's memory pages; and hand the heap's free pages back (``malloc_trim``): every page
    mapped here is one more a fork copies the page-table entry of (about a tenth fewer)."""
    import gc

    source = "def f(x, y=2):\n    return [i * y for i in range(x) if i % 2] + list({1: 'a'}.items())\n"
    for _ in range(20):
        ns = {"__builtins__": builtins}
        exec(compile(source, "<warm>", "exec", dont_inherit=True), ns)
        untag(json.loads(json.dumps(tag(ns["f"](5)))))
        marshal.loads(marshal.dumps({"program": source, "calls": [["f", "f(5)"]], "thunks": None}))
    gc.collect()
    gc.freeze()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


# ---------------------------------------------------------------------------------------------------- the jail
# ``--jail``: the worker was started by ``unshare --mount --net --pid --ipc --uts --fork`` (plus ``--user
# --map-root-user`` when the host process is not root), so it is PID 1 of new namespaces and may mount. It builds a
# new root the way bubblewrap does, moves into it and drops every privilege before any sample is served.
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_ST_FLAGS = ((1, _MS_RDONLY), (2, _MS_NOSUID), (4, _MS_NODEV), (8, _MS_NOEXEC), (1024, 1024), (2048, 2048),
             (4096, 1 << 21))  # statvfs f_flag bit -> mount flag (noatime, nodiratime, relatime): locked flags stay
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
_RO_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc")
_DEVICES = ("null", "zero", "full", "random", "urandom")
JAIL_TMP_BYTES = 512 << 20  # a private /tmp (the scratch directories live there): a sample cannot fill the host's RAM


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _check(rc, what):
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, "%s: %s" % (what, os.strerror(err)))


def _mount(source, target, fstype, flags, data=None):
    enc = lambda x: x.encode() if x is not None else None  # noqa: E731
    _check(_libc().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           "mount " + target)


def _bind_ro(source, target, is_dir):
    """A read-only, non-recursive bind of ``source`` at ``target`` (the source's locked flags kept)."""
    if is_dir:
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
    _mount(source, target, None, _MS_BIND)
    kept = sum(flag for bit, flag in _ST_FLAGS if os.statvfs(source).f_flag & bit)
    _mount(None, target, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | kept)


def _jail_binds():
    """What the jail shows, read-only: the system directories and the interpreter's own prefix."""
    paths = list(_RO_DIRS)
    for prefix in (sys.base_prefix, os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))):
        prefix = os.path.realpath(prefix)
        if not any(prefix == p or prefix.startswith(p + "/") for p in paths):
            paths.append(prefix)
    return paths


def _enter_jail():
    """Mount a new root (read-only system directories, fresh /proc, minimal /dev, private tmpfs /tmp and /dev/shm),
    pivot into it, detach the old root, then drop privileges for good."""
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing we mount propagates to the host
    root = "/tmp"
    _mount("mel-root", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=1m")
    for path in _jail_binds():
        if os.path.islink(path):  # merged /usr: /lib -> usr/lib
            os.symlink(os.readlink(path), root + path)
        elif os.path.isdir(path):
            _bind_ro(path, root + path, True)
    os.makedirs(root + "/proc")
    _mount("proc", root + "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    os.makedirs(root + "/dev")
    _mount("mel-dev", root + "/dev", "tmpfs", _MS_NOSUID | _MS_NOEXEC, "mode=0755,size=64k")
    for name in _DEVICES:
        _bind_ro("/dev/" + name, root + "/dev/" + name, False)
        _mount(None, root + "/dev/" + name, None, _MS_REMOUNT | _MS_BIND | _MS_NOSUID | _MS_NOEXEC)  # writable
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, root + "/dev/" + name)
    for path in ("/tmp", "/dev/shm"):
        os.makedirs(root + path, exist_ok=True)
        _mount("mel-tmp", root + path, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=1777,size=%d" % JAIL_TMP_BYTES)
    os.makedirs(root + "/.old")
    os.chdir(root)
    number = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError("pivot_root: unknown system call number on " + os.uname().machine)
    _check(_libc().syscall(number, b".", b".old"), "pivot_root")
    os.chdir("/")
    _check(_libc().umount2(b"/.old", 2), "umount /.old")  # MNT_DETACH: the host's tree is gone from this namespace
    os.rmdir("/.old")
    _mount(None, "/", None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
    _drop_privileges()


def _drop_privileges():
    """No capability and no way back: the bounding and ambient sets emptied, uid/gid 65534 where we are the host's
    root (else the one mapped uid, with no capabilities), and no new privileges through exec."""
    libc = _libc()
    for cap in range(64):
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP (fails past the last capability: ignored)
    libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
    if _uid_map_is_host_root():
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    _check(libc.capset(header, (ctypes.c_uint32 * 6)()), "capset")  # effective, permitted, inheritable: empty
    _check(libc.prctl(38, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")


def _uid_map_is_host_root():
    """True when we are the host's root, outside a user namespace: then we can, and must, become uid 65534."""
    if os.getuid() != 0:
        return False
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() == ["0", "0", "4294967295"]
    except OSError:
        return False


def _probe_report():
    """``--probe``: ``ok 3.N`` only if the contract holds here (read-only root, no capability, own PID namespace)."""
    try:
        open("/mel-probe", "w").close()
        return "writable root"
    except OSError:
        pass
    with open("/proc/self/status") as f:
        caps = [line.split()[1] for line in f if line.startswith(("CapEff:", "CapPrm:", "CapBnd:"))]
    if any(int(c, 16) for c in caps):
        return "capabilities left: " + " ".join(caps)
    return "ok %d.%d" % sys.version_info[:2]


def main():
    flags = sys.argv[1:]
    if "--jail" in flags:
        try:
            _enter_jail()
        except OSError as e:
            sys.stderr.write("mel sandbox jail: %s\n" % e)
            sys.exit(3)
    if "--probe" in flags:
        sys.stdout.write((_probe_report() if "--jail" in flags else "ok %d.%d" % sys.version_info[:2]) + "\n")
        return
    _no_dump()
    _warm_up()
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    if flags[:1] == ["--connect"]:  # the docker backend: a Unix socket mounted into the container
        ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ctl.connect(flags[1])
    else:
        ctl = socket.socket(fileno=os.dup(0))
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # stray prints must not reach the control channel
        os.dup2(devnull, fd)
    serve(ctl)


if __name__ == "__main__":
    main()
