"""Sandbox harness: executed BY PATH as ``python -I _harness.py RESULT_FD CPU_S MEMORY_MB FSIZE_MB NPROC``.

Runs inside the sandbox process, next to the untrusted program; imports only the standard library. Protocol
(see `mel.verify.sandbox`): the job arrives as one JSON object on stdin; results leave as JSON lines on the inherited
pipe ``RESULT_FD``, never on stdout/stderr (which belong to the program):

  {"ready": true}                                   job read, limits set
  {"syntax_error": msg} | {"bad_tests": msg}       the program (or the test code) does not compile
  {"runtime_error": msg, "memory": bool}           defining the program raised
  {"i": k, "ok": bool, "err": msg[, "value": v]}    after test k ran; ``value`` = tagged return value (io style)
  {"done": true}                                    after every test ran; then the process exits at once

For ``io`` tests the expected outputs are never sent here: the trusted parent compares the tagged value. Assert
statements in test code are rewritten so comparisons (``==``, ``<``, ``in``, ...) act on fresh plain copies of their
operands (a custom ``__eq__``/``__lt__``/builtin-type subclass never decides) and a condition must be a builtin value.
"""
import ast
import collections
import json
import os
import resource
import sys

_type, _len, _isinstance, _repr, _Exception, _BaseException = type, len, isinstance, repr, Exception, BaseException
_MAX_DEPTH, _MAX_NODES = 100, 2_000_000
_PLAIN_SCALARS = (bool, int, float, complex, str, bytes, type(None))
_PLAIN = _PLAIN_SCALARS + (list, tuple, dict, set, frozenset)
# stdlib dict subclasses tagged as plain dicts (read through dict.items, so no overridable method is ever called)
_DICTS = (dict, collections.Counter, collections.OrderedDict, collections.defaultdict)


def _one_of(t, types):
    """``t in types`` by identity (``in`` would call a metaclass ``__eq__``)."""
    for x in types:
        if x is t:
            return True
    return False


class NonPlain(Exception):
    pass


def tag(x, _depth=0, _count=None):
    """Plain tagged data for a value made only of exact builtin types; raises NonPlain otherwise."""
    count = _count if _count is not None else [0]
    count[0] += 1
    if _depth > _MAX_DEPTH or count[0] > _MAX_NODES:
        raise NonPlain("value too deep or too large")
    t = _type(x)
    if x is None:
        return ["N"]
    if t is bool:
        return ["b", x]
    if t is int:
        return ["i", hex(x)]
    if t is float:
        return ["f", x.hex()]
    if t is complex:
        return ["c", x.real.hex(), x.imag.hex()]
    if t is str:
        return ["s", x]
    if t is bytes:
        return ["y", x.hex()]
    if t is list or t is tuple or t is set or t is frozenset:
        code = {list: "l", tuple: "t", set: "S", frozenset: "F"}[t]
        return [code, [tag(v, _depth + 1, count) for v in t.__iter__(x)]]
    if _one_of(t, _DICTS):
        return ["d", [[tag(k, _depth + 1, count), tag(v, _depth + 1, count)] for k, v in dict.items(x)]]
    raise NonPlain("non-plain return type " + t.__qualname__)


def untag(d):
    """Fresh builtin objects from tagged data (the inverse of `tag`)."""
    code = d[0]
    if code == "N":
        return None
    if code == "b":
        return bool(d[1])
    if code == "i":
        return int(d[1], 16)
    if code == "f":
        return float.fromhex(d[1])
    if code == "c":
        return complex(float.fromhex(d[1]), float.fromhex(d[2]))
    if code == "s":
        return str(d[1])
    if code == "y":
        return bytes.fromhex(d[1])
    if code in ("l", "t", "S", "F"):
        items = [untag(v) for v in d[1]]
        return {"l": list, "t": tuple, "S": set, "F": frozenset}[code](items)
    if code == "d":
        return {untag(k): untag(v) for k, v in d[1]}
    raise ValueError("unknown tag " + str(code))


def _short(x, n=200):
    s = _repr(x)
    return s if _len(s) <= n else s[:n] + "..."


def _fresh(value):
    try:
        return untag(tag(value))
    except NonPlain as e:
        raise AssertionError(str(e)) from None


def mel_eq(left, right, want_equal):
    """``assert left == right`` (or ``!=``) on fresh plain copies: a custom ``__eq__`` cannot fake the result."""
    a, b = _fresh(left), _fresh(right)
    if (a == b) != want_equal:
        raise AssertionError("%s %s %s" % (_short(a), "!=" if want_equal else "==", _short(b)))


_CMP = {"Eq": lambda a, b: a == b, "NotEq": lambda a, b: a != b, "Lt": lambda a, b: a < b,
        "LtE": lambda a, b: a <= b, "Gt": lambda a, b: a > b, "GtE": lambda a, b: a >= b,
        "In": lambda a, b: a in b, "NotIn": lambda a, b: a not in b}


def mel_cmp(ops, *thunks):
    """A (chained) comparison inside an assert, on fresh plain copies, operands evaluated lazily in order."""
    prev = _fresh(thunks[0]())
    for op, thunk in zip(ops, thunks[1:]):
        cur = _fresh(thunk())
        if not _CMP[op](prev, cur):
            return False
        prev = cur
    return True


def mel_plain(value):
    """An operand whose truth is taken inside an assert (``not x``, ``x and y``): must be a builtin value."""
    if not _one_of(_type(value), _PLAIN):
        raise AssertionError("non-plain value of type " + _type(value).__qualname__ + " used as a condition")
    return value


def mel_truth(value):
    """``assert value``: only a builtin value's truth counts (a custom ``__bool__`` cannot fake it)."""
    if not _one_of(_type(value), _PLAIN):
        raise AssertionError("non-plain assert condition of type " + _type(value).__qualname__)
    if not value:
        raise AssertionError("assertion failed")


def _call(name, args):
    return ast.Call(ast.Name(name, ast.Load()), args, [])


class _RewriteAsserts(ast.NodeTransformer):
    """In test code: ``assert a == b``/``!=`` -> mel_eq; every other comparison inside an assert (except ``is``) ->
    mel_cmp; operands of ``not``/``and``/``or``/``x if c else y`` and the condition must be builtin values. So only
    builtin values decide a test, never user-defined operators."""

    def __init__(self):
        self.in_assert = 0

    def visit_Compare(self, node):
        self.generic_visit(node)
        if not self.in_assert or not all(_type(op).__name__ in _CMP for op in node.ops):
            return node
        thunks = [ast.Lambda(ast.arguments([], [], None, [], [], None, []), e) for e in [node.left, *node.comparators]]
        ops = ast.Tuple([ast.Constant(_type(op).__name__) for op in node.ops], ast.Load())
        return ast.copy_location(_call("__mel_cmp__", [ops, *thunks]), node)

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        if self.in_assert and _isinstance(node.op, ast.Not):
            node.operand = _call("__mel_plain__", [node.operand])
        return node

    def visit_BoolOp(self, node):
        self.generic_visit(node)
        if self.in_assert:
            node.values = [_call("__mel_plain__", [v]) for v in node.values]
        return node

    def visit_IfExp(self, node):
        self.generic_visit(node)
        if self.in_assert:
            node.test = _call("__mel_plain__", [node.test])
        return node

    def visit_Assert(self, node):
        t = node.test
        self.in_assert += 1
        try:
            if _isinstance(t, ast.Compare) and _len(t.ops) == 1 and _isinstance(t.ops[0], (ast.Eq, ast.NotEq)):
                left, right = self.visit(t.left), self.visit(t.comparators[0])
                call = _call("__mel_eq__", [left, right, ast.Constant(_isinstance(t.ops[0], ast.Eq))])
            else:
                call = _call("__mel_truth__", [self.visit(t)])
        finally:
            self.in_assert -= 1
        return ast.copy_location(ast.Expr(call), node)


def compile_tests(source, name):
    tree = _RewriteAsserts().visit(ast.parse(source, name))
    return compile(ast.fix_missing_locations(tree), name, "exec", dont_inherit=True)


def main():
    if sys.argv[1:] == ["--probe"]:
        print("ok")
        return
    fd, cpu_s, memory_mb, fsize_mb, nproc = (int(a) for a in sys.argv[1:6])
    mb = 1024 * 1024
    limits = [(resource.RLIMIT_CPU, cpu_s, cpu_s + 1), (resource.RLIMIT_AS, memory_mb * mb, memory_mb * mb),
              (resource.RLIMIT_FSIZE, fsize_mb * mb, fsize_mb * mb), (resource.RLIMIT_NOFILE, 64, 64),
              (resource.RLIMIT_CORE, 0, 0)]
    if nproc > 0:
        limits.append((resource.RLIMIT_NPROC, nproc, nproc))
    for which, soft, hard in limits:
        resource.setrlimit(which, (soft, hard))
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)

    write = os.write

    def send(obj):
        data = (json.dumps(obj) + "\n").encode()
        while data:
            data = data[write(fd, data):]

    def err_text(e):
        try:
            return (_type(e).__name__ + ": " + str(e))[:500]
        except _BaseException:
            return _type(e).__name__

    job = json.loads(sys.stdin.buffer.read())
    send({"ready": True})
    style, entry = job["style"], job["entry_point"]
    try:
        program = compile(job["code"], "<solution>", "exec", dont_inherit=True)
    except _BaseException as e:
        send({"syntax_error": err_text(e)})
        os._exit(0)
    try:
        setup = compile(job.get("setup_code", ""), "<setup>", "exec", dont_inherit=True)
        if style == "assert":
            tests = [compile_tests(a, "<assert %d>" % k) for k, a in enumerate(job["asserts"])]
        elif style == "check":
            tests = [compile_tests(job["check_code"], "<check>")]
        else:
            tests = list(job["inputs"])
    except _BaseException as e:
        send({"bad_tests": err_text(e)})
        os._exit(0)

    ns = {"__name__": "__mel_solution__", "__builtins__": __builtins__}
    try:
        exec(program, ns)
        exec(setup, ns)
    except _BaseException as e:  # SystemExit and KeyboardInterrupt included: the program did not define cleanly
        send({"runtime_error": err_text(e), "memory": _isinstance(e, MemoryError)})
        os._exit(0)
    ns.update(__mel_eq__=mel_eq, __mel_cmp__=mel_cmp, __mel_truth__=mel_truth, __mel_plain__=mel_plain)

    for k, test in enumerate(tests):
        rec = {"i": k, "ok": False, "err": ""}
        try:
            if style == "io":
                fn = ns.get(entry)
                if fn is None:
                    raise NameError("entry point %r is not defined" % entry)
                args = ast.literal_eval(test)
                value = fn(*args)
                try:
                    rec["value"] = tag(value)
                    rec["ok"] = True
                except NonPlain as e:
                    rec["err"] = str(e)
            elif style == "assert":
                exec(test, ns)
                rec["ok"] = True
            else:
                exec(test, ns)
                if entry not in ns:
                    raise NameError("entry point %r is not defined" % entry)
                ns["check"](ns[entry])
                rec["ok"] = True
        except _BaseException as e:  # a test that raises, exits or is interrupted did not pass
            rec["err"] = err_text(e)
            rec["memory"] = _isinstance(e, MemoryError)
        send(rec)
    send({"done": True})
    os._exit(0)


if __name__ == "__main__":
    main()
