"""EvalPlus (HumanEval+, MBPP+) rows -> ``io`` tests: the one implementation `mel verify code` and `mel eval` share.

An EvalPlus row has ``task_id``, ``prompt``, ``entry_point``, ``canonical_solution``, ``base_input`` (a list of
positional-argument lists), ``plus_input`` (more of them; MBPP+ writes "none" as ``{}``) and ``atol`` (a float
tolerance, default 0). Its tests call ``entry_point(*args)`` for every input and compare the value with what the
reference program (``prompt + canonical_solution``) returns for it, as EvalPlus scores them:

- **Inputs** (`_evalplus_inputs`): JSON has no tuples, sets or complex numbers, so EvalPlus turns the MBPP+ inputs
  of the tasks that take them back before a call (``evalplus.data.mbpp.mbpp_deserialize_inputs``); the same
  conversions are applied here, by the number in a task id ``Mbpp/N``, and each argument list is written as a Python
  literal (`_literal`).
- **Special oracles** (`_oracle`): the tasks whose returned values EvalPlus does not compare exactly, where its rule
  is a normalisation of the value, get a wrapper around the entry point, appended to the reference and to every
  completion alike (``EvalPlusRow.oracle``).
- **Floats** (`io_tests`): a task with ``atol`` 0 whose outputs are floats compares within 1e-6.
- **Expected outputs** (`expected_outputs`): the reference run in the sandbox (`mel.verify.sandbox.call_outputs`),
  once per distinct (program, entry point, inputs), and cached on disk (`ReferenceCache`, ``~/.cache/mel/evalplus``):
  full HumanEval+ has ~124k inputs and ~270 MB of expected outputs.
- **Departure from EvalPlus**: the inputs in `UNRETURNABLE_INPUTS` are left out (``EvalPlusRow.skipped`` counts
  them): their values are larger than the sandbox returns, so no completion could pass them.

`parse_row` is the one validator of such a row; a bad field is recorded as ``FILE line N: field 'F' ...`` through
the caller's error list (anything with ``add(line, field, problem)``). A reference that fails on an input is reported
by `expected_outputs` as ``Expected.error`` (the caller names the row's ``canonical_solution``).
"""
from __future__ import annotations

import ast
import hashlib
import io
import json
import logging
import math
import os
import re
import tempfile
import tokenize
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mel.data.types import CodeTests

__all__ = ["CACHE_FORMAT", "DEFAULT_CACHE_DIR", "UNRETURNABLE_INPUTS", "EvalPlusRow", "Expected", "ReferenceCache",
           "expected_outputs", "io_tests", "parse_row"]

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = "~/.cache/mel/evalplus"
CACHE_FORMAT = 1  # part of the cache key: bump when what is cached (or how it is computed) changes
REFERENCE_MIN_TIMEOUT_S = 60.0  # some references need seconds for their large plus inputs
REFERENCE_MIN_MEMORY_MB = 2048
FLOAT_ATOL = 1e-6  # EvalPlus: float outputs of a task without an atol compare within this

Progress = Callable[[int, int], None]


class Errors(Protocol):
    """Where a row's problems go (`mel.data.loaders._Errors`, `mel.verify.jsonl.Parsed`)."""

    def add(self, line: int, field: str | None, problem: str) -> None: ...


# ------------------------------------------------------------------------------------------------ input literals

def _tuples_deep(x: Any) -> Any:
    return tuple(_tuples_deep(v) for v in x) if isinstance(x, list) else x


# evalplus.data.mbpp.mbpp_deserialize_inputs, by MBPP task number
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


def _evalplus_inputs(args_lists: list[list[Any]], task_id: str) -> list[str]:
    """The literals of a task's argument lists, after EvalPlus's MBPP+ conversions (raises when one has none)."""
    m = re.fullmatch(r"Mbpp/(\d+)", task_id)
    convert = _MBPP_ARGS.get(int(m.group(1))) if m else None
    return [_literal(convert(args) if convert else args) for args in args_lists]


# Inputs left out -- a departure from EvalPlus. The sandbox returns no value of more than 2,000,000 nodes
# (`mel.verify._zygote`), so no completion, the canonical solution included, could pass these: MBPP+ calls of
# combinations_colors whose results have 6 to 130 million nodes. Keyed by task id, then the input's literal.
UNRETURNABLE_INPUTS: dict[str, frozenset[str]] = {
    "Mbpp/255": frozenset({
        "[['Dog', 'Cat', 'CatBird', 'Bird', 'Fish'], 77]", "[['Dog', 'Cat', 'Bird', 'Fish'], 77]",
        "[['Dog', 'Cat', 'Bird', 'Fish'], 76]", "[[2, True, 7, -44], 76]",
        "[[57.22322518606262, 96.2114299656439, 7.2887651994648195, 56.50649563542532], 77]",
    }),
}


# ---------------------------------------------------------------------------------------------------------- oracles

# EvalPlus does not compare some tasks' returned values exactly (evalplus.eval special oracles). Those that can be
# written as a normalisation of the returned value are reproduced by wrapping the entry point -- in the reference and
# in the completion alike -- so that the wrapped function returns the normalised value: ``set(out)`` for the MBPP+
# tasks compared as sets, ``out is not None`` for those returning a match object, ``True`` for Mbpp/164, and for
# HumanEval/32 (find_zero) whether ``out`` is a root within ``atol``. Not reproduced: Mbpp/295, 558, 581 (their
# oracles accept a second value besides the reference's).
_SET_EQ = {"similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly", "larg_nnum",
           "intersection_array", "find_dissimilar", "Diff"}
_NOT_NONE = {"check_str", "text_match_three", "text_starta_endb"}


def _oracle(task_id: str, entry_point: str, atol: float) -> str:
    """Source appended to a program to wrap ``entry_point`` (empty when the task is compared exactly)."""
    dataset = task_id.split("/", 1)[0]
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


# ---------------------------------------------------------------------------------------------------------- parsing

@dataclass(frozen=True)
class EvalPlusRow:
    """One validated EvalPlus row; inputs are Python literals of the positional-argument lists."""

    line: int
    task_id: str  # "" when a `mel verify code` row has none (no conversions, oracles or left-out inputs then)
    prompt: str
    entry_point: str
    canonical_solution: str
    base_inputs: tuple[str, ...]
    plus_inputs: tuple[str, ...]
    atol: float
    oracle: str  # `_oracle` source appended to reference and completion alike ("" when compared exactly)
    skipped: int = 0  # inputs of the row left out (`UNRETURNABLE_INPUTS`)

    @property
    def reference_program(self) -> str:
        return self.prompt + self.canonical_solution + self.oracle

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.base_inputs + self.plus_inputs


class _Counted:
    """Passes problems on and counts them (a row is kept only when it had none)."""

    def __init__(self, errors: Errors) -> None:
        self.errors, self.count = errors, 0

    def add(self, line: int, field: str | None, problem: str) -> None:
        self.count += 1
        self.errors.add(line, field, problem)


def _arg_lists(row: dict, field: str, line: int, errors: Errors, *, required: bool) -> list[list[Any]]:
    """A list of argument lists ([] after recording a problem). MBPP+ writes "no plus inputs" as ``{}``."""
    value = row.get(field)
    if value is None or (value == {} and not required):
        if required:
            errors.add(line, field, "is missing")
        return []
    if not (isinstance(value, list) and (value or not required) and all(isinstance(v, list) for v in value)):
        errors.add(line, field, "must be a " + ("non-empty " if required else "") + "list of argument lists")
        return []
    return value


def _atol(row: dict, line: int, errors: Errors) -> float:
    value = row.get("atol")
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        errors.add(line, "atol", "must be a number >= 0")
        return 0.0
    return float(value)


def parse_row(raw: dict, line: int, errors: Errors, *, benchmark: bool) -> EvalPlusRow | None:
    """The validated row, or None after recording each bad field in ``errors``. ``benchmark``: a benchmark file's
    row, which needs a ``task_id`` and a non-empty ``prompt``; a `mel verify code` row may lack both."""
    from mel.data.loaders import _string

    counted = _Counted(errors)
    task_id = _string(raw, "task_id", line, counted, required=benchmark) or ""
    prompt = _string(raw, "prompt", line, counted, required=benchmark, nonempty=benchmark) or ""
    entry_point = _string(raw, "entry_point", line, counted) or ""
    if entry_point and not entry_point.isidentifier():
        counted.add(line, "entry_point", "must be a Python identifier")
    solution = _string(raw, "canonical_solution", line, counted) or ""
    args = {field: _arg_lists(raw, field, line, counted, required=field == "base_input")
            for field in ("base_input", "plus_input")}
    atol = _atol(raw, line, counted)
    if counted.count:
        return None
    unreturnable = UNRETURNABLE_INPUTS.get(task_id, frozenset())
    kept: dict[str, tuple[str, ...]] = {}
    for field, args_lists in args.items():
        try:
            kept[field] = tuple(x for x in _evalplus_inputs(args_lists, task_id) if x not in unreturnable)
        except Exception as exc:  # noqa: BLE001 - a value that cannot be written as a literal
            counted.add(line, field, f"has an input that cannot be used: {type(exc).__name__}: {exc}")
    if counted.count:
        return None
    if not kept["base_input"]:
        errors.add(line, "base_input", "has no input left once the unreturnable ones are left out")
        return None
    return EvalPlusRow(line=line, task_id=task_id, prompt=prompt, entry_point=entry_point,
                       canonical_solution=solution, base_inputs=kept["base_input"], plus_inputs=kept["plus_input"],
                       atol=atol, oracle=_oracle(task_id, entry_point, atol),
                       skipped=sum(map(len, args.values())) - sum(map(len, kept.values())))


# ------------------------------------------------------------------------------------------------- reference outputs

@dataclass(frozen=True)
class Expected:
    """A row's expected outputs (Python literals, one per input), or why its reference gave none (``error``)."""

    outputs: tuple[str, ...] = ()
    floats: bool = False  # some output is a float or a list/tuple of floats (see `io_tests`)
    error: str = ""


def _short(text: str, n: int = 120) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _is_floats(value: Any) -> bool:
    if isinstance(value, float):
        return True
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, float) for v in value)


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


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def _output(text: str) -> tuple[str, bool]:
    """An output's literal (`_output_literal`) and whether it is floats (`_is_floats`). Fast path: the output is a
    Python ``repr``, and a repr that parses as JSON (numbers, lists, double-quoted strings; no NaN/Infinity) is a
    literal of the same value -- `ast.literal_eval` takes a minute on HumanEval/130's 124 MB of float lists."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        literal = _output_literal(text)
        return literal, _is_floats(ast.literal_eval(literal))
    return text, _is_floats(value)


def _expected(row: EvalPlusRow, results: list[tuple[bool, str]]) -> Expected:
    literals: list[str] = []
    floats = False
    for k, (ok, text) in enumerate(results):
        if not ok:
            return Expected(error=f"fails on input {k} {_short(row.inputs[k])}: {_short(text, 300)}")
        try:
            literal, is_floats = _output(text)
        except Exception:  # noqa: BLE001 - nan, an object: no literal
            return Expected(error=f"returns a value with no Python literal on input {k} {_short(row.inputs[k])}: "
                                  f"{_short(text)}")
        literals.append(literal)
        floats = floats or is_floats
    if len(literals) != len(row.inputs):
        return Expected(error=f"gave {len(literals)} outputs for {len(row.inputs)} inputs")
    return Expected(tuple(literals), floats)


class ReferenceCache:
    """Expected outputs on disk: ``<dir>/<sha256>.json`` holding ``{"outputs": [literal, ...], "floats": bool}``, keyed
    by the reference program, entry point and inputs (and `CACHE_FORMAT`). Only complete, usable outputs are stored;
    files are written to a temporary name and renamed, so a reader never sees half a file. An unreadable entry is a
    miss; a cache that cannot be written is logged and skipped (the caller still gets its outputs)."""

    def __init__(self, directory: str | None = None) -> None:
        self.directory = Path(os.path.expanduser(directory or DEFAULT_CACHE_DIR))

    @staticmethod
    def key(row: EvalPlusRow) -> str:
        blob = json.dumps([CACHE_FORMAT, row.reference_program, row.entry_point, list(row.inputs)], ensure_ascii=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def get(self, key: str, count: int) -> Expected | None:
        try:
            raw = json.loads((self.directory / f"{key}.json").read_text(encoding="utf-8"))
            outputs, floats = raw["outputs"], raw["floats"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        ok = (isinstance(outputs, list) and len(outputs) == count and all(isinstance(o, str) for o in outputs)
              and isinstance(floats, bool))
        return Expected(tuple(outputs), floats) if ok else None

    def put(self, key: str, expected: Expected) -> None:
        tmp = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{key}.", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"outputs": list(expected.outputs), "floats": expected.floats}, handle)
            os.replace(tmp, self.directory / f"{key}.json")
        except OSError as exc:
            log.warning("cannot write the EvalPlus reference cache under %s: %s", self.directory, exc)
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)


def _run_reference(row: EvalPlusRow, timeout_s: float, memory_mb: int, isolation: str) -> Expected:
    from mel.verify import sandbox  # looked up at call time, so a test can count the calls

    try:
        results = sandbox.call_outputs(row.reference_program, row.entry_point, list(row.inputs),
                                       timeout_s=timeout_s, memory_mb=memory_mb, isolation=isolation)
    except sandbox.IsolationUnavailable:
        raise  # a configuration error, not a failing reference
    except Exception as exc:  # noqa: BLE001 - reported as the reference failing, never raised
        return Expected(error=f"the reference could not be run: {type(exc).__name__}: {exc}")
    return _expected(row, results)


def expected_outputs(rows: Sequence[EvalPlusRow], *, timeout_s: float = 5.0, memory_mb: int = 512, workers: int = 2,
                     cache_dir: str | None = None, progress: Progress | None = None,
                     isolation: str = "auto") -> list[Expected]:
    """Each row's expected outputs, from the cache (``cache_dir``, default `DEFAULT_CACHE_DIR`) or from running its
    reference in the sandbox: once per distinct reference (rows of one task share it), ``workers`` at once, each run
    with ``4 * timeout_s`` but at least 60 s and ``memory_mb`` but at least 2048 MiB (some references need seconds
    and gigabytes for their large inputs). ``progress(done, total)`` counts distinct references."""
    cache = ReferenceCache(cache_dir)
    keys = [cache.key(row) for row in rows]
    first = {key: row for key, row in zip(keys, rows)}
    found: dict[str, Expected] = {}
    for key, row in first.items():
        hit = cache.get(key, len(row.inputs))
        if hit is not None:
            found[key] = hit
    todo = [key for key in first if key not in found]
    if progress:
        progress(len(found), len(first))
    if todo:
        ref_timeout = max(REFERENCE_MIN_TIMEOUT_S, 4 * timeout_s)
        ref_memory = max(REFERENCE_MIN_MEMORY_MB, memory_mb)
        log.info("running %d EvalPlus reference solutions in the sandbox (%d cached)", len(todo), len(found))
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo)))) as pool:
            runs = pool.map(lambda key: _run_reference(first[key], ref_timeout, ref_memory, isolation), todo)
            for key, expected in zip(todo, runs):
                found[key] = expected
                if not expected.error:
                    cache.put(key, expected)
                if progress:
                    progress(len(found), len(first))
    return [found[key] for key in keys]


def io_tests(row: EvalPlusRow, expected: Expected, count: int | None = None) -> CodeTests:
    """The ``io`` tests of the row's first ``count`` inputs (all by default; its base inputs come first)."""
    atol = FLOAT_ATOL if row.atol == 0 and expected.floats else row.atol
    n = len(row.inputs) if count is None else count
    return CodeTests(style="io", entry_point=row.entry_point, inputs=row.inputs[:n], outputs=expected.outputs[:n],
                     atol=atol)
