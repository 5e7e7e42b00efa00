"""Adversarial contract for the code sandbox: ONE hostile property per test, each must end NOT passed, host unharmed.

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
import json
import os
import re
import secrets
import shutil
import signal
import socket
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

pytestmark = pytest.mark.timeout(180)

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


def one(code: str, tests: CodeTests, *, timeout_s: float = TIMEOUT, memory_mb: int = MEMORY_MB) -> Verdict:
    (v,) = verify_code([fence(code)], [tests], timeout_s=timeout_s, memory_mb=memory_mb, workers=1)
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
                               workers=1)
    stop = getattr(sandbox, "shutdown_sandbox_workers", None)
    if stop is not None:
        stop()
    print("VERDICT " + json.dumps({"passed": v.passed, "status": v.status, "detail": v.detail[:500]}), flush=True)
""")


def isolated(code: str, tests: CodeTests, *, secret: str = ENV_SECRET, timeout_s: float = TIMEOUT) -> Verdict:
    """Verify in a throw-away verifier process (its argv holds the job, expected outputs included, and its environment
    holds MEL_TEST_SECRET=`secret`), so an attack on "the parent" can at worst kill that process, never pytest."""
    job = json.dumps({"code": fence(code), "tests": dataclasses.asdict(tests), "timeout_s": timeout_s,
                      "memory_mb": MEMORY_MB})
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
    """What this process looked like before the module: its fds and its children (e.g. a session Prefect server)."""
    return {"fds": set(os.listdir("/proc/self/fd")), "children": child_pids(os.getpid())}


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


# --- honest controls ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(HONEST))
def test_honest_control_passes(name: str) -> None:
    program, tests = HONEST[name]
    v = one(program, tests)
    assert v.passed and v.status == "passed", v


def test_honest_control_passes_in_isolated_verifier() -> None:
    v = isolated(GOOD_ADD, ADD["io"])
    assert v.passed, v


# --- exiting to fake success ----------------------------------------------------------------------------------------

EXITS = {
    "sys_exit_toplevel": WRONG_ADD + "import sys\nsys.exit(0)\n",
    "sys_exit_in_function": "def add(a, b):\n    import sys\n    sys.exit(0)\n",
    "os_exit_toplevel": WRONG_ADD + "import os\nos._exit(0)\n",
    "os_exit_in_function": "def add(a, b):\n    import os\n    os._exit(0)\n",
    "raise_systemexit_in_function": "def add(a, b):\n    raise SystemExit\n",
    "excepthook_exits_0": ("import os, sys, threading\nsys.excepthook = lambda *a: os._exit(0)\n"
                           "threading.excepthook = lambda *a: os._exit(0)\n"
                           "def add(a, b):\n    raise ValueError('wrong')\n"),
    "atexit_exits_0": "import atexit, os\natexit.register(os._exit, 0)\ndef add(a, b):\n    raise SystemExit(1)\n",
}


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("name", sorted(EXITS))
def test_exit_never_passes(name: str, style: str) -> None:
    not_passed(one(EXITS[name], ADD[style]), *NOT_PASSED_EXIT)


# --- values that lie about equality ---------------------------------------------------------------------------------

ALWAYS_EQUAL = """
class AlwaysEqual:
    def __eq__(self, o): return True
    def __ne__(self, o): return False
    __lt__ = __le__ = __gt__ = __ge__ = __eq__
    def __hash__(self): return hash(3)
    def __bool__(self): return True
    def __sub__(self, o): return 0.0
    __rsub__ = __sub__
    def __abs__(self): return 0.0
    def __float__(self): return 3.0
    def __int__(self): return 3
    def __index__(self): return 3
    def __repr__(self): return '3'
def add(a, b):
    return AlwaysEqual()
"""


@pytest.mark.parametrize("style", STYLES)
def test_always_equal_object(style: str) -> None:
    not_passed(one(ALWAYS_EQUAL, ADD[style]), "failed")


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("kind", sorted(TYPED))
def test_builtin_subclass_with_patched_eq_and_hash(kind: str, style: str) -> None:
    not_passed(one(typed_hostile(kind), typed_tests(kind, style)), "failed")


ARITH_OBJECT = """
class Zero:
    def __sub__(self, o): return 0.0
    __rsub__ = __add__ = __radd__ = __sub__
def add(a, b):
    return Zero()
"""


def test_object_whose_arithmetic_returns_plain_zero() -> None:
    # `abs(candidate(x) - y) < tol` (common in HumanEval checks): the comparison operand is a plain 0.0 made by
    # user-defined arithmetic, so freshening the comparison operands alone does not help.
    not_passed(one(ARITH_OBJECT, ADD_CHECK_FLOAT), "failed", "runtime_error")


# --- patching builtins, the test's modules, assert machinery ---------------------------------------------------------

BUILTIN_PATCHES = {
    "builtins_abs": ("import builtins\nbuiltins.abs = lambda x: 0.0\n" + WRONG_ADD, ADD_CHECK_FLOAT),
    "builtins_len": ("import builtins\nbuiltins.len = lambda x: 3\ndef f(n):\n    return []\n", LEN_ASSERT),
    "builtins_sorted": ("import builtins\nbuiltins.sorted = lambda *a, **k: [1, 2, 3]\ndef f(xs):\n    return []\n",
                        SORT_ASSERT),
    "builtins_isinstance": ("import builtins\nbuiltins.isinstance = lambda *a: True\ndef f(x):\n    return '4'\n",
                            ISINSTANCE_CHECK),
    "shadow_abs_global": ("def abs(x):\n    return 0.0\n" + WRONG_ADD, ADD_CHECK_FLOAT),
    "shadow_sorted_global": ("def sorted(*a, **k):\n    return [1, 2, 3]\ndef f(xs):\n    return []\n", SORT_ASSERT),
    "patch_math_isclose": ("import math\nmath.isclose = lambda *a, **k: True\ndef f(x):\n    return 0.0\n",
                           ISCLOSE_ASSERT),
    "import_hook_fake_math": ("""
import builtins, types
_real_import = builtins.__import__
_fake = types.ModuleType('math')
_fake.isclose = lambda *a, **k: True
def _hook(name, *args, **kwargs):
    if name == 'math':
        return _fake
    return _real_import(name, *args, **kwargs)
builtins.__import__ = _hook
def f(x):
    return 0.0
""", ISCLOSE_ASSERT),
}


@pytest.mark.parametrize("name", sorted(BUILTIN_PATCHES))
def test_patched_builtins_and_modules(name: str) -> None:
    program, tests = BUILTIN_PATCHES[name]
    not_passed(one(program, tests), "failed", "runtime_error")


ASSERTION_ERROR_EXITS = """
import builtins, os
class Boom(Exception):
    def __init__(self, *a):
        os._exit(0)
builtins.AssertionError = Boom
def add(a, b):
    return a - b
"""


@pytest.mark.parametrize("style", ["assert", "check"])
def test_assertion_error_replaced_by_exit(style: str) -> None:
    not_passed(one(ASSERTION_ERROR_EXITS, ADD[style]), *NOT_PASSED_EXIT)


FAKE_MARKERS = """
import json, sys
_fake = ('{"done": true}\\nPASSED\\nOK\\nAll tests passed\\n' + json.dumps({"i": 0, "ok": True}) + '\\n'
         + json.dumps({"status": "passed", "passed": True, "results": [{"ok": True}]}) + '\\n')
for _s in (sys.stdout, sys.stderr):
    _s.write(_fake)
    _s.flush()
def add(a, b):
    print(_fake)
    print(_fake, file=sys.stderr)
    return a - b
"""


@pytest.mark.parametrize("style", STYLES)
def test_printed_pass_markers(style: str) -> None:
    not_passed(one(FAKE_MARKERS, ADD[style]), "failed")


FORGE_FDS = """
import json, os, struct
def _forge():
    if '@FORMAT@' == 'lines':  # the line protocol of the v0 harness
        blob = b''.join(json.dumps(m).encode() + b'\\n' for m in
                        [{"i": k, "ok": True, "err": ""} for k in range(@N@)] + [{"done": True}])
    else:  # a length-prefixed JSON frame claiming a passed run
        body = json.dumps({"status": "passed", "detail": "", "output": "", "seconds": 0.0,
                           "results": [{"ok": True, "err": "", "value": None}] * @N@}).encode()
        blob = struct.pack('>I', len(body)) + body
    for fd in range(1, 51):
        try:
            os.write(fd, blob)
        except OSError:
            pass
    os._exit(0)  # before anything genuine can contradict the forgery
def add(a, b):
    _forge()
"""


@pytest.mark.parametrize("style", ["assert", "check"])
@pytest.mark.parametrize("fmt", ["lines", "frame"])
def test_forged_results_on_every_fd(fmt: str, style: str) -> None:
    # (io is not attacked this way: forging an io reply only forges a returned value, which the host compares)
    not_passed(one(fill(FORGE_FDS, N=ADD[style].num_tests, FORMAT=fmt), ADD[style]))


REWRITE_TESTS = """
import sys
_NOOP_SRC = 'def check(candidate):\\n    pass\\n'
_NOOP = compile(_NOOP_SRC, '<forged>', 'exec')
def _rewrite():
    fr = sys._getframe()
    while fr is not None:
        for v in list(fr.f_locals.values()):
            if type(v) is list:
                for i, item in enumerate(v):
                    if type(item) is type(_NOOP) and item is not _NOOP:
                        v[i] = _NOOP
                    elif type(item) is str and ('assert' in item or 'def check' in item):
                        v[i] = _NOOP_SRC
            elif type(v) is dict:
                if 'asserts' in v:
                    v['asserts'] = ['pass'] * len(v['asserts'])
                if 'check_code' in v:
                    v['check_code'] = _NOOP_SRC
        fr = fr.f_back
_rewrite()
def add(a, b):
    _rewrite()
    return a - b
"""


@pytest.mark.parametrize("style", ["assert", "check"])
def test_rewrite_the_test_code_in_memory(style: str) -> None:
    not_passed(one(REWRITE_TESTS, ADD[style]))


PATCH_HARNESS = """
import sys
_WORDS = ('eq', 'cmp', 'truth', 'plain', 'same', 'close', 'fresh', 'assert', 'compare', 'check', 'tag', 'verdict')
def _yes(*a, **k):
    return True
for _name, _mod in list(sys.modules.items()):
    if _name in ('sys', 'builtins') or _mod is None:
        continue
    if not (_name == '__main__' or 'mel' in _name or 'harness' in _name or 'zygote' in _name):
        continue
    for _attr, _obj in list(vars(_mod).items()):
        if callable(_obj) and any(w in _attr.lower() for w in _WORDS):
            try:
                setattr(_mod, _attr, _yes)
            except Exception:
                pass
            try:
                _obj.__code__ = _yes.__code__
            except Exception:
                pass
def add(a, b):
    return a - b
"""


@pytest.mark.parametrize("style", ["assert", "check"])
def test_monkeypatch_the_harness_module(style: str) -> None:
    not_passed(one(PATCH_HARNESS, ADD[style]))


SWAP_HELPERS = """
import sys
def add(a, b):
    yes = (lambda *a, **k: True).__code__
    fr = sys._getframe(1)
    while fr is not None:
        for name, obj in list(fr.f_globals.items()):
            if obj is add or not hasattr(obj, '__code__'):
                continue
            if any(w in name.lower() for w in ('eq', 'cmp', 'truth', 'plain', 'assert', 'same', 'close', 'fresh')):
                try:
                    obj.__code__ = yes
                except Exception:
                    pass
        fr = fr.f_back
    return a - b
"""


def test_swap_assert_helpers_from_inside_the_call() -> None:
    not_passed(one(SWAP_HELPERS, ADD["check"]))


# --- reading what the sample must not see ---------------------------------------------------------------------------

FINDER = """
import gc, os, re, sys
_PAT = re.compile(r'@SECRET_RE@')
_BPAT = re.compile(rb'@SECRET_RE@')
def _find(obj, depth=0, seen=None):
    seen = set() if seen is None else seen
    if depth > 8 or id(obj) in seen:
        return None
    seen.add(id(obj))
    t = type(obj)
    if t is str:
        m = _PAT.search(obj)
        return m.group(0) if m else None
    if t in (bytes, bytearray, memoryview):
        m = _BPAT.search(bytes(obj))
        return m.group(0).decode() if m else None
    if t is dict:
        items = list(obj.keys()) + list(obj.values())
    elif t in (list, tuple, set, frozenset):
        items = list(obj)
    elif t is type(_find.__code__):
        items = list(obj.co_consts)
    elif hasattr(obj, '__code__') and hasattr(obj, '__globals__'):
        items = [obj.__code__, obj.__defaults__, obj.__closure__ and [c.cell_contents for c in obj.__closure__]]
    else:
        return None
    for item in items:
        try:
            hit = _find(item, depth + 1, seen)
        except Exception:
            hit = None
        if hit:
            return hit
    return None
def _read_path(path, limit=1 << 20):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return b''
    try:
        return os.read(fd, limit)
    except OSError:
        return b''
    finally:
        os.close(fd)
def _ancestors():
    pid, out = os.getpid(), []
    while pid > 1 and len(out) < 12:
        try:
            with open('/proc/%d/stat' % pid) as fh:
                pid = int(fh.read().rsplit(')', 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        if pid <= 1:
            break
        out.append(pid)
        if b'@DRIVER_MARK@' in _read_path('/proc/%d/cmdline' % pid):
            break  # never reach past this module's throw-away verifier
    return out
"""

SECRET_READERS = {
    "inspect_stack_frames": """
def f(x):
    import inspect
    fr = sys._getframe()
    while fr is not None:
        for obj in (fr.f_locals, fr.f_code, fr.f_globals):
            hit = _find(obj)
            if hit:
                return hit
        fr = fr.f_back
    for info in inspect.stack(0):
        hit = _find(info.frame.f_locals) or _find(info.frame.f_code)
        if hit:
            return hit
    return ''
""",
    "gc_get_objects": """
def f(x):
    for obj in gc.get_objects():
        hit = _find(obj, 6)
        if hit:
            return hit
    return ''
""",
}


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("how", sorted(SECRET_READERS))
def test_read_expected_value_from_memory(how: str, style: str) -> None:
    # io: expected outputs must never enter the sandbox; assert/check: the test code must not share the candidate's
    # memory (else a candidate reads the expected value off its caller's frame or the heap).
    secret, pattern = new_secret()
    not_passed(one(fill(FINDER + SECRET_READERS[how], SECRET_RE=pattern), secret_tests(style, secret)), "failed")


@pytest.mark.parametrize("earlier", ["program", "test_code"])
def test_leftovers_of_an_earlier_sample(earlier: str) -> None:
    # a long-lived worker must not hand one sample's program or tests to the next (siblings share a problem in RL)
    secret, pattern = new_secret()
    if earlier == "program":
        first = one(f"def f(x):\n    return {secret!r}\n", secret_tests("io", secret))
        assert first.passed, first
    else:
        first = one("def f(x):\n    return ''\n", secret_tests("check", secret))
        assert first.status == "failed", first
    reader = FINDER + SECRET_READERS["gc_get_objects"] + SECRET_READERS["inspect_stack_frames"].replace(
        "def f(x):", "def f2(x):") + "_f1 = f\ndef f(x):\n    return _f1(x) or f2(x)\n"
    not_passed(one(fill(reader, SECRET_RE=pattern), secret_tests("io", secret)), "failed")


PROC_SELF_FD = """
def f(x):
    for name in os.listdir('/proc/self/fd'):
        fd = int(name)
        for read in (lambda: os.pread(fd, 1 << 20, 0), lambda: os.read(fd, 1 << 20)):
            try:
                os.set_blocking(fd, False)
                hit = _find(read())
            except OSError:
                continue
            if hit:
                return hit
    for path in ('/proc/self/cmdline', '/proc/self/environ'):
        hit = _find(_read_path(path))
        if hit:
            return hit
    return ''
"""

PROC_PARENT_FD = """
def f(x):
    for pid in _ancestors():
        try:
            names = os.listdir('/proc/%d/fd' % pid)
        except OSError:
            continue
        for name in names:
            hit = _find(_read_path('/proc/%d/fd/%s' % (pid, name)))
            if hit:
                return hit
    return ''
"""

HOST_DATA_FILE = """
def f(x):
    for root in ('/tmp', '/var/tmp', '/dev/shm'):
        try:
            entries = [e for e in os.scandir(root) if e.name.startswith('mel_adv_')]
        except OSError:
            continue
        for e in entries:
            for dirpath, _dirs, files in os.walk(e.path):
                for name in files:
                    hit = _find(_read_path(os.path.join(dirpath, name)))
                    if hit:
                        return hit
    return ''
"""

ENVIRONMENT = """
def f(x):
    return os.environ.get('MEL_TEST_SECRET') or next((v for v in os.environ.values() if _PAT.search(v)), '')
"""


def test_read_own_fds_and_proc_self() -> None:
    secret, pattern = new_secret()
    not_passed(one(fill(FINDER + PROC_SELF_FD, SECRET_RE=pattern), secret_tests("io", secret)), "failed")


def test_read_parent_fds() -> None:
    secret, pattern = new_secret()
    not_passed(one(fill(FINDER + PROC_PARENT_FD, SECRET_RE=pattern), secret_tests("io", secret)), "failed")


def test_environment_secret_is_not_inherited() -> None:
    not_passed(one(fill(FINDER + ENVIRONMENT, SECRET_RE=ENV_SECRET_RE), secret_tests("io", ENV_SECRET)), "failed")


def test_read_world_readable_host_data_file() -> None:
    # a dataset with the answers lying on the host (like the HumanEval jsonl under /work/shared) must be out of reach
    secret, pattern = new_secret()
    data = Path(f"/tmp/mel_adv_{MARK}")
    data.mkdir(mode=0o755)
    try:
        os.chmod(data, 0o755)
        (data / "tests.jsonl").write_text(json.dumps({"task_id": "x", "expected": secret}) + "\n")
        os.chmod(data / "tests.jsonl", 0o644)
        not_passed(one(fill(FINDER + HOST_DATA_FILE, SECRET_RE=pattern), secret_tests("io", secret)), "failed")
    finally:
        shutil.rmtree(data, ignore_errors=True)


ISOLATED_READERS = {
    "environ_of_every_process": """
def f(x):
    for pid in filter(str.isdigit, os.listdir('/proc')):
        hit = _find(_read_path('/proc/%s/environ' % pid))
        if hit:
            return hit
    return _find(dict(os.environ)) or ''
""",
    "cmdline_of_every_process": """
def f(x):
    for pid in filter(str.isdigit, os.listdir('/proc')):
        hit = _find(_read_path('/proc/%s/cmdline' % pid))
        if hit:
            return hit
    return ''
""",
    "parent_memory": """
import time
def f(x):
    budget = time.monotonic() + 1.2
    for pid in _ancestors():
        try:
            maps = open('/proc/%d/maps' % pid).read().splitlines()
            mem = os.open('/proc/%d/mem' % pid, os.O_RDONLY)
        except OSError:
            continue
        try:
            for line in maps:
                addr, perms = line.split()[:2]
                lo, hi = (int(a, 16) for a in addr.split('-'))
                if 'r' not in perms or hi - lo > (256 << 20):
                    continue
                try:
                    hit = _find(os.pread(mem, hi - lo, lo))
                except (OSError, OverflowError, MemoryError):
                    continue
                if hit:
                    return hit
                if time.monotonic() > budget:
                    break
        finally:
            os.close(mem)
    return ''
""",
}


@pytest.mark.parametrize("how", sorted(ISOLATED_READERS))
def test_read_secret_from_the_verifier_process(how: str) -> None:
    # the throw-away verifier holds the expected output in its argv, memory and (MEL_TEST_SECRET) environment
    secret, pattern = new_secret()
    not_passed(isolated(fill(FINDER + ISOLATED_READERS[how], SECRET_RE=pattern), secret_tests("io", secret),
                        secret=secret), "failed")


PTRACE_PARENT = FINDER + """
import ctypes
def add(a, b):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    libc.ptrace.restype = ctypes.c_long
    attached = 0
    for pid in _ancestors():
        if libc.ptrace(16, pid, None, None) == 0:  # PTRACE_ATTACH
            attached += 1
            try:
                os.waitpid(pid, 0x40000000)  # __WALL
            except OSError:
                pass
            libc.ptrace(17, pid, None, None)  # PTRACE_DETACH
    if not attached:
        raise PermissionError('ptrace denied')
    return a + b
"""


def test_ptrace_attach_to_parent() -> None:
    not_passed(isolated(fill(PTRACE_PARENT, SECRET_RE="x"), ADD["io"]), "failed", "runtime_error")


# --- escaping: filesystem, network, processes -----------------------------------------------------------------------

WRITE_TARGETS = {
    "tmp": f"/tmp/mel_pwned_{MARK}",
    "dev_shm": f"/dev/shm/mel_pwned_{MARK}",
    "var_tmp": f"/var/tmp/mel_pwned_{MARK}",
    "repo": str(REPO / f"mel_pwned_{MARK}"),
    "home": str(HOME / f"mel_pwned_{MARK}"),
}
WRITE_OUTSIDE = """
def add(a, b):
    try:
        with open(@PATH@, 'w') as fh:
            fh.write('pwned')
    except OSError:
        pass
    return a - b
"""


@pytest.mark.parametrize("where", sorted(WRITE_TARGETS))
def test_write_outside_the_scratch_dir(where: str) -> None:
    path = WRITE_TARGETS[where]
    try:
        not_passed(one(fill(WRITE_OUTSIDE, PATH=repr(path)), ADD["io"]), "failed")
        assert not os.path.lexists(path), f"the sample wrote {path} on the host"
    finally:
        if os.path.lexists(path):
            os.unlink(path)


CONNECT = """
import socket
def add(a, b):
    s = socket.socket(@FAMILY@, socket.SOCK_STREAM)
    s.settimeout(1.0)
    s.connect(@ADDR@)
    s.sendall(b'pwned')
    s.close()
    return a + b
"""


def _assert_no_connection(server: socket.socket) -> None:
    server.setblocking(False)
    try:
        conn, _ = server.accept()
    except BlockingIOError:
        return
    conn.close()
    pytest.fail("a sandboxed sample connected to a socket on the host")


def test_connect_to_host_loopback_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        v = one(fill(CONNECT, FAMILY="socket.AF_INET", ADDR=repr(("127.0.0.1", port))), ADD["io"])
        _assert_no_connection(server)
    not_passed(v, "failed", "runtime_error")


def test_connect_to_host_unix_socket() -> None:
    d = Path(f"/tmp/mel_sock_{MARK}")
    d.mkdir()
    try:
        os.chmod(d, 0o755)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(str(d / "s"))
            os.chmod(d / "s", 0o777)  # a world-connectable host service (like an X11 or agent socket)
            server.listen(8)
            v = one(fill(CONNECT, FAMILY="socket.AF_UNIX", ADDR=repr(str(d / "s"))), ADD["io"])
            _assert_no_connection(server)
        not_passed(v, "failed", "runtime_error")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_connect_to_host_abstract_unix_socket() -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind("\0mel_abs_" + MARK)
        server.listen(8)
        v = one(fill(CONNECT, FAMILY="socket.AF_UNIX", ADDR=repr("\0mel_abs_" + MARK)), ADD["io"])
        _assert_no_connection(server)
    not_passed(v, "failed", "runtime_error")


def test_connect_to_public_ip() -> None:
    code = CONNECT.replace("s.connect(@ADDR@)", "s.connect(('1.1.1.1', 80))")
    not_passed(one(fill(code, FAMILY="socket.AF_INET"), ADD["io"]), "failed", "runtime_error")


NAME_ME = """
import ctypes, os, sys, time
def _name_me():
    try:
        ctypes.CDLL(None).prctl(15, b'@MARK@', 0, 0, 0)  # PR_SET_NAME: the host scans for this marker
    except Exception:
        pass
"""

FORK_BOMB = NAME_ME + """
def add(a, b):
    _name_me()
    for _ in range(9):  # capped at 2**9 processes in case nothing else caps it
        try:
            os.fork()
        except OSError:
            pass
    while True:
        time.sleep(0.05)
"""

FORK_MANY = NAME_ME + """
def add(a, b):
    _name_me()
    for _ in range(300):
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
    return a + b
"""


def test_fork_bomb() -> None:
    v = one(fill(FORK_BOMB), ADD["io"])
    not_passed(v, "timeout", "runtime_error", "memory", "failed")
    assert v.seconds < TIMEOUT + 5, v


def test_process_count_is_capped() -> None:
    not_passed(one(fill(FORK_MANY), ADD["io"]), "failed", "runtime_error", "timeout")


def test_memory_bomb() -> None:
    not_passed(one("def add(a, b):\n    x = bytearray(10 ** 10)\n    return a + b\n", ADD["io"]), "memory")


def test_infinite_loop() -> None:
    v = one("def add(a, b):\n    while True:\n        pass\n", ADD["io"])
    not_passed(v, "timeout")
    assert v.seconds < TIMEOUT + 3, v


def test_ignore_termination_signals() -> None:
    code = ("import signal\nfor _s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU, signal.SIGALRM):\n"
            "    signal.signal(_s, signal.SIG_IGN)\ndef add(a, b):\n    while True:\n        pass\n")
    v = one(code, ADD["io"])
    not_passed(v, "timeout")
    assert v.seconds < TIMEOUT + 3, v


CHILD_LEFT = NAME_ME + """
def add(a, b):
    if os.fork() == 0:
        _name_me()
        time.sleep(60)
        os._exit(0)
    return a - b
"""

WAIT_ON_SLEEPER = NAME_ME + """
def add(a, b):
    pid = os.fork()
    if pid == 0:
        _name_me()
        time.sleep(60)
        os._exit(0)
    os.waitpid(pid, 0)
    return a + b
"""

SETSID_GRANDCHILD = NAME_ME + """
import signal
def add(a, b):
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                signal.signal(s, signal.SIG_IGN)
            _name_me()
            try:
                os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', '@MARK@'])
            except Exception:
                time.sleep(60)
            os._exit(0)
        os._exit(0)
    os.waitpid(pid, 0)
    return a - b
"""


def test_forked_child_left_sleeping() -> None:
    not_passed(one(fill(CHILD_LEFT), ADD["io"]), "failed")


def test_waiting_on_a_sleeping_child_times_out() -> None:
    not_passed(one(fill(WAIT_ON_SLEEPER), ADD["io"]), "timeout")


def test_setsid_grandchild_does_not_survive() -> None:
    not_passed(one(fill(SETSID_GRANDCHILD), ADD["io"]), "failed")


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_huge_output(stream: str) -> None:
    code = f"import sys\ndef add(a, b):\n    while True:\n        sys.{stream}.write('x' * 1000000)\n"
    not_passed(one(code, ADD["io"]), "output_limit")


def test_huge_file_in_scratch() -> None:
    code = ("def add(a, b):\n    with open('big.bin', 'wb') as fh:\n        for _ in range(256):\n"
            "            fh.write(b'x' * (1 << 20))\n    return a + b\n")
    not_passed(one(code, ADD["io"]), "failed", "runtime_error", "output_limit")


THREAD_LEFT = """
import threading
def _spin():
    while True:
        pass
threading.Thread(target=_spin).start()
def add(a, b):
    return a - b
"""


def test_thread_left_running() -> None:
    v = one(THREAD_LEFT, ADD["io"])
    not_passed(v, "failed")
    assert v.seconds < TIMEOUT + 3, v


def test_deep_recursion() -> None:
    code = ("import sys\nsys.setrecursionlimit(10 ** 8)\ndef add(a, b):\n    def r(n):\n"
            "        return r(n + 1) + 1\n    return r(0)\n")
    not_passed(one(code, ADD["io"]))


def test_deeply_nested_return_value() -> None:
    code = "def f(x):\n    v = [x, x]\n    for _ in range(100000):\n        v = [v]\n    return v\n"
    not_passed(one(code, typed_tests("list", "io")), "failed")


KILL_PARENT = FINDER + """
import signal
def add(a, b):
    ppid = os.getppid()
    try:
        os.killpg(os.getpgid(ppid), signal.SIGKILL)
    except OSError:
        pass
    for pid in _ancestors():  # up to (and including) this module's throw-away verifier, never further
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return a - b
"""

KILL_VISIBLE = """
import os, signal
def add(a, b):
    me = os.getpid()
    for name in filter(str.isdigit, os.listdir('/proc')):
        if int(name) == me:
            continue
        try:
            with open('/proc/%s/cmdline' % name, 'rb') as fh:
                cmd = fh.read()
        except OSError:
            continue
        if b'@DECOY@' in cmd or b'@DRIVER_MARK@' in cmd:  # only what this test module owns
            try:
                os.kill(int(name), signal.SIGKILL)
            except OSError:
                pass
    return a - b
"""


def test_kill_the_parent() -> None:
    # (sandbox_error is fine here: the sample may well kill its own sandbox worker)
    not_passed(isolated(fill(KILL_PARENT, SECRET_RE="x"), ADD["io"]), "failed", "runtime_error", "sandbox_error")


@pytest.fixture
def decoy():
    """A process of another sample's kind (the sandbox's uid when we are root): samples must not be able to kill it."""
    cmd = [sys.executable, "-c", "import time; time.sleep(120)", DECOY]
    if os.geteuid() == 0 and shutil.which("setpriv"):
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", *cmd]
    proc = subprocess.Popen(cmd, cwd="/", start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while not marked_processes(DECOY) and time.monotonic() < deadline:
        time.sleep(0.05)
    yield proc
    proc.kill()
    proc.wait()


def test_kill_every_visible_process(decoy: subprocess.Popen) -> None:
    not_passed(isolated(fill(KILL_VISIBLE), ADD["io"]), "failed", "runtime_error", "sandbox_error")
    assert decoy.poll() is None, f"the sample killed another process (exit {decoy.returncode})"


# --- the host at the end --------------------------------------------------------------------------------------------

def test_zz_host_unharmed(host_before) -> None:
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
