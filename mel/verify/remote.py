"""The host side of a sample: run trusted test code against a program living in a sandbox child.

The child (see ``_zygote.py``) holds the candidate's functions; here every name it defines becomes a proxy whose call
sends the plain arguments down the call pipe and rebuilds the reply -- a tagged value of exact builtin types -- as
fresh builtin objects. The test code (``assert`` statements, HumanEval's ``check``) runs in this process, so every
comparison, builtin and exception it uses is ours; nothing the candidate defines can decide a test. A name the
program defines that shadows a builtin (``def abs``, ``def sorted``) is not exported: the tests keep the real one.
"""
from __future__ import annotations

import ast
import builtins
import json
import os
import select
import struct
import sys
import time
from typing import Any

from mel.data.types import CodeTests
from mel.verify._zygote import NonPlain, _remote_exception, tag, untag

_BUILTIN_NAMES = frozenset(dir(builtins))
_CODE_CACHE: dict[str, Any] = {}


class SampleEnded(Exception):
    """The child stopped answering (it ended, was killed, or the deadline passed)."""


def _compiled(source: str, name: str):
    """Test code is trusted and repeats across the samples of a prompt: compile each text once."""
    code = _CODE_CACHE.get(source)
    if code is None:
        if len(_CODE_CACHE) > 1024:
            _CODE_CACHE.clear()
        code = _CODE_CACHE[source] = compile(source, name, "exec", dont_inherit=True)
    return code


def literal(text: str) -> Any:
    """``ast.literal_eval`` of trusted test data, also for integers longer than Python's decimal-digit limit."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:  # the parser reports the digit limit as a SyntaxError
        if "Exceeds the limit" not in str(exc) or not hasattr(sys, "set_int_max_str_digits"):
            raise
        previous = sys.get_int_max_str_digits()
        sys.set_int_max_str_digits(0)
        try:
            return ast.literal_eval(text)
        finally:
            sys.set_int_max_str_digits(previous)


def _err(e: BaseException) -> str:
    try:
        return f"{type(e).__name__}: {e}"[:500]
    except Exception:
        return type(e).__name__


class Remote:
    """The call and reply pipes of one sandbox child, with the sample's deadline."""

    def __init__(self, call_w: int, reply_r: int, deadline: float) -> None:
        self.call_w, self.reply_r, self.deadline = call_w, reply_r, deadline
        self.memory = False
        self.buffer = b""  # bytes read from the reply pipe and not consumed yet

    def send(self, obj: Any) -> None:
        data = json.dumps(obj).encode()
        data = struct.pack(">I", len(data)) + data
        try:
            while data:
                data = data[os.write(self.call_w, data):]
        except OSError as exc:  # the child is gone
            raise SampleEnded(str(exc)) from None

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self.reply_r], [], [], left)[0]:
                raise SampleEnded("deadline")
            chunk = os.read(self.reply_r, max(65536, n - len(self.buffer)))
            if not chunk:
                raise SampleEnded("the child ended")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def receive(self) -> dict:
        (n,) = struct.unpack(">I", self._read(4))
        if n > 64 << 20:
            raise SampleEnded("oversized reply")
        try:
            message = json.loads(self._read(n))
        except ValueError:
            raise SampleEnded("the program broke the sandbox protocol") from None
        if type(message) is not dict:
            raise SampleEnded("the program broke the sandbox protocol")
        return message

    def call(self, name: str, args: tuple) -> Any:
        try:
            tagged = [tag(a) for a in args]
        except NonPlain as e:
            raise TypeError(f"test passes a non-plain argument: {e}") from None
        self.send({"name": name, "args": tagged})
        reply = self.receive()
        if "error" in reply:
            self.memory = self.memory or bool(reply.get("memory"))
            exc = _remote_exception(str(reply["error"]), str(reply.get("message", "")))
            exc._mel_raised_by_candidate = not reply.get("nonplain")  # type: ignore[attr-defined]
            raise exc
        try:
            value = untag(reply["value"])
            after = [untag(a) for a in reply["args"]]
        except (KeyError, TypeError, ValueError, IndexError):
            raise SampleEnded("the program broke the sandbox protocol") from None
        for original, new in zip(args, after):  # in-place changes the function made to its list/dict arguments
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
        return remote


def _failure(e: BaseException) -> dict:
    return {"ok": False, "err": _err(e), "value": None,
            "raised": bool(getattr(e, "_mel_raised_by_candidate", False))}


def run_tests(remote: Remote, program: str, tests: CodeTests) -> dict:
    """Send the program, then run every test; ``{"status", "detail", "results"}`` (status "passed" means every test
    ran, not that every test passed: the verdict is decided by the caller)."""
    remote.send({"program": program, "setup": tests.setup_code})
    first = remote.receive()
    if "syntax_error" in first:
        return {"status": "syntax_error", "detail": str(first["syntax_error"]), "results": []}
    if "runtime_error" in first:
        return {"status": "memory" if first.get("memory") else "runtime_error",
                "detail": str(first["runtime_error"]), "results": []}
    exports = first.get("ready")
    if type(exports) is not dict:
        raise SampleEnded("the program broke the sandbox protocol")
    ns: dict[str, Any] = {"__name__": "__mel_tests__", "__builtins__": builtins}
    for name, kind in exports.items():
        # The program may not replace a builtin the tests use -- except the entry point itself, which the tests
        # name on purpose (MBPP 126 is a function called ``sum``).
        if type(name) is not str or (name in _BUILTIN_NAMES and name != tests.entry_point):
            continue
        try:
            ns[name] = remote.proxy(name) if kind == "call" else untag(kind[1])
        except (TypeError, ValueError, IndexError, KeyError):
            continue
    if tests.setup_code:
        exec(_compiled(tests.setup_code, "<setup>"), ns)
    results: list[dict] = []
    if tests.style == "io":
        if exports.get(tests.entry_point) != "call":
            return {"status": "failed", "detail": f"{tests.entry_point} is not defined", "results": []}
        fn = ns[tests.entry_point]
        for text in tests.inputs:
            try:
                results.append({"ok": None, "err": "", "value": fn(*literal(text))})
            except SampleEnded:
                raise
            except BaseException as e:  # noqa: BLE001 - a test that raises did not pass
                results.append(_failure(e))
        return {"status": "passed", "detail": "", "results": results}
    units = tests.asserts if tests.style == "assert" else (tests.check_code,)
    for unit in units:
        try:
            exec(_compiled(unit, "<test>"), ns)
            if tests.style == "check":
                if tests.entry_point not in ns:
                    raise NameError(f"{tests.entry_point} is not defined")
                ns["check"](ns[tests.entry_point])
            results.append({"ok": True, "err": "", "value": None})
        except SampleEnded:
            raise
        except BaseException as e:  # noqa: BLE001 - SystemExit from test code too: the test did not pass
            results.append(_failure(e))
    return {"status": "passed", "detail": "", "results": results}
