"""The ``docker`` sandbox backend: the same worker (``_zygote.py``) and protocol, inside a container.

For users who have a Docker engine, or podman's Docker-compatible API (``podman system service``, with
``DOCKER_HOST=unix://...`` pointing at its socket): ``verify_code(..., isolation="docker")`` (or ``verify.isolation:
docker``). The container runs the image ``MEL_SANDBOX_IMAGE`` (default ``python:3.11-slim``; any image with
``python`` 3 on PATH: the worker uses the standard library only) with no network, a read-only root file system, a
tmpfs ``/tmp``, uid 65534, a pids limit, a memory limit and an init process; only the worker file is mounted (read
only), and the worker connects back to this process over a Unix socket in a mounted directory (descriptor passing
needs a Unix socket; the attach stream cannot carry it). Needs the ``docker`` Python SDK (``pip install
'mel-rlvr[docker]'``) and an engine that answers: ``docker_available()`` says whether both are there, and why not.
Tested against podman 4.3's API (``tests/docker_engine.py``; ``deploy/image/check.sh``); not yet against Docker's
own engine.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
from typing import Any

from mel.verify.zygote_paths import SANDBOX_ZYGOTE, ZYGOTE_PATH

IMAGE_ENV = "MEL_SANDBOX_IMAGE"
DEFAULT_IMAGE = "python:3.11-slim"
CONNECT_TIMEOUT_S = 120.0  # the worker's first connection: a cold engine may pull the image first


def sandbox_image() -> str:
    """The image sandbox containers run: ``$MEL_SANDBOX_IMAGE``, else ``python:3.11-slim``."""
    return os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE


def docker_available() -> tuple[bool, str]:
    try:
        import docker
    except ImportError:
        return False, "the docker Python SDK is not installed (pip install 'mel-rlvr[docker]')"
    client = None
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # no engine, no socket, no permission
        return False, f"no Docker engine answers: {type(exc).__name__}: {exc}"[:300]
    finally:
        if client is not None:
            client.close()
    return True, "ok"


class DockerWorker:
    """A worker container; ``mode.command`` is ``[image]``. The sandbox module supplies ``sample``."""

    def __init__(self, mode: Any) -> None:
        import docker

        self.mode = mode
        self.client = docker.from_env()
        self.container = self.ctl = None
        self.sock_dir = tempfile.mkdtemp(prefix="mel-docker-")
        try:
            os.chmod(self.sock_dir, 0o777)  # the worker runs as uid 65534
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                listener.bind(os.path.join(self.sock_dir, "ctl"))
                os.chmod(os.path.join(self.sock_dir, "ctl"), 0o777)
                listener.listen(1)
                listener.settimeout(CONNECT_TIMEOUT_S)
                self.container = self.client.containers.run(
                    mode.command[0], ["python", "-I", SANDBOX_ZYGOTE, "--connect", "/sock/ctl"], detach=True,
                    auto_remove=True, network_mode="none", read_only=True, tmpfs={"/tmp": "rw,size=256m"},
                    user="65534:65534", pids_limit=256, mem_limit="2g", init=True, environment={"LANG": "C.UTF-8"},
                    volumes={ZYGOTE_PATH: {"bind": SANDBOX_ZYGOTE, "mode": "ro"},
                             self.sock_dir: {"bind": "/sock", "mode": "rw"}},
                )
                self.ctl, _ = listener.accept()
            finally:
                listener.close()  # one connection only: nothing else can reach this process through the socket
            self.ctl.settimeout(None)
        except BaseException:
            self.kill()
            raise

    def alive(self) -> bool:
        if self.container is None:  # not started
            return False
        try:
            self.container.reload()
            return self.container.status == "running"
        except Exception:
            return False

    def kill(self, grace_s: float = 0.0) -> None:
        """Kill the container (the engine removes it) and release this side: socket, its directory, the client."""
        if self.container is not None:
            try:
                self.container.kill()
            except Exception:  # already gone
                pass
        if self.ctl is not None:
            self.ctl.close()
        shutil.rmtree(self.sock_dir, ignore_errors=True)
        self.client.close()
