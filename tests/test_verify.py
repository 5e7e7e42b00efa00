"""Verification v0: honest passes, every failure mode, forgery attempts, extraction, math/regex, process hygiene."""
from __future__ import annotations

from conftest import child_pids
import os
import time

import pytest

from mel.data.types import CodeTests, Problem
from mel.verify import (
    STATUSES, VERIFIERS, extract_answer, extract_code, isolation_mode, shutdown_math_workers, verify_code,
    verify_math, verify_problems, verify_regex,
)
from mel.verify.sandbox import shutdown_sandbox_workers

ADD_IO = CodeTests(style="io", entry_point="add", inputs=("[1, 2]", "[3, 4]", "[-5, 5]"), outputs=("3", "7", "0"))
ADD_ASSERT = CodeTests(style="assert", asserts=("assert add(1, 2) == 3", "assert add(3, 4) == 7"))
ADD_CHECK = CodeTests(style="check", entry_point="add", check_code=(
    "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert abs(candidate(0.1, 0.2) - 0.3) < 1e-9\n"))
GOOD = "Here is my solution:\n```python\ndef add(a, b):\n    return a + b\n```\nIt adds the numbers."


def one(code: str, tests: CodeTests = ADD_IO, **kw):
    (verdict,) = verify_code([code], [tests], **kw)
    assert verdict.status in STATUSES
    return verdict


def test_isolation_mode_is_known() -> None:
    assert isolation_mode() in ("bwrap", "unshare")  # auto never settles for less than the whole contract


@pytest.mark.parametrize("tests", [ADD_IO, ADD_ASSERT, ADD_CHECK], ids=["io", "assert", "check"])
def test_honest_pass(tests: CodeTests) -> None:
    v = one(GOOD, tests)
    assert (v.passed, v.status, v.tests_passed, v.tests_total) == (True, "passed", tests.num_tests, tests.num_tests)
    assert v.reward == 1.0 and v.seconds > 0


def test_io_float_tolerance_and_containers() -> None:
    tests = CodeTests(style="io", entry_point="f", inputs=("[0.1, 0.2]",), outputs=("(0.3, [1, {'a': None}])",),
                      atol=1e-6)
    assert one("def f(a, b):\n    return (a + b, [1, {'a': None}])", tests).passed
    assert not one("def f(a, b):\n    return [a + b, [1, {'a': None}]]", tests).passed  # list is not a tuple


@pytest.mark.parametrize("tests,name,n_ok",
                         [(ADD_IO, "test 1", 1), (ADD_ASSERT, "test 1", 1), (ADD_CHECK, "test 0", 0)])
def test_wrong_answer_fails_naming_the_test(tests: CodeTests, name: str, n_ok: int) -> None:
    v = one("def add(a, b):\n    return 3 if a == 1 else a * b", tests)
    assert (v.passed, v.status) == (False, "failed")
    assert v.detail.startswith(name), v.detail
    assert v.tests_passed == n_ok


def test_syntax_error() -> None:
    v = one("def add(a, b)\n    return a + b")
    assert (v.passed, v.status) == (False, "syntax_error")


def test_runtime_error_while_defining() -> None:
    v = one("raise ValueError('boom')\ndef add(a, b):\n    return a + b")
    assert (v.passed, v.status) == (False, "runtime_error") and "boom" in v.detail


def test_missing_entry_point_fails() -> None:
    assert one("def plus(a, b):\n    return a + b").status == "failed"


def test_infinite_loop_times_out() -> None:
    v = one("def add(a, b):\n    while True:\n        pass", timeout_s=1.0)
    assert (v.passed, v.status) == (False, "timeout")
    assert v.seconds < 5


def test_memory_bomb() -> None:
    for bomb in ("x = bytearray(10 ** 11)", "x = []\nwhile True:\n    x.append(' ' * 10 ** 6)"):
        v = one(bomb + "\ndef add(a, b):\n    return a + b", memory_mb=256, timeout_s=5.0)
        assert (v.passed, v.status) == (False, "memory"), v


def test_huge_print_is_still_decided() -> None:
    v = one("print('x' * 3_000_000)\ndef add(a, b):\n    print('y' * 100_000)\n    return a + b")
    assert v.passed, v
    v = one("def add(a, b):\n    while True:\n        print('x' * 100_000)", timeout_s=3.0)
    assert (v.passed, v.status) == (False, "output_limit")


@pytest.mark.parametrize("exit_code", [
    "import sys\nsys.exit(0)\n",
    "import os\nos._exit(0)\n",
    "def add(a, b):\n    import sys\n    sys.exit(0)\n",
    "def add(a, b):\n    import os\n    os._exit(0)\n",
    "def add(a, b):\n    raise SystemExit(0)\n",
    "def add(a, b):\n    raise KeyboardInterrupt\n",
])
@pytest.mark.parametrize("tests", [ADD_IO, ADD_ASSERT, ADD_CHECK], ids=["io", "assert", "check"])
def test_exiting_never_passes(exit_code: str, tests: CodeTests) -> None:
    v = one(exit_code, tests)
    assert not v.passed and v.status in ("runtime_error", "failed"), v


FORGERIES = {
    "always_equal": "class A:\n    def __eq__(self, o): return True\n    def __ne__(self, o): return False\n"
                    "    def __lt__(self, o): return True\n    def __bool__(self): return True\n"
                    "    def __sub__(self, o): return self\n    def __abs__(self): return self\n"
                    "def add(a, b):\n    return A()\n",
    "int_subclass": "class I(int):\n    def __eq__(self, o): return True\n    __hash__ = int.__hash__\n"
                    "def add(a, b):\n    return I(0)\n",
    "float_subclass": "class F(float):\n    def __eq__(self, o): return True\n    def __lt__(self, o): return True\n"
                      "    def __sub__(self, o): return self\n    def __abs__(self): return self\n"
                      "def add(a, b):\n    return F(99.0)\n",
    "fake_stdout": "import json\nprint(json.dumps({'i': 0, 'ok': True}))\nprint(json.dumps({'done': True}))\n"
                   "def add(a, b):\n    return 0\n",
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
@pytest.mark.parametrize("tests", [ADD_IO, ADD_ASSERT, ADD_CHECK], ids=["io", "assert", "check"])
def test_forged_results_never_pass(name: str, tests: CodeTests) -> None:
    v = one(FORGERIES[name], tests)
    assert not v.passed and v.status == "failed", v


def test_network_is_blocked_where_isolated() -> None:
    code = ("import socket\ns = socket.socket()\ns.settimeout(2)\ns.connect(('1.1.1.1', 80))\n"
            "def add(a, b):\n    return a + b\n")
    assert one(code).status == "runtime_error"


def test_never_raises_on_odd_text_and_keeps_order() -> None:
    odd = ["", "\x00\x00", "\ud800 lone surrogate", "```", "```python\n", "}{" * 1000, "def add(a, b):\n" * 3, GOOD]
    verdicts = verify_code(odd, [ADD_IO] * len(odd), workers=4)
    assert [v.passed for v in verdicts] == [False] * (len(odd) - 1) + [True]
    assert verify_code([], []) == []


def test_extract_code() -> None:
    assert extract_code(GOOD) == "def add(a, b):\n    return a + b"
    two = "```python\nx = 1\n```\nbetter:\n```python\ndef f():\n    return 2\n```\nusage:\n```python\nf()\n```"
    assert extract_code(two) == "def f():\n    return 2"  # longest python block
    assert extract_code("```\ndef g(): pass\n```") == "def g(): pass"  # untagged fence
    assert extract_code("```python\ndef h():\n    return 1") == "def h():\n    return 1"  # cut-off fence
    chat = "<|im_start|>assistant\nSure! Here it is.\ndef k(x):\n    return x\n\nThis returns x.<|im_end|>"
    assert extract_code(chat) == "def k(x):\n    return x"
    assert extract_code("import math\nprint(math.pi)") == "import math\nprint(math.pi)"


def test_extract_answer() -> None:
    assert extract_answer("so \\boxed{\\frac{1}{2}} and later \\boxed{\\frac{3}{\\sqrt{4}}}") == "\\frac{3}{\\sqrt{4}}"
    assert extract_answer("The total is 1,234.5 dollars, not 7") == "7"
    assert extract_answer("we get -1,234.5") == "-1234.5"
    assert extract_answer("ratio 3/4") == "3/4"
    assert extract_answer("\\boxed{unbalanced") is None
    assert extract_answer("no digits here") is None
    assert extract_answer("\\boxed{x} then \\boxed{") == "x"


def test_math_verify() -> None:
    preds = ["so the answer is \\boxed{1/2}", "\\boxed{3}", "I give up", "it is 72", "\\boxed{\\frac{1}{2}}"]
    golds = ["0.5", "4", "1", "72", "0.5"]
    vs = verify_math(preds, golds)
    assert [v.status for v in vs] == ["passed", "failed", "no_answer", "passed", "passed"]
    assert verify_math(preds[:1], golds[:1])[0].passed  # cached path


def test_math_stuck_item_is_killed() -> None:
    vs = verify_math(["\\boxed{9^{9^{9^{9}}}}", "\\boxed{2}"], ["2", "2"], timeout_s=1.0)
    assert [v.status for v in vs] == ["timeout", "passed"]


def test_regex() -> None:
    vs = verify_regex(["  yes  ", "no", "x"], ["yes$", "yes", "("])
    assert [v.status for v in vs] == ["passed", "failed", "sandbox_error"]


def test_an_unknown_kind_is_an_error_naming_the_known_ones_before_anything_runs(monkeypatch) -> None:
    import mel.verify
    from mel.registry import Registry

    calls = []
    spied = Registry("verifier")
    for kind in VERIFIERS:
        verifier = VERIFIERS.get(kind)
        spied.register(kind)(lambda *a, _fn=verifier, **k: calls.append(a) or _fn(*a, **k))
    monkeypatch.setattr(mel.verify, "VERIFIERS", spied)
    problems = [Problem("r", "regex", "say hi", answer="hi"), Problem("p", "prose", "write a poem", answer="x")]
    with pytest.raises(KeyError, match="unknown verifier 'prose'; known: code, math, regex"):
        verify_problems(problems, ["hi", "roses"])
    assert calls == []
    assert [v.status for v in verify_problems(problems[:1], ["hi"])] == ["passed"] and len(calls) == 1


def test_verify_problems_mixed_kinds_in_order() -> None:
    assert set(VERIFIERS) == {"code", "math", "regex"}
    code = Problem("c", "code", "write add", tests=ADD_IO)
    math_p = Problem("m", "math", "1/2?", answer="0.5")
    regex = Problem("r", "regex", "say hi", answer="hi")
    problems = [math_p, code, regex, code, math_p, regex]
    completions = ["\\boxed{1/2}", "def add(a, b):\n    return a - b", "hi there", GOOD, "\\boxed{2}", "bye"]
    vs = verify_problems(problems, completions, timeout_s=5.0, memory_mb=512, workers=2)
    assert [v.passed for v in vs] == [True, False, True, True, False, False]
    assert [v.status for v in vs] == ["passed", "failed", "passed", "passed", "failed", "failed"]




@pytest.fixture(scope="module", autouse=True)
def children_before_this_module():
    """Children that other tests' session fixtures own (e.g. a Prefect test server) are not ours to judge."""
    return child_pids(os.getpid())


def test_zz_no_stray_processes(children_before_this_module) -> None:
    """A sample's forked child that sleeps on is gone after the sample; no worker outlives the shutdown."""
    name = "mstray%d" % (os.getpid() % 100000)  # the child names itself (comm) so only it can match
    one("import ctypes, os, time\nif os.fork() == 0:\n    ctypes.CDLL(None).prctl(15, b'%s', 0, 0, 0)\n"
        "    time.sleep(60)\ndef add(a, b):\n    return a + b" % name)
    def strays() -> list[str]:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().strip() == name:
                        found.append(pid)
            except OSError:
                pass
        return found

    deadline = time.monotonic() + 5  # the kernel tears a killed process down in a moment; unkilled, it sleeps 60 s
    while strays() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not strays(), strays()  # killed when its sample ended, while the worker lives on
    shutdown_math_workers()
    shutdown_sandbox_workers()  # the pre-started sandbox workers end with it
    zombies_or_kids = child_pids(os.getpid()) - children_before_this_module
    assert not zombies_or_kids, zombies_or_kids


def test_docker_backend_where_an_engine_or_podman_is() -> None:
    """A Docker engine, else podman's Docker API started for the test (``docker_engine.py``); skipped without both."""
    import docker_engine

    why = docker_engine.ensure_engine()
    if why:
        pytest.skip(why)
    assert isolation_mode("docker") == "docker"
    good = verify_code([GOOD], [ADD_IO], isolation="docker")
    bad = verify_code(["import os\nos._exit(0)\n"], [ADD_IO], isolation="docker")
    assert good[0].passed and not bad[0].passed


def test_unknown_isolation_is_refused() -> None:
    with pytest.raises(ValueError, match="known: auto, bwrap, unshare, docker, none"):
        verify_code([GOOD], [ADD_IO], isolation="podman")


def test_entry_point_may_shadow_a_builtin_and_types_cross_as_arguments() -> None:
    # MBPP 126 defines `sum`; MBPP 533 passes `int` as an argument: both must work for honest programs
    shadow = CodeTests(style="assert", entry_point="sum", asserts=("assert sum(10, 15) == 25",))
    assert verify_code(["def sum(a, b):\n    return a + b"], [shadow])[0].passed
    typed = CodeTests(style="assert", entry_point="rm", asserts=("assert rm((4, 5, 7.7), int) == [7.7]",))
    assert verify_code(["def rm(xs, t):\n    return [x for x in xs if not isinstance(x, t)]"], [typed])[0].passed


def test_call_outputs_writes_huge_integers_as_readable_literals() -> None:
    import ast

    from mel.verify.sandbox import call_outputs

    ok, literal = call_outputs("def big(n):\n    return [10 ** n, -(10 ** n)]", "big", ["[5000]"])[0]
    assert ok and ast.literal_eval(literal) == [10 ** 5000, -(10 ** 5000)]


def test_huge_decimal_integers_in_tests_are_compared() -> None:
    expected = "1" + "0" * 5000  # past Python's 4300-digit conversion limit
    tests = CodeTests(style="io", entry_point="big", inputs=("[5000]",), outputs=(expected,))
    assert verify_code(["def big(n):\n    return 10 ** n"], [tests])[0].passed
    wrong = verify_code(["def big(n):\n    return 10 ** n + 1"], [tests])[0]
    assert wrong.status == "failed" and "too long to print" in wrong.detail
