"""Math and regex verifiers.

`verify_math`: the answer is extracted with `extract_answer` (none -> status ``no_answer``). An answer that is the
gold's own text (whitespace and enclosing ``$`` aside) or a plain number (``-3``, ``2.50``, ``5/8``, ``\\frac{5}{8}``)
of exactly the gold's value passes at once (`_surely_equal`: it only ever decides a pass, on which math-verify agrees;
an identical gold that math-verify cannot parse also passes). Everything else --
``math_verify.verify(parse(gold), parse(answer))`` decides, GOLD FIRST (math-verify's comparison is not symmetric).
The extracted answer is parsed as ``\\boxed{answer}`` and a gold without ``$``/``\\boxed`` as ``$gold$`` so that LaTeX
and plain numbers both parse. math-verify's own timeouts use ``signal.alarm`` (which fails outside the main thread), so
it is called with them disabled (``parsing_timeout=None``, ``timeout_seconds=None``) inside a pool of worker
PROCESSES, each a fresh interpreter (spawn semantics: safe when the caller has torch/OpenMP threads; started with
``subprocess`` rather than ``multiprocessing`` so a caller's unguarded ``__main__`` is never re-imported) talking JSON
lines over pipes. A worker holds up to ``_DEPTH`` items (so it never idles waiting for the parent between items) and
keeps the parses of golds/answers it has seen (``parse`` is deterministic; a group of samples shares one gold). The
parent enforces a hard per-item timeout: the item a worker is running past ``timeout_s`` is answered ``timeout``, the
worker killed and replaced, and the items queued behind it go back to the queue, so no item can stall the others.
The pool persists between calls (sympy takes ~0.5 s to import); `shutdown_math_workers` stops it (also run at exit).
Decided results (passed/failed, not timeouts) are cached in-process by ``(gold, prediction text)`` and identical
(gold, answer) items of one call are verified once; `clear_math_caches` forgets all of it. Calls are serialized by a
lock (safe from Prefect's thread-based task runner); each call spreads its items over the workers.

`verify_regex`: passed iff ``re.match(pattern, completion.strip())``; patterns come from trusted task definitions.
"""
from __future__ import annotations

import atexit
import collections
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Sequence

from mel.verify.extract import extract_answer
from mel.verify.types import Verdict

__all__ = ["verify_math", "verify_regex", "shutdown_math_workers", "clear_math_caches"]

_STARTUP_LIMIT_S = 120.0
_DEPTH = 2  # items a worker holds at once (see `_Pool`)
_CACHE_MAX = 200_000
_PARSE_CACHE_MAX = 20_000  # parsed golds/answers a worker keeps
_cache: dict[tuple[str, str], Verdict] = {}
_cache_lock = threading.Lock()
_pool_lock = threading.Lock()


def _gold_text(gold: str) -> str:
    return gold if ("$" in gold or "\\boxed" in gold) else f"${gold}$"


def _same_text(answer: str, gold: str) -> bool:
    """The extracted answer is the gold text itself (runs of whitespace and enclosing ``$`` aside)."""
    return " ".join(answer.strip().strip("$").split()) == " ".join(gold.strip().strip("$").split())


_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
_RATIO = re.compile(r"([-+]?\d+)\s*/\s*(\d+)|([-+]?)\\[dt]?frac\{(\d+)\}\{(\d+)\}")


def _plain_value(text: str) -> Fraction | None:
    """The exact value of a plain number (``-12``, ``3.50``, ``7/8``, ``\\frac{7}{8}``), else None."""
    text = text.strip().strip("$").strip()
    try:
        if _NUMBER.fullmatch(text):
            return Fraction(text)
        m = _RATIO.fullmatch(text)
        if m and m.group(1) is not None:
            return Fraction(int(m.group(1)), int(m.group(2)))
        if m:
            return Fraction(int(m.group(3) + m.group(4)), int(m.group(5)))
    except (ValueError, ZeroDivisionError):
        return None
    return None


def _surely_equal(answer: str, gold: str) -> bool:
    """Equal without math-verify: the gold's own text, or the same exact value as plain numbers. Only ever decides a
    pass (math-verify agrees on these); everything else, every failure included, goes to math-verify."""
    if _same_text(answer, gold):
        return True
    a = _plain_value(answer)
    return a is not None and a == _plain_value(gold)


def _worker_loop() -> None:
    """Worker main: JSON lines ``[id, gold, answer]`` on stdin -> ``[id, ok, detail]`` on the original stdout."""
    import logging
    import os
    import sys

    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # anything printed by libraries goes to stderr, never into the protocol

    def send(obj: Any) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    try:
        from math_verify import parse, verify
    except Exception as e:  # noqa: BLE001
        send(["init_error", f"{type(e).__name__}: {e}"])
        return
    parsed: dict[str, Any] = {}  # parse() is deterministic: a gold or answer seen before is not parsed again

    def parse_once(text: str) -> Any:
        if text not in parsed:
            if len(parsed) >= _PARSE_CACHE_MAX:
                parsed.clear()
            parsed[text] = parse(text, parsing_timeout=None)
        return parsed[text]

    send(["ready"])
    for line in sys.stdin:
        msg = json.loads(line)
        if msg == ["clear"]:  # see `clear_math_caches`; no reply
            from sympy.core.cache import clear_cache

            parsed.clear()
            clear_cache()
            continue
        key, gold, answer = msg
        try:
            g = parse_once(_gold_text(gold))
            p = parse_once("\\boxed{" + answer + "}")
            if not g:
                send([key, False, f"gold {gold!r} did not parse"])
            elif not p:
                send([key, False, f"answer {answer!r} did not parse"])
            else:
                ok = bool(verify(g, p, timeout_seconds=None))
                send([key, ok, "" if ok else f"answer {answer!r} does not match gold {gold!r}"])
        except Exception as e:  # noqa: BLE001
            send([key, False, f"{type(e).__name__}: {e}"[:500]])


_BOOT = ("import json, sys; sys.path[:0] = json.loads(sys.argv[1]); "
         "from mel.verify.math import _worker_loop; _worker_loop()")


@dataclass
class _Worker:
    proc: subprocess.Popen
    started: float
    buf: bytes = b""
    ready: bool = False
    inflight: collections.deque = field(default_factory=collections.deque)  # written items, answered in this order
    since: float = 0.0  # when the head of ``inflight`` started (its write, or the reply to the item before it)


class _Pool:
    """Persistent worker processes (fresh interpreters, so an unguarded ``__main__`` is never re-imported).

    Each worker holds up to ``_DEPTH`` items at once (written in one go, answered in order), so it never waits for the
    parent between items; only the head item runs, and its clock starts when the previous reply arrived. A head item
    over the timeout is answered ``timeout``, its worker killed and replaced, and the items queued behind it in that
    worker go back to the front of the queue (they never ran).
    """

    def __init__(self) -> None:
        self.workers: list[_Worker] = []

    def _start(self) -> _Worker:
        proc = subprocess.Popen([sys.executable, "-c", _BOOT, json.dumps(sys.path)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True)
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        w = _Worker(proc, time.monotonic())
        self.workers.append(w)
        return w

    def _kill(self, w: _Worker) -> None:
        if w in self.workers:
            self.workers.remove(w)
        try:
            w.proc.kill()
            w.proc.wait(5)
        except Exception:  # noqa: BLE001
            pass
        for f in (w.proc.stdin, w.proc.stdout):
            try:
                f.close()  # type: ignore[union-attr]
            except Exception:  # noqa: BLE001
                pass

    def shutdown(self) -> None:
        for w in list(self.workers):
            self._kill(w)

    def clear(self) -> None:
        """Ask every idle worker to empty its caches (it acts on it before its next item); a dead one is replaced."""
        for w in list(self.workers):
            try:
                w.proc.stdin.write(b'["clear"]\n')  # type: ignore[union-attr]
                w.proc.stdin.flush()  # type: ignore[union-attr]
            except Exception:  # noqa: BLE001
                self._kill(w)

    def _messages(self, w: _Worker) -> list[Any] | None:
        """Complete messages from a readable worker; None at EOF (the worker died)."""
        try:
            data = os.read(w.proc.stdout.fileno(), 65536)  # type: ignore[union-attr]
        except BlockingIOError:
            return []
        if not data:
            return None
        *lines, w.buf = (w.buf + data).split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    def run(self, items: list[tuple[str, str, str]], timeout_s: float, n_workers: int
            ) -> dict[tuple[str, str, str], tuple[str, str, float]]:
        """(id, gold, answer) items -> {item: (status, detail, seconds)}; never raises on item content."""
        results: dict[tuple[str, str, str], tuple[str, str, float]] = {}
        queue = collections.deque(items)
        restarts_left = 2 * len(items) + n_workers + 2

        def retire(w: _Worker, status: str, detail: str, now: float) -> None:
            """Kill ``w``: its head item gets ``status``; the items behind it never ran and go back to the queue."""
            if w.inflight:
                results[w.inflight.popleft()] = (status, detail, now - w.since)
                queue.extendleft(reversed(w.inflight))
                w.inflight.clear()
            self._kill(w)

        while len(self.workers) < n_workers:
            self._start()
        while queue or any(w.inflight for w in self.workers):
            now = time.monotonic()
            for w in list(self.workers):
                if w.ready and queue and len(w.inflight) < _DEPTH:
                    batch = [queue.popleft() for _ in range(min(_DEPTH - len(w.inflight), len(queue)))]
                    if not w.inflight:
                        w.since = now
                    w.inflight.extend(batch)
                    try:
                        lines = "".join(json.dumps(list(it)) + "\n" for it in batch)
                        w.proc.stdin.write(lines.encode())  # type: ignore[union-attr]
                        w.proc.stdin.flush()  # type: ignore[union-attr]
                    except Exception:  # noqa: BLE001 - dead worker: requeue everything it held, replace below
                        queue.extendleft(reversed(w.inflight))
                        w.inflight.clear()
                        self._kill(w)
                elif not w.ready and now - w.started > _STARTUP_LIMIT_S:
                    self._kill(w)
            waits = [w.since + timeout_s - now for w in self.workers if w.inflight] + [0.5]
            by_fd = {w.proc.stdout.fileno(): w for w in self.workers}  # type: ignore[union-attr]
            readable, _, _ = select.select(list(by_fd), [], [], max(0.0, min(waits))) if by_fd else ([], [], [])
            now = time.monotonic()
            for fd in readable:
                w = by_fd[fd]
                try:
                    msgs = self._messages(w)
                except Exception:  # noqa: BLE001 - garbage on the protocol: treat like a dead worker
                    msgs = None
                if msgs is None:
                    retire(w, "sandbox_error", "math worker died", now)
                    continue
                for msg in msgs:
                    if msg[0] == "ready":
                        w.ready = True
                    elif msg[0] == "init_error":
                        for item in [*queue, *(it for x in self.workers for it in x.inflight)]:
                            results[item] = ("sandbox_error", f"math worker cannot start: {msg[1]}", 0.0)
                        self.shutdown()
                        return results
                    elif w.inflight and msg[0] == w.inflight[0][0]:
                        results[w.inflight.popleft()] = ("passed" if msg[1] else "failed", str(msg[2]), now - w.since)
                        w.since = now
            for w in [w for w in self.workers if w.inflight and now - w.since > timeout_s]:
                retire(w, "timeout", f"math-verify took over {timeout_s} s", now)
            while len(self.workers) < n_workers and restarts_left > 0:
                restarts_left -= 1
                self._start()
            if not self.workers:
                for item in queue:
                    results[item] = ("sandbox_error", "no math worker could be started", 0.0)
                return results
        return results


_pool: _Pool | None = None


def shutdown_math_workers() -> None:
    """Stop the persistent math worker processes (a later `verify_math` starts new ones)."""
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool.shutdown()
            _pool = None


atexit.register(shutdown_math_workers)


def clear_math_caches() -> None:
    """Forget every remembered result: the in-process verdict cache, and the workers' parsed golds/answers and sympy
    caches (the workers stay up). For benchmarks and tests that must measure or exercise cold caches."""
    with _cache_lock:
        _cache.clear()
    with _pool_lock:
        if _pool is not None:
            _pool.clear()


def verify_math(predictions: Sequence[str], golds: Sequence[str], *, timeout_s: float = 5.0,
                workers: int = 2) -> list[Verdict]:
    """One verdict per (raw prediction, gold answer), in order."""
    global _pool
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions but {len(golds)} gold answers")
    out: list[Verdict | None] = [None] * len(predictions)
    pending: dict[tuple[str, str], list[int]] = {}  # one work item per distinct (gold, answer)
    for i, (pred, gold) in enumerate(zip(predictions, golds)):
        pred, gold = str(pred), str(gold)
        with _cache_lock:
            hit = _cache.get((gold, pred))
        if hit is not None:
            out[i] = replace(hit, seconds=0.0)
            continue
        answer = extract_answer(pred)
        if answer is None:
            out[i] = Verdict(False, "no_answer", "no \\boxed{} answer or number in the completion", 0, 1)
            continue
        if _surely_equal(answer, gold):  # passed without a worker round trip (see `_surely_equal`)
            out[i] = Verdict(True, "passed", "", 1, 1, 0.0)
            continue
        pending.setdefault((gold, answer), []).append(i)
    if pending:
        items = [(str(n), gold, answer) for n, (gold, answer) in enumerate(pending)]  # the id pairs replies to items
        with _pool_lock:
            if _pool is None:
                _pool = _Pool()
            results = _pool.run(items, timeout_s, max(1, min(workers, len(items))))
        for item in items:
            status, detail, seconds = results.get(item, ("sandbox_error", "no result", 0.0))
            ok = status == "passed"
            verdict = Verdict(ok, status, detail, int(ok), 1, seconds)  # type: ignore[arg-type]
            for i in pending[item[1:]]:
                out[i] = verdict
                if status in ("passed", "failed"):
                    with _cache_lock:
                        if len(_cache) >= _CACHE_MAX:
                            _cache.clear()
                        _cache[(str(golds[i]), str(predictions[i]))] = verdict
    return [v for v in out if v is not None]


def verify_regex(completions: Sequence[str], patterns: Sequence[str]) -> list[Verdict]:
    """Passed iff ``re.match(pattern, completion.strip())`` (trusted patterns)."""
    if len(completions) != len(patterns):
        raise ValueError(f"{len(completions)} completions but {len(patterns)} patterns")
    out = []
    for completion, pattern in zip(completions, patterns):
        t0 = time.monotonic()
        try:
            ok = re.match(pattern, str(completion).strip()) is not None
            out.append(Verdict(ok, "passed" if ok else "failed", "" if ok else f"does not match {pattern!r}",
                               int(ok), 1, time.monotonic() - t0))
        except Exception as e:  # noqa: BLE001 - a bad pattern is a task bug, reported not raised
            out.append(Verdict(False, "sandbox_error", f"bad pattern {pattern!r}: {e}", 0, 1, time.monotonic() - t0))
    return out
