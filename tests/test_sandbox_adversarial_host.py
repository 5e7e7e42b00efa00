"""Adversarial sandbox suite, part 2 -- reading secrets, files, network, processes. One hostile property per test;
each must end NOT passed with the host unharmed. The helpers and the contract are in ``sandbox_attack_kit.py``; part 1
is
``test_sandbox_adversarial.py``."""
from __future__ import annotations

import shutil
import socket

import pytest

from sandbox_attack_kit import *  # noqa: F401,F403  (helpers, constants and the autouse fixtures)
from sandbox_attack_kit import host_before, isolation, no_stray_marked_processes  # noqa: F401  (fixtures, by name)

pytestmark = pytest.mark.timeout(180)

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


@pytest.mark.parametrize("where", ["/tmp", "/dev/shm"])
def test_files_an_earlier_sample_left_are_gone(where: str) -> None:
    # the sandbox's own /tmp and /dev/shm outlive a sample in its worker: a file planted there must not reach the
    # next sample (which passes only if it finds it)
    path = f"{where}/{MARK}-left"
    plant = f"import os\nos.makedirs({where!r}, exist_ok=True)\nopen({path!r}, 'w').write('x')\n" + GOOD_ADD
    assert one(plant, ADD["io"]).passed  # the write itself is allowed: it is the sandbox's private tmpfs
    finder = f"import os\ndef add(a, b):\n    return a + b if os.path.exists({path!r}) else a - b\n"
    for _ in range(3):  # whichever pre-started worker runs it
        not_passed(one(finder, ADD["io"]), "failed")
    assert not os.path.lexists(path), "the sample's private file is on the host"


def test_an_unremovable_directory_left_in_the_scratch_dir_does_not_reach_the_next_sample() -> None:
    # every sample of a worker gets the same scratch path: one that cannot be removed (no permissions on a
    # subdirectory) must not be the next sample's (it gets a fresh one), and the next sample still runs
    plant = "import os\nos.makedirs('d/e')\nopen('left', 'w').write('x')\nos.chmod('d', 0)\n" + GOOD_ADD
    assert one(plant, ADD["io"]).passed
    finder = "import os\ndef add(a, b):\n    return a + b if os.listdir('.') else a - b\n"
    for _ in range(3):  # whichever pre-started worker runs it
        not_passed(one(finder, ADD["io"]), "failed")
    assert one(GOOD_ADD, ADD["io"]).passed


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


def test_zz_host_unharmed(host_before) -> None:
    check_host_unharmed(host_before)
