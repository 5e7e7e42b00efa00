"""The host-side plan of a sample's tests: which calls of the program the sandbox child makes ahead of the tests.

Calling the program through a proxy costs one pipe round trip per call. Most test code calls the program only with
literals (``assert f([1, 2], 3) == 4``, HumanEval's ``assert candidate(...) == ...``, EvalPlus inputs), so the host
can say up front which calls the tests will make. `plan_tests` parses the (trusted) test code once per test text and
finds the PLANNED calls: a call whose function is a program name (HumanEval's ``candidate`` is the entry point;
MBPP 126's entry point ``sum`` shadows a builtin) and whose arguments are STATIC -- constants, container literals,
operators, attributes and subscripts, and names and calls of what lives in the child: the program's names, the setup
code's names, builtins (``f(Pair(5, 24))``, ``f(root)``, ``f(list(range(3)))``). The child runs the program, then
evaluates each planned call's SOURCE TEXT in plan order (so a set literal is built as plain CPython builds it, and
instances of the program's classes never cross) and streams back each result, tagged as plain data right after its
call. The host runs the test code rewritten so that each planned call reads the next result
(``__mel_planned__(k, f)``); every comparison and every operator on a result still runs on the host, and the child
never sees anything but the calls (no expected value).

What is planned is a PREFIX of the test statements, in the host's evaluation order: the top-level statements of the
assert units (MBPP) or of HumanEval's ``check`` body, up to the first statement that refers to a program name in any
other way (a call with a non-static argument, a program name used as a value, a program name inside a loop,
comprehension, lambda, conditional expression, nested definition or an assert's message); everything after runs
call by call through the proxies. A name whose value the host also sees (the setup's or the program's, read by host
code anywhere in the tests) is not a static argument: the host's copy would miss what a planned call did to it.
Whether the host then consumes the results in exactly plan order is checked as it runs (`mel.verify.remote`): if not,
the sample is run again without a plan.

The setup code (MBPP ``test_setup_code``) runs in the child after the program, as in the plain script ``program +
setup + asserts``; the host runs only its statements that use no program name (imports, constants), the others
(``root = Node(1)``) exist only in the child.

Pure: standard library only; plans are cached per test text.
"""
from __future__ import annotations

import ast
import builtins
import functools
import re
import sys
from dataclasses import dataclass
from types import CodeType
from typing import Any, cast

from mel.data.types import CodeTests

__all__ = ["PLANNED", "Plan", "PlannedCall", "entry_point_of", "literal", "plan_tests"]

PLANNED = "__mel_planned__"  # the host-side name a planned call is rewritten to
_BUILTIN_NAMES = frozenset(dir(builtins))
_OWN_SCOPES = (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.NamedExpr, ast.Await,
               ast.Yield, ast.YieldFrom)  # they bind names of their own: not worth the bookkeeping
_ORDER_UNSAFE = (ast.IfExp, *_OWN_SCOPES)  # evaluated partly, or later, or in another order than written
_OPERATORS = (ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)
_SIMPLE_STATEMENTS = (ast.Import, ast.ImportFrom, ast.Pass, ast.Global, ast.Nonlocal)


@dataclass(frozen=True)
class PlannedCall:
    """One call the child evaluates ahead of the tests."""

    name: str  # the program name called, as the child names it (the entry point for HumanEval's ``candidate``)
    source: str  # the call's source text (``io``: the argument-list literal)


@dataclass(frozen=True)
class Plan:
    """What the host runs for one test spec, and the calls the child makes ahead of it."""

    calls: tuple[PlannedCall, ...]
    entry_point: str  # the program name the tests mean even where it shadows a builtin ("" when none)
    literal: bool = False  # io: each call is ``entry_point(*literal_eval(source))``
    param: str = ""  # check: the name of check's parameter, bound to the entry point in the child
    units: tuple[CodeType | str, ...] = ()  # the (rewritten) assert units, or the check module
    setup: CodeType | None = None  # the setup statements the host runs too


def literal(text: str) -> Any:
    """``ast.literal_eval`` of trusted test data, also for integers longer than Python's decimal-digit limit."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:  # the parser reports the digit limit as a SyntaxError
        if "Exceeds the limit" not in str(exc) or not hasattr(sys, "set_int_max_str_digits"):
            raise
        previous = sys.get_int_max_str_digits()
        sys.set_int_max_str_digits(0)
        try:
            return ast.literal_eval(text)
        finally:
            sys.set_int_max_str_digits(previous)


def _children(node: ast.AST) -> list[ast.AST]:
    """`ast.iter_child_nodes` as a list, faster."""
    out: list[ast.AST] = []
    for name in node._fields:
        value = getattr(node, name, None)
        if isinstance(value, ast.AST):
            out.append(value)
        elif isinstance(value, list):
            out += [v for v in value if isinstance(v, ast.AST)]
    return out


def _walk(node: ast.AST) -> list[ast.AST]:
    """Every node inside ``node`` (itself first), as `ast.walk` finds them, in a list: about twice as fast."""
    out, i = [node], 0
    while i < len(out):
        out += _children(out[i])
        i += 1
    return out


def _bound_names(nodes: list[ast.AST]) -> set[str]:
    """Every name bound by ``nodes`` (all the nodes of a tree, `_walk`: assignments, loop and ``with`` targets,
    imports, definitions, parameters, ``except ... as``, patterns, walrus)."""
    out: set[str] = set()
    for n in nodes:
        if isinstance(n, ast.Name):
            if not isinstance(n.ctx, ast.Load):
                out.add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(n.name)
        elif isinstance(n, ast.arg):
            out.add(n.arg)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            out.update((a.asname or a.name).split(".")[0] for a in n.names)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            out.add(n.name)
        elif isinstance(n, (ast.MatchAs, ast.MatchStar)) and n.name:
            out.add(n.name)
        elif isinstance(n, ast.MatchMapping) and n.rest:
            out.add(n.rest)
    return out


def _loaded_names(node: ast.AST) -> set[str]:
    return {n.id for n in _walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def entry_point_of(tests: CodeTests) -> str:
    """The program name the tests are about. Given for ``io``/``check``; for ``assert`` tests (MBPP has no field) the
    first function the asserts call when every function they call is a builtin name (MBPP 126 tests a ``sum``),
    else none: a program's ``def sorted`` must not replace the builtin in ``assert sorted(f(x)) == ...``."""
    if tests.entry_point or tests.style != "assert":
        return tests.entry_point
    return _assert_entry_point([_walk(tree) for unit in tests.asserts if (tree := _parse(unit)) is not None])


def _assert_entry_point(walks: list[list[ast.AST]]) -> str:
    called = [n.func.id for nodes in walks for n in nodes if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    if called and all(name in _BUILTIN_NAMES for name in called):
        return called[0]
    return ""


class _Scope:
    """What the names of one test spec stand for: a PROGRAM name's value lives in the child only (the program's
    names, the entry point, check's parameter, setup names built from the program); a STATIC name can be evaluated
    in the child as plain Python would (anything the test code does not bind, and that the host code does not read
    as a value: ``host_values``, filled in by `_plan_units`)."""

    def __init__(self, test_bound: set[str], setup_host: set[str], setup_child: set[str], entry_point: str,
                 param: str) -> None:
        self.test_bound, self.entry_point, self.param = test_bound, entry_point, param
        self.setup_host, self.setup_child = setup_host, setup_child
        self.host_values: set[str] = set()

    def is_program(self, name: str) -> bool:
        """A name whose value lives in the child only (the host reaches it through a proxy or a snapshot)."""
        if name == self.param:
            return True
        if name in self.test_bound or name in self.setup_host:
            return False
        return name in self.setup_child or name == self.entry_point or name not in _BUILTIN_NAMES

    def is_static_name(self, name: str) -> bool:
        if name in self.host_values:
            return False
        return name == self.param or name not in self.test_bound

    def static(self, node: ast.AST) -> bool:
        """An expression the child can evaluate exactly as plain Python would here (no host value in it)."""
        if isinstance(node, ast.Constant):
            return True
        if isinstance(node, ast.Name):
            return isinstance(node.ctx, ast.Load) and self.is_static_name(node.id)
        if isinstance(node, _OWN_SCOPES):
            return False
        return all(self.static(child) for child in _children(node) if not isinstance(child, _OPERATORS))

    def planned_call(self, node: ast.AST) -> bool:
        return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and self.is_program(node.func.id)
                and all(self.static(a) for a in node.args) and all(self.static(k.value) for k in node.keywords))


def _evaluation_order(node: ast.AST) -> list[ast.AST]:
    """The sub-expressions of ``node`` in the order CPython evaluates them (for the node types `_calls` walks)."""
    if isinstance(node, ast.Dict):
        out: list[ast.AST] = []
        for k, v in zip(node.keys, node.values):
            out += [v] if k is None else [k, v]
        return out
    if isinstance(node, ast.Call):
        return [node.func, *node.args, *(k.value for k in node.keywords)]
    return [c for c in _children(node) if not isinstance(c, _OPERATORS)]


def _calls(node: ast.AST, scope: _Scope, out: list[ast.Call]) -> bool:
    """Append the planned calls of expression ``node`` in evaluation order; False where it refers to a program name
    in any other way (the statement cannot be planned)."""
    if scope.planned_call(node):
        out.append(node)  # type: ignore[arg-type]
        return True
    if isinstance(node, ast.Name):
        return not scope.is_program(node.id)
    if isinstance(node, _ORDER_UNSAFE):
        return not _mentions_program(node, scope)
    return all(_calls(child, scope, out) for child in _evaluation_order(node))


def _mentions_program(node: ast.AST, scope: _Scope) -> bool:
    return any(isinstance(n, ast.Name) and scope.is_program(n.id) for n in _walk(node))


def _statement_calls(stmt: ast.stmt, scope: _Scope) -> list[ast.Call] | None:
    """The planned calls of a top-level test statement in evaluation order, or None if it cannot be planned."""
    out: list[ast.Call] = []
    if isinstance(stmt, _SIMPLE_STATEMENTS):
        return out
    if isinstance(stmt, ast.Assert):
        # The message runs only when the assert fails, after the test's calls: its calls stay proxy calls (one with
        # planned results left makes the run diverge, so a failing sample is run again without a plan).
        parts = [stmt.test]
    elif isinstance(stmt, ast.Expr):
        parts = [stmt.value]
    elif isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        if any(_mentions_program(t, scope) for t in targets):
            return None
        parts = [stmt.value] if stmt.value is not None else []
    else:  # compound statements, returns, definitions: kept in the prefix only if they touch no program name
        return None if _mentions_program(stmt, scope) else out
    for part in parts:
        if not _calls(part, scope, out):
            return None
    return out


def _host_values(stmts: list[ast.stmt], planned: set[int]) -> set[str]:
    """Names the host code reads as values: outside the planned calls, and not as the function of a call."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if id(node) in planned:
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            found.add(node.id)
        children = _evaluation_order(node)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            children = children[1:]
        for child in children:
            visit(child)

    for stmt in stmts:
        visit(stmt)
    return found


def _rewrite(calls: dict[int, tuple[ast.Call, int]]) -> None:
    """Each planned call ``f(args)`` made ``__mel_planned__(k, f)`` in place (the tree's other nodes untouched; the
    new nodes take the call's location)."""
    for node, k in calls.values():
        name, index = ast.Name(id=PLANNED, ctx=ast.Load()), ast.Constant(k)
        ast.copy_location(name, node)
        ast.copy_location(index, node)
        node.func, node.args, node.keywords = name, [index, node.func], []


_LINE_END = re.compile(r"\r\n|\r|\n")


class _Segments:
    """`ast.get_source_segment` for many nodes of one source: the line offsets found once (that function splits the
    whole source again for every node). Offsets are in UTF-8 bytes, as the parser's columns are; lines end as
    `ast` splits them (CR LF, CR or LF)."""

    def __init__(self, source: str) -> None:
        self.data = source.encode()
        self.starts = [0] + [m.end() for m in _LINE_END.finditer(self.data.decode("latin-1"))]

    def __call__(self, node: ast.AST) -> str | None:
        try:
            lineno, end_lineno = node.lineno, node.end_lineno  # type: ignore[attr-defined]
            col, end_col = node.col_offset, node.end_col_offset  # type: ignore[attr-defined]
        except AttributeError:
            return None
        if end_lineno is None or end_col is None or end_lineno > len(self.starts):
            return None
        return self.data[self.starts[lineno - 1] + col:self.starts[end_lineno - 1] + end_col].decode()


def _split_setup(setup: str, entry_point: str) -> tuple[CodeType | None, set[str], set[str]]:
    """The setup statements the host runs too (those that use no program name), the names they bind, and the
    names only the child's setup binds."""
    if not setup.strip():
        return None, set(), set()
    tree = ast.parse(setup)
    host_bound: set[str] = set()
    child_bound: set[str] = set()
    host_stmts: list[ast.stmt] = []
    for stmt in tree.body:
        own = _bound_names(_walk(stmt))
        free = _loaded_names(stmt) - own - host_bound
        if all(n in _BUILTIN_NAMES and n != entry_point for n in free):
            host_stmts.append(stmt)
            host_bound |= own
            child_bound -= own
        else:
            child_bound |= own
            host_bound -= own
    code = compile(ast.Module(body=host_stmts, type_ignores=[]), "<setup>", "exec", dont_inherit=True)
    return code, host_bound, child_bound


def _prefix(bodies: list[list[ast.stmt] | None], sources: list[_Segments], scope: _Scope) -> tuple[
        list[PlannedCall], dict[int, tuple[ast.Call, int]], int]:
    """Planned calls over the units' statements, in order, up to the first statement that cannot be planned (their
    nodes by id, with their index); and the number of statements planned."""
    calls: list[PlannedCall] = []
    index: dict[int, tuple[ast.Call, int]] = {}
    done = 0
    for stmts, segment_of in zip(bodies, sources):
        if stmts is None:
            break
        for stmt in stmts:
            found = _statement_calls(stmt, scope)
            segments = [segment_of(node) for node in found or ()]
            if found is None or None in segments:
                return calls, index, done
            for node, segment in zip(found, segments):
                name = node.func.id  # type: ignore[attr-defined]
                index[id(node)] = (node, len(calls))
                calls.append(PlannedCall(scope.entry_point if name == scope.param else name,
                                         cast(str, segment)))  # None in segments returned above
            done += 1
    return calls, index, done


def _plan_units(bodies: list[list[ast.stmt] | None], sources: list[_Segments], scope: _Scope,
                others: list[ast.stmt]) -> tuple[list[PlannedCall], dict[int, tuple[ast.Call, int]]]:
    """The prefix, once no static argument names a value the host also reads (anywhere: the statements after the
    prefix call through proxies, which send the host's copies; ``others`` is host code outside the units)."""
    stmts = [s for body in bodies if body is not None for s in body]
    while True:
        calls, index, done = _prefix(bodies, sources, scope)
        seen = _host_values(stmts[:done], set(index)) | _host_values(stmts[done:] + others, set())
        seen = {n for n in seen if scope.is_program(n) or n in scope.setup_host}  # builtins are the same on both sides
        if seen <= scope.host_values:
            return calls, index
        scope.host_values |= seen


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):  # the host's compile raises it again, inside the unit: that test fails
        return None


@functools.lru_cache(maxsize=1024)
def plan_tests(tests: CodeTests, sequential: bool = False) -> Plan:
    """The plan for one test spec (``sequential``: no planned calls, every call through a proxy). Units that do not
    compile are kept as source text (they fail when run) and end the prefix."""
    sources = [] if tests.style == "io" else list(tests.asserts) if tests.style == "assert" else [tests.check_code]
    trees = [_parse(source) for source in sources]  # each test text parsed, and walked, once
    parsed = [t for t in trees if t is not None]
    walks = [_walk(t) for t in parsed]
    entry = _assert_entry_point(walks) if tests.style == "assert" and not tests.entry_point else tests.entry_point
    setup_code, setup_host, setup_child = _split_setup(tests.setup_code, entry)
    if tests.style == "io":
        calls: list[PlannedCall] = []
        for text in () if sequential else tests.inputs:
            try:
                args = literal(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                break
            if type(args) not in (list, tuple):
                break
            calls.append(PlannedCall(entry, text))
        return Plan(tuple(calls), entry, literal=True, setup=setup_code)
    param = ""
    bodies = [t.body if t is not None else None for t in trees]
    others: list[ast.stmt] = []
    test_bound = set().union(*(_bound_names(nodes) for nodes in walks))
    if tests.style == "check":
        check = next((s for s in parsed[0].body if isinstance(s, ast.FunctionDef) and s.name == "check"
                      and s.args.args), None) if parsed else None
        param = check.args.args[0].arg if check is not None else ""
        bodies = [check.body] if check is not None else []
        others = [s for s in parsed[0].body if s is not check] if parsed else []
        test_bound -= {param}
    scope = _Scope(test_bound, setup_host, setup_child, entry, param)
    segments = [_Segments(source) for source in sources]
    calls, index = ([], {}) if sequential or not bodies else _plan_units(bodies, segments, scope, others)
    _rewrite(index)
    units: list[CodeType | str] = []
    for tree, source in zip(trees, sources):
        try:
            units.append(compile(source if tree is None else tree, "<test>", "exec", dont_inherit=True))
        except (SyntaxError, ValueError):
            units.append(source)
    return Plan(tuple(calls), entry, param=param, units=tuple(units), setup=setup_code)
