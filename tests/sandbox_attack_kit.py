"""Shared kit of the adversarial sandbox suites (``test_sandbox_adversarial*.py``), whose contract is: ONE hostile
property per test, each must end NOT passed, host unharmed.

Every hostile sample is built so that the hostile behaviour is the ONLY way it could pass (its honest part is wrong,
or it returns the right answer only if the attack worked), so "not passed" means "the attack did not work". Honest
controls (correct solutions pass in each style, and the secret-valued problems are passable by a sample that knows
the value) keep the suite from passing by failing everything.

Host checks: after every test no process carrying this module's marker (in its cmdline or process name) is left; at
the end of the module no file carrying the marker exists in /tmp, /dev/shm, /var/tmp, the repo or $HOME, no child
process of this test process is left, and this process has no file descriptor it did not have before the module.

Attacks that would damage the host if the sandbox failed are aimed only at things this module owns: "kill the
parent"/"kill what you can see"/ptrace/memory reading run under a throw-away verifier process (`_isolated`) and stop at
it; kills target only this module's decoy and verifier; the fork bomb is capped at 2**9 processes.
"""
from __future__ import annotations

from conftest import child_pids
import dataclasses
import docker_engine
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mel.data.types import CodeTests
from mel.verify import sandbox
from mel.verify.sandbox import verify_code
from mel.verify.types import STATUSES, Verdict


REPO = Path(__file__).resolve().parents[1]
HOME = Path.home()
MARK = "melpwn" + secrets.token_hex(4)  # 14 chars: also fits a process name (comm, 15 chars)
DECOY = "meldecoy" + secrets.token_hex(4)
DRIVER_MARK = "meldriver" + secrets.token_hex(4)


def new_secret() -> tuple[str, str]:
    """An expected value no sample can know, and the pattern a sample may search for (it knows the shape only). Each
    test draws its own, so what an earlier test left behind in a long-lived process cannot answer a later one."""
    tag = secrets.token_hex(4)
    return f"melsecret{tag}{secrets.token_hex(12)}", f"melsecret{tag}[0-9a-f]{{24}}"


ENV_SECRET, ENV_SECRET_RE = new_secret()
os.environ["MEL_TEST_SECRET"] = ENV_SECRET  # the verifier's environment holds it: samples must not see it
TIMEOUT = 2.0
MEMORY_MB = 256
NOT_PASSED_EXIT = ("runtime_error", "failed")


# --- problems -------------------------------------------------------------------------------------------------------

ADD = {
    "io": CodeTests(style="io", entry_point="add", inputs=("[1, 2]", "[3, 4]", "[-5, 5]"), outputs=("3", "7", "0")),
    "assert": CodeTests(style="assert", asserts=("assert add(1, 2) == 3", "assert add(3, 4) == 7")),
    "check": CodeTests(style="check", entry_point="add", check_code=(
        "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(3, 4) == 7\n")),
}
STYLES = sorted(ADD)
GOOD_ADD = "def add(a, b):\n    return a + b\n"
WRONG_ADD = "def add(a, b):\n    return a - b\n"

# f(2) must equal the expected value of each builtin type; the hostile return is a subclass instance of the WRONG value
# whose __eq__ is always True and whose __hash__ pretends to be the expected value's.
TYPED = {
    "int": ("4", "return x * 2", "int", "V(0)", "hash(4)"),
    "float": ("4.5", "return x + 2.5", "float", "V(0.0)", "hash(4.5)"),
    "str": ("'22'", "return str(x) * 2", "str", "V('')", "hash('22')"),
    "list": ("[2, 2]", "return [x, x]", "list", "V()", "0"),
    "dict": ("{2: 2}", "return {x: x}", "dict", "V()", "0"),
}


def typed_tests(kind: str, style: str) -> CodeTests:
    exp = TYPED[kind][0]
    cond = (f"abs(CALL - {exp}) < 1e-6" if kind == "float" else f"CALL == {exp}")
    if style == "io":
        return CodeTests(style="io", entry_point="f", inputs=("[2]",), outputs=(exp,), atol=1e-6)
    if style == "assert":
        return CodeTests(style="assert", asserts=("assert " + cond.replace("CALL", "f(2)"),))
    return CodeTests(style="check", entry_point="f",
                     check_code="def check(candidate):\n    assert " + cond.replace("CALL", "candidate(2)") + "\n")


def typed_hostile(kind: str) -> str:
    _, _, base, value, hsh = TYPED[kind]
    arith = ("    def __sub__(self, o): return 0.0\n    def __rsub__(self, o): return 0.0\n"
             "    def __abs__(self): return 0.0\n") if kind == "float" else ""
    return (f"class V({base}):\n    def __eq__(self, o): return True\n    def __ne__(self, o): return False\n"
            f"    def __hash__(self): return {hsh}\n{arith}def f(x):\n    return {value}\n")


ADD_CHECK_FLOAT = CodeTests(style="check", entry_point="add", check_code=(
    "def check(candidate):\n    assert abs(candidate(0.1, 0.2) - 0.3) < 1e-9\n"))
LEN_ASSERT = CodeTests(style="assert", asserts=("assert len(f(3)) == 3",))
SORT_ASSERT = CodeTests(style="assert", asserts=("assert sorted(f([3, 1, 2])) == [1, 2, 3]",))
ISINSTANCE_CHECK = CodeTests(style="check", entry_point="f", check_code=(
    "def check(candidate):\n    r = candidate(2)\n    assert isinstance(r, int)\n    assert str(r) == '4'\n"))
ISCLOSE_ASSERT = CodeTests(style="assert", setup_code="import math", asserts=("assert math.isclose(f(2), 4.5)",))


def secret_tests(style: str, secret: str) -> CodeTests:
    """`f(0)` must return `secret`."""
    if style == "io":
        return CodeTests(style="io", entry_point="f", inputs=("[0]",), outputs=(repr(secret),))
    if style == "assert":
        return CodeTests(style="assert", asserts=(f"assert f(0) == {secret!r}",))
    return CodeTests(style="check", entry_point="f",
                     check_code=f"def check(candidate):\n    assert candidate(0) == {secret!r}\n")


_KNOWN, _ = new_secret()

HONEST = {  # name -> (program, tests)
    **{f"add_{s}": (GOOD_ADD, ADD[s]) for s in STYLES},
    **{f"{k}_{s}": (f"def f(x):\n    {TYPED[k][1]}\n", typed_tests(k, s)) for k in TYPED for s in STYLES},
    "add_check_float": (GOOD_ADD, ADD_CHECK_FLOAT),
    "len_assert": ("def f(n):\n    return list(range(n))\n", LEN_ASSERT),
    "sort_assert": ("def f(xs):\n    return list(xs)\n", SORT_ASSERT),
    "isinstance_check": ("def f(x):\n    return x * 2\n", ISINSTANCE_CHECK),
    "isclose_assert": ("def f(x):\n    return x + 2.5\n", ISCLOSE_ASSERT),
    **{f"knows_secret_{s}": (f"def f(x):\n    return {_KNOWN!r}\n", secret_tests(s, _KNOWN)) for s in STYLES},
}


# --- helpers --------------------------------------------------------------------------------------------------------

def fill(code: str, **subs: object) -> str:
    code = textwrap.dedent(code)
    for key, value in {"MARK": MARK, "DECOY": DECOY, "DRIVER_MARK": DRIVER_MARK,
                       **subs}.items():
        code = code.replace(f"@{key}@", str(value))
    assert not re.search(r"@[A-Z_]+@", code), f"unfilled placeholder in {code!r}"
    return code


def fence(code: str) -> str:
    return "Here is my solution:\n```python\n" + code + "\n```\n"


# The suites run once per isolation mode this machine has (each must give the whole contract); .ci/run installs
# bubblewrap, so CI runs both ``bwrap`` and ``unshare``. ``docker`` too where a Docker engine answers or podman is
# installed (its Docker API is then started for the session: ``docker_engine.py``).
ISOLATIONS = sandbox.available_isolations() + (["docker"] if docker_engine.possible() else [])
CURRENT = {"isolation": "auto"}


@pytest.fixture(scope="module", autouse=True, params=ISOLATIONS or ["auto"])
def isolation(request):
    """Every test of a suite module, in each isolation mode in turn (``auto`` fails closed where there is none)."""
    if request.param == "docker" and (why := docker_engine.ensure_engine()):
        pytest.skip(why)
    CURRENT["isolation"] = request.param
    yield request.param
    sandbox.shutdown_sandbox_workers()
    CURRENT["isolation"] = "auto"


def one(code: str, tests: CodeTests, *, timeout_s: float = TIMEOUT, memory_mb: int = MEMORY_MB) -> Verdict:
    (v,) = verify_code([fence(code)], [tests], timeout_s=timeout_s, memory_mb=memory_mb, workers=1,
                       isolation=CURRENT["isolation"])
    assert v.status in STATUSES, v
    return v


def not_passed(v: Verdict, *statuses: str) -> None:
    assert not v.passed, f"the attack passed: {v}"
    assert v.reward == 0.0
    if statuses:
        assert v.status in statuses, f"expected status in {statuses}, got {v}"


def _state(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def marked_processes(marker: str = MARK) -> list[str]:
    """Live (non-zombie) processes whose cmdline or process name carries `marker`."""
    found = []
    me = str(os.getpid())
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{pid}/comm", "rb") as f:
                comm = f.read()
        except OSError:
            continue
        if (marker.encode() in cmd or marker.encode() in comm) and _state(pid) not in ("Z", "X", "?"):
            found.append(f"{pid}:{comm.strip().decode(errors='replace')}:{cmd[:120]!r}")
    return found


def kill_marked(marker: str = MARK) -> None:
    for entry in marked_processes(marker):
        try:
            os.kill(int(entry.split(":", 1)[0]), signal.SIGKILL)
        except OSError:
            pass




def marked_files() -> list[str]:
    out = []
    for d in ("/tmp", "/dev/shm", "/var/tmp", str(REPO), str(HOME)):
        try:
            out += [os.path.join(d, n) for n in os.listdir(d) if MARK in n or DECOY in n]
        except OSError:
            pass
    return out


DRIVER = textwrap.dedent("""
    import json, sys
    from mel.data.types import CodeTests
    from mel.verify import sandbox
    job = json.loads(sys.argv[1])
    tests = CodeTests(**{k: tuple(v) if isinstance(v, list) else v for k, v in job["tests"].items()})
    (v,) = sandbox.verify_code([job["code"]], [tests], timeout_s=job["timeout_s"], memory_mb=job["memory_mb"],
                               workers=1, isolation=job["isolation"])
    stop = getattr(sandbox, "shutdown_sandbox_workers", None)
    if stop is not None:
        stop()
    print("VERDICT " + json.dumps({"passed": v.passed, "status": v.status, "detail": v.detail[:500]}), flush=True)
""")


def isolated(code: str, tests: CodeTests, *, secret: str = ENV_SECRET, timeout_s: float = TIMEOUT) -> Verdict:
    """Verify in a throw-away verifier process (its argv holds the job, expected outputs included, and its environment
    holds MEL_TEST_SECRET=`secret`), so an attack on "the parent" can at worst kill that process, never pytest."""
    job = json.dumps({"code": fence(code), "tests": dataclasses.asdict(tests), "timeout_s": timeout_s,
                      "memory_mb": MEMORY_MB, "isolation": CURRENT["isolation"]})
    env = {**os.environ, "MEL_TEST_SECRET": secret, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, job, DRIVER_MARK], cwd=REPO, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=90)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait()
    assert proc.returncode == 0, f"the verifier process died (exit {proc.returncode}): {err[-1500:]!r}"
    line = [ln for ln in out.decode().splitlines() if ln.startswith("VERDICT ")][-1]
    d = json.loads(line[len("VERDICT "):])
    assert d["status"] in STATUSES
    return Verdict(d["passed"], d["status"], d["detail"])


@pytest.fixture(scope="module", autouse=True)
def host_before():
    """What this process looked like before the module (its fds and its children, e.g. a session Prefect server);
    at the module's end, whatever order its tests ran in, the host is checked unharmed (`check_host_unharmed`)."""
    before = {"fds": set(os.listdir("/proc/self/fd")), "children": child_pids(os.getpid())}
    yield before
    check_host_unharmed(before)


@pytest.fixture(autouse=True)
def no_stray_marked_processes():
    yield
    deadline = time.monotonic() + 2.0
    while marked_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    stray = marked_processes()
    if stray:
        kill_marked()
        pytest.fail(f"sample processes outlived the verdict: {stray[:5]} ({len(stray)} in all)")



def check_host_unharmed(host_before) -> None:
    """The module-end check: no marked process, child, file or descriptor left."""
    stop = getattr(sandbox, "shutdown_sandbox_workers", None)
    if stop is not None:
        stop()
    deadline = time.monotonic() + 3
    while (marked_processes() or child_pids(os.getpid()) - host_before["children"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not marked_processes(), marked_processes()
    assert not marked_processes(DECOY), marked_processes(DECOY)
    new_kids = child_pids(os.getpid()) - host_before["children"]
    assert not new_kids, f"child processes left behind: {new_kids}"
    assert not marked_files(), marked_files()
    new_fds = set(os.listdir("/proc/self/fd")) - host_before["fds"]
    leaked = {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in new_fds if os.path.lexists(f"/proc/self/fd/{fd}")}
    assert not leaked, f"file descriptors leaked: {leaked}"
