"""The ``docker`` sandbox backend: the same worker (``_zygote.py``) and protocol, inside a container.

For users who have a Docker engine: ``verify_code(..., backend="docker")`` (or ``verify.backend: docker``). The
container runs with no network, a read-only root file system, a tmpfs ``/tmp``, uid 65534, a pids limit and a memory
limit; the worker file is mounted read-only. Needs the ``docker`` Python SDK (``pip install 'mel-rlvr[docker]'``)
and an engine that answers; ``docker_available()`` says whether both are there, and why not.
"""
from __future__ import annotations

import os
import select
import struct
from typing import Any

DEFAULT_IMAGE = os.environ.get("MEL_SANDBOX_IMAGE", "python:3.11-slim")


def docker_available() -> tuple[bool, str]:
    try:
        import docker
    except ImportError:
        return False, "the docker Python SDK is not installed (pip install 'mel-rlvr[docker]')"
    try:
        docker.from_env().ping()
    except Exception as exc:  # no engine, no socket, no permission
        return False, f"no Docker engine answers: {type(exc).__name__}: {exc}"[:300]
    return True, "ok"


class DockerWorker:
    """A worker container; ``mode.command`` is ``[image]``. Same interface as the process worker."""

    def __init__(self, mode: Any) -> None:
        import docker

        from mel.verify.sandbox import ZYGOTE_PATH

        self.mode = mode
        image = mode.command[0] if mode.command else DEFAULT_IMAGE
        self.container = docker.from_env().containers.run(
            image, ["python", "-I", "/opt/mel/_zygote.py"], detach=True, stdin_open=True, auto_remove=True,
            network_mode="none", read_only=True, tmpfs={"/tmp": "rw,size=256m"}, user="65534:65534",
            pids_limit=256, mem_limit="2g", init=True, environment={"LANG": "C.UTF-8"},
            volumes={os.path.dirname(ZYGOTE_PATH): {"bind": "/opt/mel", "mode": "ro"}},
        )
        self.sock = self.container.attach_socket(params={"stdin": 1, "stdout": 1, "stream": 1})._sock
        self.pending = b""  # stdout payload bytes not yet handed out
        self.raw = b""  # multiplexed stream bytes not yet parsed

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, n: int, timeout: float) -> bytes:
        """Demultiplex Docker's attach stream (8-byte headers: stream id, 3 zero bytes, big-endian length)."""
        while not self.pending:
            if len(self.raw) >= 8:
                stream, length = self.raw[0], struct.unpack(">I", self.raw[4:8])[0]
                if len(self.raw) >= 8 + length:
                    payload, self.raw = self.raw[8:8 + length], self.raw[8 + length:]
                    if stream == 1:
                        self.pending += payload
                    continue
            if timeout <= 0 or not select.select([self.sock], [], [], timeout)[0]:
                raise TimeoutError
            chunk = self.sock.recv(65536)
            if not chunk:
                return b""
            self.raw += chunk
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def alive(self) -> bool:
        try:
            self.container.reload()
            return self.container.status == "running"
        except Exception:
            return False

    def kill(self, grace_s: float = 0.0) -> None:
        try:
            self.container.kill()
        except Exception:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
