"""How ``mel run`` ends when something it depends on goes away mid-run: one line on stderr that names what went away
and says that the same command resumes, instead of Prefect's retries and tracebacks.

- **The Prefect server it reports to** (``PREFECT_API_URL``). Prefect 3 reports task runs as events, which it drops
  when the server is gone, but a flow run's state changes (every step is a subflow) are API calls that Prefect's
  client retries ``PREFECT_CLIENT_MAX_RETRIES`` (5) times with exponential back-off (2 + 4 + ... + 32 s), and the
  failure path makes several such calls: measured, a run whose server was killed during step 2 of 4 stopped computing,
  printed httpx tracebacks and exited 1 after 383 s. A Prefect run cannot go on without its server (no new subflow
  run can be created), so this stops it within seconds instead: a watchdog thread asks the server's ``/health``
  every ``POLL_S`` seconds, and once it has been gone for ``GRACE_S`` seconds (connection refused, reset, or no
  connection made in time; any HTTP answer counts as alive), it prints the line and ends the process at once with
  ``EXIT_SERVER_LOST``
  (75, sysexits' EX_TEMPFAIL: try again later). A server that takes the connection but is slow to answer is busy,
  not gone (CI saw a test server on 2 loaded cores miss two 5-second probes in a row, and the run was stopped): that
  counts only after ``BUSY_GRACE_S``, as a hung server would. Nothing finished is lost: every artifact counts only once
  its manifest is written (`mel.artifacts`), so the end is a SIGKILL's, which the kill tests show resumes exactly. A
  server that does not answer when the run starts is named the same way (exit 2) before any work. Lowering Prefect's
  retries instead would also fail runs on the blips the retries exist for (a busy SQLite server answers 503).
  Without ``PREFECT_API_URL`` the run's server is a temporary one in its own process tree: not watched.
- **Space in the run directory.** A write that runs out of space raises `mel.artifacts.StorageFull` (or an error whose
  chain says ENOSPC / EDQUOT); the line names the run directory, what was being written and the cause, and Prefect's
  console records of that same failure are not shown (``--verbose`` shows them). The same for a resume whose replayed
  state differs from the recorded one (`mel.checkpoints.ReplayMismatch`, said by `cli.main`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import cast

from mel import artifacts
from mel.checkpoints import ReplayMismatch

EXIT_SERVER_LOST = 75
GRACE_S = 5.0
BUSY_GRACE_S = 120.0
POLL_S = 1.0
PROBE_TIMEOUT_S = 5.0


def api_url() -> str:
    """The Prefect API this process reports to ("" for a temporary local server)."""
    from prefect.settings import PREFECT_API_URL

    return (PREFECT_API_URL.value() or "").rstrip("/")


def unanswered(api: str, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """Why the server at ``api`` does not answer ``GET /health`` (refused, reset, timed out...); "" when it answers
    at all, whatever the status. TLS is not verified: nothing is sent but the probe, and a server that completes a
    handshake is there (Prefect's own client checks the certificate on every real call)."""
    return _probe(api, timeout_s)[0]


def _probe(api: str, timeout_s: float) -> tuple[str, bool]:
    """``unanswered``'s reason, and whether the server took the connection (busy: it timed out after that)."""
    import httpx

    try:
        httpx.get(f"{api}/health", timeout=timeout_s, verify=False)
    except (httpx.ReadTimeout, httpx.WriteTimeout) as exc:
        return f"took the connection, no answer in {timeout_s:g} s: {exc or type(exc).__name__}", True
    except httpx.TransportError as exc:
        return str(exc) or type(exc).__name__, False
    return "", False


def server_lost_line(api: str, reason: str) -> str:
    return (f"mel run: the Prefect server at {api} stopped answering ({reason}); the run stopped. Nothing finished is "
            "lost: run the same command again once the server is back, and it resumes where this one stopped")


@contextlib.contextmanager
def server_watch(api: str, on_lost: Callable[[str], None], grace_s: float = GRACE_S, poll_s: float = POLL_S,
                 busy_grace_s: float = BUSY_GRACE_S, probe_timeout_s: float = PROBE_TIMEOUT_S) -> Iterator[None]:
    """While the block runs, call ``on_lost(reason)`` once the server at ``api`` has not answered for ``grace_s``
    seconds (asked every ``poll_s``), or for ``busy_grace_s`` while it takes connections but answers none in
    ``probe_timeout_s``; a server that answers again before that resets the clock."""
    stop = threading.Event()

    def watch() -> None:
        since = None
        while not stop.wait(poll_s):
            reason, busy = _probe(api, probe_timeout_s)
            if not reason:
                since = None
                continue
            since = time.monotonic() if since is None else since
            if time.monotonic() - since >= (busy_grace_s if busy else grace_s) and not stop.is_set():
                on_lost(reason)
                return

    thread = threading.Thread(target=watch, name="mel-server-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()


def _exit_server_lost(api: str) -> Callable[[str], None]:
    def on_lost(reason: str) -> None:
        print(server_lost_line(api, reason), file=sys.stderr)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(EXIT_SERVER_LOST)  # the main thread may sit in Prefect's retries for minutes: not unwound

    return on_lost


def no_space_line(exc: BaseException, run_dir: str) -> str:
    """The one line for a run that ran out of space (``exc``'s chain says so): the artifact or folder being written
    where known (`mel.artifacts.StorageFull`, or an ``open`` that failed)."""
    cause = cast(OSError, artifacts.out_of_space(exc))  # not None: the caller checked that exc's chain says so
    what = f"writing {cause.filename}: " if cause.filename else ""
    return (f"mel run: out of space in the run directory {run_dir} ({what}{cause.strerror}); the run stopped. "
            "Nothing finished is lost: free space there and run the same command again to resume")


def said_in_one_line(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or its chain) is an end the CLI states in one line itself: a run directory out of space, or
    a replay that no longer gives the recorded state (`mel.checkpoints.ReplayMismatch`, `cli.main`)."""
    return artifacts.out_of_space(exc) is not None or \
        any(isinstance(link, ReplayMismatch) for link in artifacts.error_chain(exc))


class _HideSaidErrors(logging.Filter):
    """Drops Prefect's console records (task/flow run failed, with tracebacks) about a failure the CLI says in one
    line (`said_in_one_line`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        if record.exc_info and said_in_one_line(record.exc_info[1]):
            return False
        # "Finished in state Failed('Task run encountered an exception StorageFull: ...')": no exc_info, only its text
        text = record.getMessage()
        return artifacts.out_of_space(Exception(text)) is None and "ReplayMismatch" not in text


@contextlib.contextmanager
def _quiet_prefect_console() -> Iterator[None]:
    from prefect.logging.handlers import PrefectConsoleHandler

    handlers = [h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]
    hide = _HideSaidErrors()
    for handler in handlers:
        handler.addFilter(hide)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(hide)


def run_flow(start: Callable[[], object], run_dir: str, verbose: bool = False) -> int:
    """Run ``start()`` (the training flow) under the watchdog; the exit status, with one line on stderr for a server
    that is gone or a run directory that is full."""
    api = api_url()
    if api:
        reason = unanswered(api)
        if reason:
            print(f"mel run: cannot reach the Prefect server at {api} (PREFECT_API_URL): {reason}; start it, or "
                  "unset PREFECT_API_URL to run with a temporary local server", file=sys.stderr)
            return 2
    watch = server_watch(api, _exit_server_lost(api)) if api else contextlib.nullcontext()
    try:
        with watch, (contextlib.nullcontext() if verbose else _quiet_prefect_console()):
            start()
    except Exception as exc:
        if artifacts.out_of_space(exc) is None:
            raise
        print(no_space_line(exc, run_dir), file=sys.stderr)
        return 1
    return 0
