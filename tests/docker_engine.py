"""A Docker-compatible engine for the tests of the ``docker`` sandbox backend (`ensure_engine`).

A Docker engine that already answers (``DOCKER_HOST`` or the default socket) is used as it is, with its default
sandbox image (``python:3.11-slim``, pulled by the engine). Else, where podman is installed, podman's Docker API
(``podman system service``) is started on a private socket for this test process and ``DOCKER_HOST`` points at it;
it is stopped when the process exits (and, should the process be killed, ends by itself after 10 idle minutes). The
podman settings are ``$CONTAINERS_CONF``, else, where runc is installed, ``deploy/image/containers.conf`` (runc,
cgroupfs, no default ulimits: what these machines need). The sandbox image is then ``$MEL_SANDBOX_IMAGE``, else the
local base image of ``deploy/image/base.sh`` (Debian bookworm's Python 3.11), built here when it is missing and this
process is root with debootstrap (about 2 minutes; it needs a Debian mirror). Where none of this is possible the
tests skip, saying why.
"""
from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from mel.verify import docker_backend
from mel.verify.sandbox import shutdown_sandbox_workers

REPO = Path(__file__).resolve().parents[1]
PODMAN_CONF = REPO / "deploy" / "image" / "containers.conf"
BASE_SCRIPT = REPO / "deploy" / "image" / "base.sh"
BASE_IMAGE = "localhost/mel-base:3.11-bookworm"
IDLE_EXIT_S = 600
_started: dict[str, object] = {}  # what this process started: the service's pid, its socket directory


def possible() -> bool:
    """Whether the docker backend can be tested here at all (an engine answers, or podman is installed)."""
    return docker_backend.docker_available()[0] or shutil.which("podman") is not None


def _podman_env() -> dict[str, str]:
    env = dict(os.environ)
    if not env.get("CONTAINERS_CONF") and shutil.which("runc"):
        env["CONTAINERS_CONF"] = str(PODMAN_CONF)
    return env


def _start_podman_service() -> str:
    """Start ``podman system service`` on a private socket, detached from this process (so it is nobody's child
    here), and point ``DOCKER_HOST`` at it; ``""``, or why it did not answer."""
    sock_dir = tempfile.mkdtemp(prefix="mel-podman-")
    url = f"unix://{sock_dir}/podman.sock"
    log = os.path.join(sock_dir, "service.log")
    out = subprocess.run(
        ["sh", "-c", 'podman system service --time="$1" "$2" >"$3" 2>&1 </dev/null & echo $!', "sh",
         str(IDLE_EXIT_S), url, log], env=_podman_env(), capture_output=True, text=True, check=True)
    _started.update(pid=int(out.stdout), dir=sock_dir)
    os.environ["DOCKER_HOST"] = url
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ok, why = docker_backend.docker_available()
        if ok:
            return ""
        time.sleep(0.2)
    with open(log, encoding="utf-8", errors="replace") as f:
        return f"podman system service did not answer in 30 s ({why}); its log: {f.read()[-500:]}"


def _stop_podman_service() -> None:
    """At exit: the sandbox containers first (they need the service to be killed), then the service we started."""
    pid = _started.pop("pid", None)
    if pid is None:
        return
    shutdown_sandbox_workers()
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"podman" not in f.read():
                    break  # gone (its pid taken by another process)
            os.kill(pid, sig)
        except OSError:
            break
        deadline = time.monotonic() + wait_s
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.1)
    shutil.rmtree(str(_started.pop("dir")), ignore_errors=True)


def _podman_image() -> str:
    """The sandbox image for podman: ``$MEL_SANDBOX_IMAGE``, else the local base image (built when missing); ``""``,
    or why there is none."""
    image = os.environ.get(docker_backend.IMAGE_ENV) or BASE_IMAGE
    if subprocess.run(["podman", "image", "exists", image], env=_podman_env()).returncode == 0:
        os.environ[docker_backend.IMAGE_ENV] = image
        return ""
    if image != BASE_IMAGE or os.geteuid() != 0 or not shutil.which("debootstrap"):
        return (f"the sandbox image {image} is not in podman's store; build it with {BASE_SCRIPT.relative_to(REPO)} "
                "(root, debootstrap) or set MEL_SANDBOX_IMAGE to an image with python 3")
    built = subprocess.run(["bash", str(BASE_SCRIPT), image], env=_podman_env(), capture_output=True, text=True)
    if built.returncode != 0:
        return f"building the sandbox image with {BASE_SCRIPT.name} failed: {(built.stdout + built.stderr)[-500:]}"
    os.environ[docker_backend.IMAGE_ENV] = image
    return ""


def ensure_engine() -> str:
    """Make the docker backend usable in this process (see the module docstring); ``""``, or why it cannot be."""
    ok, why = docker_backend.docker_available()
    if ok:
        return ""
    if importlib.util.find_spec("docker") is None:
        return f"docker backend not tested: {why}"
    if shutil.which("podman") is None:
        return f"docker backend not tested: {why}, and podman is not installed (apt install podman runc)"
    _stop_podman_service()  # one started earlier that ended, idle
    return _start_podman_service() or _podman_image()


atexit.register(_stop_podman_service)  # after the sandbox's own handler, so it runs first
