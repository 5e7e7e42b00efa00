"""The host-side test plan (`mel.verify.plan`): which calls are planned (static), where the prefix stops, in what
order, and what the host runs in their place. Pure: no sandbox."""
from __future__ import annotations

import ast

import pytest

from mel.data.types import CodeTests
from mel.verify.plan import PLANNED, _Segments, entry_point_of, plan_tests


def asserts(*units: str, setup: str = "") -> CodeTests:
    return CodeTests(style="assert", asserts=units, setup_code=setup)


def check(body: str, entry: str = "f", head: str = "") -> CodeTests:
    return CodeTests(style="check", entry_point=entry, check_code=head + "def check(candidate):\n" + body)


def planned(tests: CodeTests) -> list[tuple[str, str]]:
    return [(c.name, c.source) for c in plan_tests(tests).calls]


@pytest.mark.parametrize("call", [
    "f(1, 'a', None, -2.5, 3 + 4j)",
    "f([1, 2], (3,), {4, 5}, {'k': [6]}, frozenset())",
    "f(*[1, 2], **{'k': 3})",
    "f(x=1, y=[2])",
    "f(1 + 2 * 3, not True, 2 ** 10)",
    "f(list(range(3)), sorted({3, 1}), len('abc'))",  # builtins: evaluated in the child
    "f(Pair(5, 24), Pair(1, 2))",  # a program class: instances never cross
    "f(g(3))",  # another program function's result, passed on in the child
    "f(R, R[0], R.attr)",  # program values
    "f('abc'[1:], (1, 2)[0])",
    "f(1 if True else 2)",
    "f(f'{1}x')",
])
def test_static_arguments_are_planned_as_source(call: str) -> None:
    assert planned(asserts(f"assert {call} == 3")) == [("f", call)]


@pytest.mark.parametrize("call", [
    "f(lambda x: x)",
    "f([i for i in range(3)])",
    "f(x)",  # a name the test code binds: a host value
])
def test_non_static_arguments_are_not_planned(call: str) -> None:
    assert planned(asserts("x = 2", f"assert {call} == 3")) == []


def test_only_program_functions_are_planned_and_the_comparison_stays_on_the_host() -> None:
    p = plan_tests(asserts("assert sorted(f([3, 1, 2])) == [1, 2, 3]", "assert abs(f(0.1) - 0.3) < 1e-9"))
    assert [c.source for c in p.calls] == ["f([3, 1, 2])", "f(0.1)"]
    assert p.entry_point == ""  # a program's `def sorted` does not replace the builtin here
    names = {n for code in p.units for n in code.co_names}
    assert PLANNED in names and "sorted" in names and "abs" in names


def test_entry_point_that_shadows_a_builtin() -> None:
    tests = asserts("assert sum(10,15) == 6", "assert sum(4,6) == 3")  # MBPP 126
    assert entry_point_of(tests) == "sum"
    assert planned(tests) == [("sum", "sum(10,15)"), ("sum", "sum(4,6)")]


def test_candidate_is_the_entry_point_in_the_child() -> None:
    tests = check("    assert candidate([1, 2]) == 3\n    assert candidate(*'ab') == 'ba'\n", entry="g")
    p = plan_tests(tests)
    assert [(c.name, c.source) for c in p.calls] == [("g", "candidate([1, 2])"), ("g", "candidate(*'ab')")]
    assert p.param == "candidate"


def test_evaluation_order_is_plan_order() -> None:
    tests = asserts("assert f(1) == f(2) and {f(3): f(4), **f(5)} == f(6)", "assert f(7)")
    assert [c.source for c in plan_tests(tests).calls] == [f"f({i})" for i in range(1, 8)]


def test_prefix_stops_at_the_first_statement_that_uses_the_program_otherwise() -> None:
    body = ("    assert candidate(1) == 1\n"
            "    for x in range(3):\n        assert candidate(x) == x\n"
            "    assert candidate(2) == 2\n")
    assert [c.source for c in plan_tests(check(body)).calls] == ["candidate(1)"]



@pytest.mark.parametrize("stopper", [
    "g = candidate",  # the program as a value
    "assert str(candidate) != ''",  # ... handed to host code
    "assert (lambda: candidate(2))() == 2",
    "assert [candidate(i) for i in [1]]",
    "assert candidate(2) if True else 0",  # conditional: evaluation order is not source order
    "def h():\n        return candidate(2)",
    "with open('x') as fh:\n        candidate(fh)",
])
def test_these_statements_stop_the_prefix(stopper: str) -> None:
    body = f"    assert candidate(1) == 1\n    {stopper}\n    assert candidate(3) == 3\n"
    assert [c.source for c in plan_tests(check(body)).calls] == ["candidate(1)"]


def test_program_function_may_take_the_candidate() -> None:
    assert planned(check("    assert f(candidate) == 1\n", entry="g")) == [("f", "f(candidate)")]


def test_statements_without_program_names_do_not_stop_the_prefix() -> None:
    body = ("    import math\n    r = candidate(2)\n    assert isinstance(r, int)\n"
            "    for i in range(2):\n        assert i < 2\n    assert math.isclose(candidate(3), 9)\n")
    assert [c.source for c in plan_tests(check(body)).calls] == ["candidate(2)", "candidate(3)"]


def test_prefix_spans_assert_units_in_order() -> None:
    tests = asserts("assert f(1) == 1", "assert f(lambda: 2) == 2", "assert f(3) == 3")
    assert [c.source for c in plan_tests(tests).calls] == ["f(1)"]


def test_assert_message_calls_stay_proxy_calls() -> None:
    body = '    assert candidate(1) == True, "got " + str(candidate(1))\n    assert candidate(2) == 2\n'
    p = plan_tests(check(body))
    assert [c.source for c in p.calls] == ["candidate(1)", "candidate(2)"]


def test_a_value_the_host_also_reads_is_no_static_argument() -> None:
    # the host's copy of `lst` would miss what the planned call did to the child's
    tests = asserts("assert f(lst) == 3", "assert lst == [1, 2, 3]", setup="lst = [3, 1, 2]")
    assert planned(tests) == []
    tests = asserts("assert f(lst) == 3", "assert g(lst) == 4", setup="lst = [3, 1, 2]")
    assert planned(tests) == [("f", "f(lst)"), ("g", "g(lst)")]


def test_a_program_value_read_by_module_level_test_code_is_no_static_argument() -> None:
    head = "def expected():\n    return len(TABLE)\n"
    assert planned(check("    assert candidate(TABLE) == expected()\n", head=head)) == []


def test_setup_using_program_names_runs_only_in_the_child() -> None:
    setup = "import math\nroot = Node(1)\nroot.left = Node(2)\nn = 3"
    p = plan_tests(asserts("assert height(root) == 2", setup=setup))
    assert p.calls[0].source == "height(root)"
    assert p.setup is not None and set(p.setup.co_names) == {"math", "n"}  # Node, root: the child's only


def test_io_inputs_are_planned_as_literals() -> None:
    tests = CodeTests(style="io", entry_point="f", inputs=("[1, 2]", "[{3, 1, 2}]", "not a literal", "[4]"),
                      outputs=("3", "0", "0", "4"))
    p = plan_tests(tests)
    assert p.literal and [(c.name, c.source) for c in p.calls] == [("f", "[1, 2]"), ("f", "[{3, 1, 2}]")]


def test_sequential_plan_has_no_calls_and_the_original_code() -> None:
    tests = asserts("assert f(1) == 1")
    p = plan_tests(tests, sequential=True)
    assert p.calls == () and PLANNED not in p.units[0].co_names
    assert plan_tests(tests) is plan_tests(tests)  # cached per test text


def test_unparsable_unit_is_kept_as_text_and_ends_the_prefix() -> None:
    p = plan_tests(asserts("assert f(1) == 1", "assert f(2) ==", "assert f(3) == 3"))
    assert [c.source for c in p.calls] == ["f(1)"] and p.units[1] == "assert f(2) =="


@pytest.mark.parametrize("source", [
    "assert f([1,\n   2]) == 3\nassert f('é€', 'x') == 2\n",  # a call over two lines; multibyte text before a call
    "assert f(1) == 1\r\nassert f('\u00e9', 2) == 2\r\n",  # CR LF line ends
    "assert f(1) == 1\rassert f(2) == 2\r",  # lone CR
    "x = '\u4e2d\u6587'; assert f(x[0], \"\"\"a\nb\"\"\") == 1\n",  # a string over lines, inside a call
])
def test_call_sources_are_the_parsers_segments(source: str) -> None:
    """The planned calls' texts are what `ast.get_source_segment` gives for their nodes (the plan finds the line
    offsets once instead of splitting the source per call): UTF-8 columns, every kind of line end."""
    tree = ast.parse(source)
    expected = [ast.get_source_segment(source, n) for n in ast.walk(tree)
                if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "f"]
    segment_of = _Segments(source)
    got = [segment_of(n) for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "f"]
    assert got == expected and all(expected)


def test_the_hosts_compiled_calls_are_what_the_child_would_compile_and_used_only_where_they_fit() -> None:
    """The planned calls' thunks compiled once by the host (`remote._compiled_calls`) give the child's own results;
    the child ignores them for another interpreter's bytecode (its magic) or other bound names, and compiles the
    sources instead."""
    from mel.verify import _zygote
    from mel.verify.remote import _compiled_calls

    calls = [["f", "f(2)"], ["f", "candidate(3) + 1"]]
    ns = {"f": lambda x: x * 10, "__builtins__": __builtins__}
    local = {"candidate": ns["f"]}
    compiled = _compiled_calls(tuple(c[1] for c in calls), "candidate")
    assert compiled is not None and compiled[0] == _zygote._MAGIC and compiled[1] == ["candidate"]
    thunks = _zygote._compile_calls(calls, ns, local, compiled)
    assert [t() for t in thunks] == [20, 31]
    other = _compiled_calls(("f(5)", "f(6)"), "candidate")  # code for other calls: it must not be the one run
    assert [t() for t in _zygote._compile_calls(calls, ns, local, other)] == [50, 60]
    for unusable in ((b"\0\0\r\n", *other[1:]), (other[0], [], other[2])):  # another magic; other bound names
        assert [t() for t in _zygote._compile_calls(calls, ns, local, unusable)] == [20, 31]
    assert _compiled_calls((), "") is None and _compiled_calls(("f(",), "") is None
