"""The host side of a sample: run trusted test code against a program living in a sandbox child.

The child (see ``_zygote.py``) holds the candidate's functions; here every name it defines becomes a proxy whose call
sends the plain arguments down the call pipe and rebuilds the reply -- a tagged value of exact builtin types -- as
fresh builtin objects. The test code (``assert`` statements, HumanEval's ``check``) runs in this process, so every
comparison, builtin and exception it uses is ours; nothing the candidate defines can decide a test. A name the
program defines that shadows a builtin (``def abs``, ``def sorted``) is not exported: the tests keep the real one --
except the entry point, which the tests name on purpose (MBPP 126's ``sum``).

Most calls need no round trip: the child makes the tests' PLANNED calls (``mel.verify.plan``) right after the program
defines, and streams their results; the test code, rewritten by the plan, reads result ``k`` where it made call
``k`` (`Remote.take`), and the calls after the planned prefix go through the proxies. The host checks that the tests
read the planned results in exactly plan order -- none skipped and a later one read (a short-circuit ``and``, an
exception earlier in the statement), no proxy call while planned results are left -- or else raises `Diverged`:
the child has made calls plain Python would not have made at that point, so the sample is run again without a plan
(``mel.verify.sandbox``). Results left unread when the tests stop are harmless: each was tagged before the next
call ran.
"""
from __future__ import annotations

import builtins
import functools
import json
import marshal
import os
import select
import struct
import time
from importlib.util import MAGIC_NUMBER
from types import CodeType
from typing import Any

from mel.data.types import CodeTests
from mel.verify._zygote import NonPlain, _remote_exception, tag, thunk_source, untag
from mel.verify.plan import PLANNED, Plan, PlannedCall, literal

_BUILTIN_NAMES = frozenset(dir(builtins))


class SampleEnded(Exception):
    """The child stopped answering (it ended, was killed, or the deadline passed)."""


def _err(e: BaseException) -> str:
    try:
        return f"{type(e).__name__}: {e}"[:500]
    except Exception:
        return type(e).__name__


class Diverged(BaseException):
    """The tests did not read the planned results in plan order (a result skipped and a later one read, or a proxy
    call while planned results are left): the run is discarded and the sample run again without a plan. A
    BaseException, so that test code's ``except Exception`` does not hide it (``Remote.diverged`` records it too)."""


class Remote:
    """The call and reply pipes of one sandbox child, with the sample's deadline and the results of its plan."""

    def __init__(self, call_w: int, reply_r: int, deadline: float) -> None:
        self.call_w, self.reply_r, self.deadline = call_w, reply_r, deadline
        self.memory = False
        self.buffer = bytearray()  # bytes read from the reply pipe and not consumed yet
        self.calls: tuple[PlannedCall, ...] = ()  # the planned calls; their replies come first, in this order
        self.consumed = 0  # planned replies read so far
        self.diverged = False
        self.proxies: dict[str, Any] = {}  # program name -> its proxy

    @property
    def pending(self) -> int:
        """Planned replies not read (the child may still be computing them)."""
        return len(self.calls) - self.consumed

    def send(self, obj: Any) -> None:
        """A frame down the call pipe (``marshal``: plain data of this process, read by the child)."""
        data = marshal.dumps(obj)
        data = struct.pack(">I", len(data)) + data
        try:
            while data:
                data = data[os.write(self.call_w, data):]
        except OSError as exc:  # the child is gone
            raise SampleEnded(str(exc)) from None

    def _fill(self, n: int) -> None:
        """Read from the reply pipe until ``n`` bytes are buffered (whatever else has arrived is kept too)."""
        while len(self.buffer) < n:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self.reply_r], [], [], left)[0]:
                raise SampleEnded("deadline")
            chunk = os.read(self.reply_r, max(65536, n - len(self.buffer)))
            if not chunk:
                raise SampleEnded("the child ended")
            self.buffer += chunk

    def receive(self) -> dict:
        if len(self.buffer) < 4:
            self._fill(4)
        end = 4 + int.from_bytes(self.buffer[:4], "big")
        if end > 4 + (64 << 20):
            raise SampleEnded("oversized reply")
        if len(self.buffer) < end:
            self._fill(end)
        data = self.buffer[4:end]
        del self.buffer[:end]
        try:
            message = json.loads(data.decode())
        except ValueError:  # UnicodeDecodeError included
            raise SampleEnded("the program broke the sandbox protocol") from None
        if type(message) is not dict:
            raise SampleEnded("the program broke the sandbox protocol")
        return message

    def _diverge(self) -> None:
        self.diverged = True
        raise Diverged

    def _skip_to(self, k: int) -> None:
        """Read the planned replies before ``k`` that the tests skipped: harmless only where nothing ran in the
        child (a name neither side could find); anything else means the child ran calls plain Python would not
        have run at this point."""
        if self.diverged or self.consumed > k:
            self._diverge()
        while self.consumed < k:
            try:
                reply = self.receive()
            except SampleEnded:  # the child died (or hangs) in a call the tests never made
                self._diverge()
            self.consumed += 1
            if reply.get("unbound") is not True:
                self._diverge()

    def take(self, k: int, function: Any) -> Any:
        """The tests' ``__mel_planned__(k, f)``: the result of planned call ``k``, as a proxy call would give it. ``f``
        is what the tests' own name lookup found (the lookup raised if the program does not define the name)."""
        if function is not self.proxies.get(self.calls[k].name):  # the host's name is not the child's function
            self._diverge()
        self._skip_to(k)
        reply = self.receive()
        self.consumed += 1
        return self._result(reply)

    def call(self, name: str, args: tuple) -> Any:
        self._skip_to(len(self.calls))  # a proxy call comes after every planned one
        try:
            tagged = [tag(a) for a in args]
        except NonPlain as e:
            raise TypeError(f"test passes a non-plain argument: {e}") from None
        self.send({"name": name, "args": tagged})
        return self._result(self.receive(), args)

    def _result(self, reply: dict, args: tuple | None = None) -> Any:
        """The fresh value of a reply, or its exception raised; for a proxy call (``args``), the in-place changes the
        function made to its list/dict arguments copied back."""
        if "error" in reply:
            self.memory = self.memory or bool(reply.get("memory"))
            exc = _remote_exception(str(reply["error"]), str(reply.get("message", "")))
            exc._mel_raised_by_candidate = not reply.get("nonplain")  # type: ignore[attr-defined]
            raise exc
        try:
            value = untag(reply["value"])
            after = [untag(a) for a in reply["args"]] if args is not None else []
        except (KeyError, TypeError, ValueError, IndexError):
            raise SampleEnded("the program broke the sandbox protocol") from None
        for original, new in zip(args or (), after):
            if type(original) is list and type(new) is list:
                original[:] = new
            elif type(original) is dict and type(new) is dict:
                original.clear()
                original.update(new)
        return value

    def proxy(self, name: str):
        def remote(*args, **kwargs):
            if kwargs:
                raise TypeError("keyword arguments are not supported by the sandbox proxy")
            return self.call(name, args)

        remote.__name__ = name
        self.proxies[name] = remote
        return remote


def _failure(e: BaseException) -> dict:
    return {"ok": False, "err": _err(e), "value": None,
            "raised": bool(getattr(e, "_mel_raised_by_candidate", False))}


def run_tests(remote: Remote, program: str, tests: CodeTests, plan: Plan) -> dict:
    """Send the program and the planned calls, then run every test; ``{"status", "detail", "results"}`` (status
    "passed" means every test ran, not that every test passed: the verdict is decided by the caller). Raises
    `Diverged` when the tests did not read the planned results in plan order."""
    remote.calls = plan.calls
    remote.send({"program": program, "setup": tests.setup_code, "calls": [[c.name, c.source] for c in plan.calls],
                 "entry_point": plan.entry_point, "param": plan.param, "literal": plan.literal,
                 "thunks": None if plan.literal else _compiled_calls(tuple(c.source for c in plan.calls), plan.param)})
    first = remote.receive()
    if "syntax_error" in first:
        return {"status": "syntax_error", "detail": str(first["syntax_error"]), "results": []}
    if "runtime_error" in first:
        return {"status": "memory" if first.get("memory") else "runtime_error",
                "detail": str(first["runtime_error"]), "results": []}
    exports = first.get("ready")
    if type(exports) is not dict:
        raise SampleEnded("the program broke the sandbox protocol")
    ns: dict[str, Any] = {"__name__": "__mel_tests__", "__builtins__": builtins, PLANNED: remote.take}
    for name, kind in exports.items():
        # The program may not replace a builtin the tests use -- except the entry point itself, which the tests
        # name on purpose (MBPP 126 is a function called ``sum``) -- nor a dunder name (``__builtins__``, the
        # planned-result reader): the child exports none, so such a name is a forged message.
        if type(name) is not str or name.startswith("__") or (name in _BUILTIN_NAMES and name != plan.entry_point):
            continue
        try:
            ns[name] = remote.proxy(name) if kind == "call" else untag(kind[1])
        except (TypeError, ValueError, IndexError, KeyError):
            continue
    if plan.setup is not None:
        exec(plan.setup, ns)
    results = _run_io(remote, tests, plan, ns, exports) if tests.style == "io" else _run_units(tests, plan, ns)
    if remote.diverged:  # the test code caught Diverged and went on
        raise Diverged
    return results


@functools.lru_cache(maxsize=1024)
def _compiled_calls(sources: tuple[str, ...], param: str) -> tuple[bytes, list[str], bytes] | None:
    """The planned calls' thunks (``_zygote.thunk_source``) compiled once per test spec here, for the child to load
    instead of compiling them for every sample: ``(bytecode magic, parameters, marshalled code)``; the child compiles
    the source itself where its interpreter's magic differs (a container's Python)."""
    if not sources:
        return None
    params = [param] if param else []
    try:
        code = compile(thunk_source(params, sources), "<test>", "eval", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None  # the child compiles them one by one, as without this
    return MAGIC_NUMBER, params, marshal.dumps(code)


def _run_io(remote: Remote, tests: CodeTests, plan: Plan, ns: dict, exports: dict) -> dict:
    if exports.get(plan.entry_point) != "call":
        return {"status": "failed", "detail": f"{plan.entry_point} is not defined", "results": []}
    fn = ns[plan.entry_point]
    results: list[dict] = []
    for k, text in enumerate(tests.inputs):
        try:
            value = remote.take(k, fn) if k < len(plan.calls) else fn(*literal(text))
            results.append({"ok": None, "err": "", "value": value})
        except (SampleEnded, Diverged):
            raise
        except BaseException as e:  # noqa: BLE001 - a test that raises did not pass
            results.append(_failure(e))
    return {"status": "passed", "detail": "", "results": results}


def _run_units(tests: CodeTests, plan: Plan, ns: dict) -> dict:
    results: list[dict] = []
    for unit in plan.units:
        try:
            exec(unit if isinstance(unit, CodeType) else compile(unit, "<test>", "exec", dont_inherit=True), ns)
            if tests.style == "check":
                if plan.entry_point not in ns:
                    raise NameError(f"{plan.entry_point} is not defined")
                ns["check"](ns[plan.entry_point])
            results.append({"ok": True, "err": "", "value": None})
        except (SampleEnded, Diverged):
            raise
        except BaseException as e:  # noqa: BLE001 - SystemExit from test code too: the test did not pass
            results.append(_failure(e))
    return {"status": "passed", "detail": "", "results": results}
