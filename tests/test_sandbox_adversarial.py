"""Adversarial sandbox suite, part 1 -- exits, lying values, patched builtins, forged results. One hostile property per
test; each must end NOT passed with the host unharmed. The helpers and the contract are in ``sandbox_attack_kit.py``;
part 2 is
``test_sandbox_adversarial_host.py``."""
from __future__ import annotations

import pytest

from sandbox_attack_kit import *  # noqa: F401,F403  (helpers, constants and the autouse fixtures)
from sandbox_attack_kit import host_before, isolation, no_stray_marked_processes  # noqa: F401  (fixtures, by name)

pytestmark = pytest.mark.timeout(180)

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


def test_zz_host_unharmed(host_before) -> None:
    check_host_unharmed(host_before)
