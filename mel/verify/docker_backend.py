"""The ``docker`` sandbox backend: the same worker (``_zygote.py``) and protocol, inside a container.

For users who have a Docker engine: ``verify_code(..., isolation="docker")`` (or ``verify.isolation: docker``). The
container runs with no network, a read-only root file system, a tmpfs ``/tmp``, uid 65534, a pids limit and a memory
limit; the worker file is mounted read-only, and the worker connects back to the host over a Unix socket in a
mounted directory (descriptor passing needs a Unix socket; the attach stream cannot carry it). Needs the ``docker``
Python SDK (``pip install 'mel-rlvr[docker]'``) and an engine that answers: ``docker_available()`` says whether both
are there, and why not.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
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
    """A worker container; ``mode.command`` is ``[image]``. The sandbox module supplies ``sample``."""

    def __init__(self, mode: Any) -> None:
        import docker

        from mel.verify.sandbox import ZYGOTE_PATH

        self.mode = mode
        image = mode.command[0] if mode.command else DEFAULT_IMAGE
        self.sock_dir = tempfile.mkdtemp(prefix="mel-docker-")
        os.chmod(self.sock_dir, 0o777)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(os.path.join(self.sock_dir, "ctl"))
        os.chmod(os.path.join(self.sock_dir, "ctl"), 0o777)
        listener.listen(1)
        listener.settimeout(120)
        self.container = docker.from_env().containers.run(
            image, ["python", "-I", "/opt/mel/_zygote.py", "--connect", "/sock/ctl"], detach=True, auto_remove=True,
            network_mode="none", read_only=True, tmpfs={"/tmp": "rw,size=256m"}, user="65534:65534",
            pids_limit=256, mem_limit="2g", init=True, environment={"LANG": "C.UTF-8"},
            volumes={os.path.dirname(ZYGOTE_PATH): {"bind": "/opt/mel", "mode": "ro"},
                     self.sock_dir: {"bind": "/sock", "mode": "rw"}},
        )
        try:
            self.ctl, _ = listener.accept()
        finally:
            listener.close()
        self.ctl.settimeout(None)

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
        self.ctl.close()
        shutil.rmtree(self.sock_dir, ignore_errors=True)
