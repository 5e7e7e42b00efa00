"""A small form of the tiny config for end-to-end tests of what goes wrong around a run (the S3 run directory, the
Prefect server going away, a full disk), and the helpers they share: ``mel run`` in this process, its progress lines,
the processes left in a session."""
from __future__ import annotations

import io
import os
import re
import time

SMALL = [a for o in ("data.prompts_per_step=2", "rollout.group_size=4", "rollout.max_new_tokens=8",
                     "algorithm.mini_batch_size=8", "algorithm.micro_batch_size=8") for a in ("--set", o)]
"""`mel run` arguments: 2 prompts x 4 samples of 8 tokens a step (the tiny config's model and task set)."""


def mel_run_in_process(args: list[str], env: dict[str, str] | None = None) -> str:
    """``mel ARGS`` in this process (imports paid once; this session's Prefect test server), with ``env`` added to
    the environment meanwhile; returns its progress lines. It must exit 0."""
    from cli.main import main
    from mel.progress import progress as lines

    buf, environ = io.StringIO(), dict(os.environ)
    os.environ.update(env or {})
    lines.stream = buf
    try:
        assert main(args) == 0, buf.getvalue()
    finally:
        lines.stream = None
        os.environ.clear()  # `mel run` sets its quiet defaults in the environment: not for the other tests
        os.environ.update(environ)
    return buf.getvalue()


def progress(out: str) -> list[tuple[str, str, str]]:
    """(step, stage, "done" / "reused") of each stage line in ``out``."""
    return re.findall(r"^\[step (\d+)/\d+\] (\w+) +(done|reused) ", out, re.M)


def session_pids(sid: int, wait_s: float = 10.0) -> list[str]:
    """The processes still in session ``sid`` (pid and command) after waiting up to ``wait_s`` for them to end."""
    deadline = time.monotonic() + wait_s
    while True:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    state, _, _, session = f.read().rsplit(")", 1)[1].split()[:4]
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")[:120]
            except OSError:
                continue
            if int(session) == sid and state != "Z":
                found.append(f"{pid} {cmd}")
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)
