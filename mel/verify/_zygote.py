"""Sandbox worker, executed BY PATH inside the isolation wrapper: ``python -I -S _zygote.py``. Standard library only.

The worker is trusted: it never runs candidate code. For each sample it forks a CHILD that runs the candidate program
and answers calls; the worker itself evaluates the (trusted) test code, in which every name the program defines is a
proxy: calling it sends plain arguments to the child, which calls the real function and sends back the returned
value as tagged plain data (exact builtin types only), rebuilt here as fresh builtin objects. So comparisons,
``assert``, ``isinstance``, builtins, exceptions: all of it happens in this process on plain values; nothing the
candidate defines (a custom ``__eq__``, a patched builtin, a forged message) can decide a test. Forging a reply only
forges a *value*, which passes only if it is the right answer.

Ordering that keeps the tests away from the candidate: a sample arrives as two frames; the worker reads the first
(program, setup, limits) with exact-length reads, forks the child, and only then reads the second (tests) -- the child
closes every inherited descriptor before the program runs, so it never holds the tests, not even in memory. The
worker is made non-dumpable, so a child cannot read its memory or descriptors through /proc or ptrace it.

Host protocol: frames = 4-byte big-endian length + JSON, on stdin (host -> worker) and stdout (worker -> host):
    host:   {"program", "setup", "entry_point", "timeout_s", "memory_mb", "nproc", "sweep"}
    host:   {"style": "io"|"assert"|"check", "inputs" | "asserts" | "check_code"}
    worker: {"status", "detail", "results": [{"ok": bool|null, "err": str, "value": tagged|null}], "output", "seconds"}
For io tests ``ok`` is null: the host compares ``value`` with expected outputs that never enter the sandbox.
"""
import ast
import builtins
import collections
import ctypes
import json
import os
import resource
import select
import shutil
import signal
import struct
import sys
import time

# Pre-imported so candidates that import them start fast in the forked child.
import bisect, functools, heapq, itertools, math, random, re, string, typing  # noqa: E401,F401

_type = type
OUTPUT_LIMIT = 8 << 20  # bytes of stdout+stderr a sample may write
KEEP_OUTPUT = 2000
_MAX_DEPTH, _MAX_NODES = 100, 2_000_000
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


def read_frame(fd):
    (n,) = struct.unpack(">I", _read_exact(fd, 4))
    return json.loads(_read_exact(fd, n))


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
def _child(job, chan_w, call_r, out_w, scratch):
    """Runs in the forked child: set limits, drop every inherited descriptor, run the program, answer calls."""
    os.setsid()
    os.dup2(out_w, 1)
    os.dup2(out_w, 2)
    keep = sorted({1, 2, chan_w, call_r})
    for lo, hi in zip([0] + [k + 1 for k in keep], keep + [4096]):
        if lo < hi:
            os.closerange(lo, hi)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.chdir(scratch)
    mb = 1024 * 1024
    cpu = int(job["timeout_s"]) + 1
    limits = [(resource.RLIMIT_CPU, cpu, cpu + 1), (resource.RLIMIT_AS, job["memory_mb"] * mb, job["memory_mb"] * mb),
              (resource.RLIMIT_FSIZE, 16 * mb, 16 * mb), (resource.RLIMIT_NOFILE, 64, 64), (resource.RLIMIT_CORE, 0, 0)]
    if job.get("nproc"):
        limits.append((resource.RLIMIT_NPROC, job["nproc"], job["nproc"]))
    for which, soft, hard in limits:
        resource.setrlimit(which, (soft, hard))
    wanted = {"PATH": "/usr/bin:/bin", "HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8"}
    for key in [k for k in os.environ if k not in wanted]:  # the worker's environment is clean already
        del os.environ[key]
    os.environ.update(wanted)
    sys.argv = ["solution.py"]
    send = lambda obj: write_frame(chan_w, obj)  # noqa: E731
    ns = {"__name__": "__main__", "__builtins__": builtins}
    try:
        program = compile(job["program"], "<solution>", "exec", dont_inherit=True)
    except BaseException as e:
        send({"syntax_error": _err(e)})
        os._exit(0)
    try:
        if job.get("setup"):
            exec(compile(job["setup"], "<setup>", "exec", dont_inherit=True), ns)
        exec(program, ns)
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
    while True:
        try:
            request = read_frame(call_r)
        except EOFError:
            os._exit(0)
        try:
            args = [untag(a) for a in request["args"]]
            value = ns[request["name"]](*args)
            try:
                reply = {"value": tag(value), "args": [tag(a) for a in args]}
            except NonPlain as e:
                reply = {"error": "TypeError", "message": "returned a " + str(e), "nonplain": True}
        except BaseException as e:  # the call raised, exited, or was interrupted: an exception in the test
            reply = {"error": _type(e).__name__, "message": _err(e), "memory": isinstance(e, MemoryError)}
        send(reply)


# ---------------------------------------------------------------------------------------------------- the worker
class SampleOver(Exception):
    """The sample ends now with this status (timeout, output limit, child gone)."""

    def __init__(self, status, detail):
        super().__init__(detail)
        self.status, self.detail = status, detail


class Session:
    """One sample: the child process, its channels, the deadline and the captured output."""

    def __init__(self, job):
        self.job = job
        self.deadline = time.monotonic() + job["timeout_s"]
        self.scratch = "/tmp/mel-sample-%d-%d" % (os.getpid(), time.monotonic_ns())
        os.mkdir(self.scratch, 0o700)
        chan_r, chan_w = os.pipe()
        call_r, call_w = os.pipe()
        out_r, out_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                _child(job, chan_w, call_r, out_w, self.scratch)
            finally:
                os._exit(1)
        for fd in (chan_w, call_r, out_w):
            os.close(fd)
        self.chan_r, self.call_w, self.out_r = chan_r, call_w, out_r
        self.output = bytearray()
        self.output_bytes = 0
        self.memory = False

    def _pump_output(self):
        data = os.read(self.out_r, 65536)
        self.output_bytes += len(data)
        if len(self.output) < KEEP_OUTPUT:
            self.output += data[: KEEP_OUTPUT - len(self.output)]
        if self.output_bytes > OUTPUT_LIMIT:
            raise SampleOver("output_limit", "the program wrote more than %d bytes" % OUTPUT_LIMIT)
        return bool(data)

    def receive(self):
        """The child's next frame, draining its output meanwhile; SampleOver on timeout or a dead child."""
        header = b""
        while True:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise SampleOver("timeout", "wall-clock limit of %.1fs reached" % self.job["timeout_s"])
            ready, _, _ = select.select([self.chan_r, self.out_r], [], [], left)
            if self.out_r in ready and not self._pump_output():
                pass
            if self.chan_r in ready:
                chunk = os.read(self.chan_r, 4 - len(header))
                if not chunk:
                    raise SampleOver(*self._death())
                header += chunk
                if len(header) == 4:
                    (n,) = struct.unpack(">I", header)
                    body = self._read_body(n)
                    try:
                        message = json.loads(body)
                        if type(message) is not dict:
                            raise ValueError("not an object")
                        return message
                    except ValueError:  # the program tampered with its side of the protocol
                        raise SampleOver("runtime_error", "the program broke the sandbox protocol") from None

    def _read_body(self, n):
        body = b""
        while len(body) < n:
            chunk = os.read(self.chan_r, n - len(body))
            if not chunk:
                raise SampleOver(*self._death())
            body += chunk
        return body

    def _death(self):
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            return "runtime_error", "the program's process ended"
        self.pid = 0
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig in (signal.SIGXCPU,):
                return "timeout", "CPU-time limit reached"
            if sig in (signal.SIGKILL, signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT):
                return "memory" if self.memory else "runtime_error", "killed by signal %d" % sig
            return "runtime_error", "killed by signal %d" % sig
        return "runtime_error", "the program exited (status %d) while being tested" % os.WEXITSTATUS(status)

    def call(self, name, args):
        try:
            tagged = [tag(a) for a in args]
        except NonPlain as e:
            raise TypeError("test passes a non-plain argument: %s" % e) from None
        write_frame(self.call_w, {"name": name, "args": tagged})
        reply = self.receive()
        if "error" in reply:
            if reply.get("memory"):
                self.memory = True
            exc = _remote_exception(reply["error"], reply["message"])
            exc._mel_raised_by_candidate = not reply.get("nonplain")
            raise exc
        for original, after in zip(args, reply["args"]):  # in-place changes the function made to its arguments
            new = untag(after)
            if type(original) is list and type(new) is list:
                original[:] = new
            elif type(original) is dict and type(new) is dict:
                original.clear()
                original.update(new)
        return untag(reply["value"])

    def close(self):
        for fd in (self.chan_r, self.call_w, self.out_r):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.pid:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
        if self.job.get("sweep"):
            _sweep()
        while True:  # reap anything else of ours
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        shutil.rmtree(self.scratch, ignore_errors=True)


def _failure(e):
    """A test that did not pass; ``raised`` when the candidate's own code raised (a runtime error, not a wrong
    answer)."""
    return {"ok": False, "err": _err(e), "value": None, "raised": bool(getattr(e, "_mel_raised_by_candidate", False))}


def _remote_exception(name, message):
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, BaseException) and cls not in (SystemExit, KeyboardInterrupt):
        try:
            return cls(message)
        except BaseException:
            pass
    return RuntimeError(message)


def _sweep():
    """In a PID namespace of our own: kill every process but this one and its ancestors (escaped children)."""
    me = os.getpid()
    keep = {me, 1, os.getppid()}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in keep:
            try:
                os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass


def _proxy(session, name):
    def remote(*args, **kwargs):
        if kwargs:
            raise TypeError("keyword arguments are not supported by the sandbox proxy")
        return session.call(name, args)

    remote.__name__ = name
    return remote


_CODE_CACHE = {}


def _compiled(source, name):
    """Test code is trusted and repeats across the samples of a prompt: compile each text once."""
    code = _CODE_CACHE.get(source)
    if code is None:
        if len(_CODE_CACHE) > 512:
            _CODE_CACHE.clear()
        code = _CODE_CACHE[source] = compile(source, name, "exec", dont_inherit=True)
    return code


def evaluate(session, job, tests):
    """Run the tests against the session's child; the verdict fields for the host."""
    results = []
    status, detail = "passed", ""
    try:
        first = session.receive()
        if "syntax_error" in first:
            return {"status": "syntax_error", "detail": first["syntax_error"], "results": []}
        if "runtime_error" in first:
            return {"status": "memory" if first["memory"] else "runtime_error", "detail": first["runtime_error"],
                    "results": []}
        ns = {"__name__": "__mel_tests__", "__builtins__": builtins}
        if job.get("setup"):
            exec(_compiled(job["setup"], "<setup>"), ns)
        for name, kind in first["ready"].items():
            ns[name] = _proxy(session, name) if kind == "call" else untag(kind[1])
        entry = job["entry_point"]
        style = tests["style"]
        if style == "io":
            if first["ready"].get(entry) != "call":
                return {"status": "failed", "detail": "%s is not defined" % entry, "results": []}
            for text in tests["inputs"]:
                try:
                    results.append({"ok": None, "err": "", "value": tag(ns[entry](*ast.literal_eval(text)))})
                except SampleOver:
                    raise
                except BaseException as e:
                    results.append(_failure(e))
        else:
            units = tests["asserts"] if style == "assert" else [tests["check_code"]]
            for unit in units:
                try:
                    exec(_compiled(unit, "<test>"), ns)
                    if style == "check":
                        if entry not in ns:
                            raise NameError("%s is not defined" % entry)
                        ns["check"](ns[entry])
                    results.append({"ok": True, "err": "", "value": None})
                except SampleOver:
                    raise
                except BaseException as e:
                    results.append(_failure(e))
    except SampleOver as over:
        status, detail = over.status, over.detail
    if status == "passed" and session.memory:
        status = "memory"
    return {"status": status, "detail": detail, "results": results}


def _no_dump():
    try:
        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except Exception:
        pass


def _warm_up():
    """Pay the one-time costs (parser, compiler, json, tagging) once here instead of in every forked child, then move
    everything allocated so far out of the garbage collector's reach (``gc.freeze``), so a child's collections do not
    touch -- and copy -- the worker's memory pages."""
    import gc

    source = "def f(x, y=2):\n    return [i * y for i in range(x) if i % 2] + list({1: 'a'}.items())\n"
    for _ in range(20):
        ns = {"__builtins__": builtins}
        exec(compile(source, "<warm>", "exec", dont_inherit=True), ns)
        untag(json.loads(json.dumps(tag(ns["f"](5)))))
    gc.collect()
    gc.freeze()


def main():
    if sys.argv[1:] == ["--probe"]:
        sys.stdout.write("ok %d.%d\n" % sys.version_info[:2])
        return
    _no_dump()
    _warm_up()
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    stdin, stdout = 0, os.dup(1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # stray prints must not corrupt the frame channel
    while True:
        try:
            job = read_frame(stdin)
        except EOFError:
            return
        t0 = time.monotonic()
        session = None
        try:
            session = Session(job)  # forks the child ...
            tests = read_frame(stdin)  # ... and only then are the tests read
            result = evaluate(session, job, tests)
        except EOFError:
            return
        except BaseException as e:
            result = {"status": "sandbox_error", "detail": _err(e), "results": []}
        finally:
            if session is not None:
                session.close()
        result.update(output=bytes(session.output).decode("utf-8", "replace") if session else "",
                      seconds=time.monotonic() - t0)
        write_frame(stdout, result)


if __name__ == "__main__":
    main()
