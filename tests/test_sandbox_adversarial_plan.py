"""Adversarial sandbox suite, part 3 -- the planned calls (`mel.verify.plan`): the child evaluates the tests' calls
ahead of them and streams the results. One hostile property per test; each must end NOT passed with the host
unharmed (the contract and helpers are in ``sandbox_attack_kit.py``). Reading the expected value from the child's
memory while it makes the planned calls is part 2's ``test_read_expected_value_from_memory`` (every style is planned
there): the child is sent the calls only, never a comparison."""
from __future__ import annotations

import pytest

from sandbox_attack_kit import *  # noqa: F401,F403  (helpers, constants and the autouse fixtures)
from sandbox_attack_kit import host_before, no_stray_marked_processes  # noqa: F401  (fixtures, by name)

pytestmark = pytest.mark.timeout(180)

LIAR = """
class Liar:
    def __eq__(self, o): return True
    def __ne__(self, o): return False
    def __hash__(self): return 0
    def __bool__(self): return True
    def __sub__(self, o): return 0.0
    __rsub__ = __sub__
    def __abs__(self): return 0.0
"""


def test_program_class_built_by_the_tests_and_returned_with_a_lying_eq() -> None:
    # `Pair(1, 2)` is built in the child (the program's class); what comes back is a program object, not plain data
    program = LIAR + "class Pair:\n    def __init__(self, a, b):\n        self.a, self.b = a, b\n" \
                     "def f(p):\n    return Liar()\n"
    tests = CodeTests(style="assert", asserts=("assert f(Pair(1, 2)) == 3",))
    not_passed(one(program, tests), "failed")


@pytest.mark.parametrize("style", STYLES)
def test_patched_eval_compile_and_literal_eval_in_the_child(style: str) -> None:
    # the child's own evaluation of the planned calls is the program's to corrupt: it only yields another value
    program = LIAR + WRONG_ADD + """
import ast, builtins
builtins.eval = lambda *a, **k: Liar()
builtins.compile = lambda *a, **k: (lambda: Liar()).__code__
ast.literal_eval = lambda s: [Liar(), Liar()]
"""
    not_passed(one(program, ADD[style]), "failed", "runtime_error")


FORGE_PLANNED = """
import json, os, struct
def _frame(obj):
    body = json.dumps(obj).encode()
    return struct.pack('>I', len(body)) + body
_blob = b''.join(_frame(m) for m in [
    {"ready": {"f": "call", "__mel_planned__": "call", "__builtins__": ["value", ["d", []]]}},
    *[{"value": ["s", "@PATTERN@"], "ok": True, "passed": True} for _ in range(3)],
    {"error": "NameError", "message": "", "unbound": True},
    {"status": "passed", "results": [{"ok": True}]},
])
for _fd in range(1, 51):
    try:
        os.write(_fd, _blob)
    except OSError:
        pass
def f(x):
    return ''
"""


@pytest.mark.parametrize("style", STYLES)
def test_forged_ready_and_planned_results(style: str) -> None:
    # written ahead of the real replies: a forged export list (dunder names too) and forged results are only values
    secret, pattern = new_secret()
    not_passed(one(fill(FORGE_PLANNED, PATTERN=pattern), secret_tests(style, secret)))


RIGHT_ONLY_WHEN_PLANNED = """
import sys
def add(a, b):
    fr = sys._getframe(1)
    while fr is not None:
        if fr.f_code.co_name == '_planned':
            return a + b  # right while the child makes the planned calls ...
        fr = fr.f_back
    return a - b  # ... wrong call by call
"""


def test_program_that_is_right_only_ahead_and_makes_the_run_diverge() -> None:
    # The short-circuit skips add(0, 0) and the next unit reads a later result: the planned run is discarded, and
    # the verdict is the call-by-call run's.
    tests = CodeTests(style="assert", asserts=("assert add(1, 2) == 3 or add(0, 0) == 1", "assert add(3, 4) == 7"))
    not_passed(one(RIGHT_ONLY_WHEN_PLANNED, tests), "failed")


def test_zz_host_unharmed(host_before) -> None:
    check_host_unharmed(host_before)
