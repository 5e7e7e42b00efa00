"""What every ``mel`` command that trains or evaluates does before it imports Prefect or starts a server: the
environment that quiets the libraries, and the problems said up front (a sandbox that cannot be had, a task set
that does not load) instead of as a failed task under a traceback."""
from __future__ import annotations

import os
import signal
import sys
import threading


def quiet_environment(verbose: bool) -> None:
    """Settings that must be in place before Prefect / transformers are imported; and SIGTERM made to end the
    command as an exception does (`exit_on_sigterm`)."""
    exit_on_sigterm()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if not verbose:  # the terminal shows mel's own lines; a Prefect server still gets every run log line
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")


def isolation_problem(cfg) -> str:
    """Why the code sandbox this run asks for cannot be had here ("" when it can, or when no code is verified):
    said before any server starts, instead of as a failed verify task."""
    from mel.data import TASKSET_INFO
    from mel.verify.sandbox import IsolationUnavailable, isolation_mode

    if TASKSET_INFO[cfg.data.taskset].kind != "code":
        return ""
    try:
        isolation_mode(cfg.verify.isolation)
    except IsolationUnavailable as exc:
        return str(exc)
    return ""


def data_problem(cfg) -> str:
    """Why the run's task set cannot be loaded (a missing file, a bad row: named by file, line and field), said
    before any server starts instead of under a Prefect traceback; "" when it loads."""
    from mel.data import DatasetError, load_taskset

    try:
        load_taskset(cfg.data.taskset, cfg.data.path, limit=cfg.data.limit)
    except DatasetError as exc:
        lines = str(exc).splitlines()
        return " ".join(lines) if len(lines) <= 2 else str(exc)  # one bad row: one line
    return ""


def exit_on_sigterm() -> None:
    """SIGTERM (``kill``, a scheduler cancelling a job) ends the command with exit status 143 by raising SystemExit in
    the main thread, so that what it started is stopped by the process's exit handlers: Prefect's temporary server, an
    embedded Ray, the sandbox workers. SIGTERM's default action skips them: a ``mel run`` stopped with ``kill`` left
    its temporary Prefect server running (seen for 75 minutes). Work already finished is kept, as after a SIGKILL."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_143)


def _exit_143(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM while unwinding ends the process at once
    print("mel: stopped by SIGTERM; what finished is kept: the same command resumes", file=sys.stderr)
    sys.exit(128 + signum)
