"""EvalPlus benchmarks (HumanEval+, MBPP+): validated rows -> ``base`` and ``plus`` io checks per task.

An EvalPlus row (``task_id``, ``prompt``, ``entry_point``, ``canonical_solution``, ``base_input``, ``plus_input``,
``atol``) becomes one `EvalPlusTask` with two checks, as EvalPlus scores them:

- ``base``: ``io`` tests on the ``base_input`` argument lists;
- ``plus``: ``io`` tests on ``base_input + plus_input`` (EvalPlus's "plus" score means passing both).

Expected outputs are not in the file: they are what the reference program (``prompt + canonical_solution`` plus the
special-oracle wrapper, `mel.verify.jsonl._oracle`) returns, run in the sandbox (`mel.verify.sandbox.call_outputs`)
with the same input conversions, oracles and float rule as ``mel verify code`` (`mel.verify.jsonl`). Full HumanEval+
has ~124k inputs (and ~270 MB of expected outputs), so the outputs are cached on disk (`ReferenceCache`, keyed by a
sha256 of the reference program, entry point and inputs); a second load of the same data does not run the sandbox.

Departure from EvalPlus: the MBPP+ inputs in `UNRETURNABLE_INPUTS` (5 of Mbpp/255's) are left out, because their
values are larger than the sandbox returns, so no completion could pass them (``metadata['skipped_inputs']`` counts
them per task).

What the model sees (`PROMPT_STYLES`):

- ``humaneval``: the function stub in HumanEval's prompt format (as `mel.data.loaders.load_humaneval`); the stub is
  also the item's ``code_prompt`` (a completion that is only a body is verified as ``stub + body``).
- ``mbpp``: the task text and the example assert taken out of EvalPlus's docstring prompt, in MBPP's prompt format
  (as `mel.data.loaders.load_mbpp`); the completion is a whole program (no ``code_prompt``).

A bad row -- a missing or ill-typed field, an input with no Python literal, a prompt not in the style's format, a
reference that fails on one of its inputs -- is reported as ``FILE line N: field 'F' ...``. Schema errors of the whole
file are reported before any reference runs; reference failures (of the rows kept by ``limit``) after them.
"""
from __future__ import annotations

import ast
import hashlib
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mel.data.loaders import (
    HUMANEVAL_INSTRUCTION, MBPP_INSTRUCTION, _check_unique, _Errors, _string, read_jsonl,
)
from mel.data.types import CodeTests, Problem
from mel.verify.jsonl import _evalplus_inputs, _is_floats, _oracle, _output_literal, _short

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = "~/.cache/mel/evalplus"
CACHE_FORMAT = 1  # part of the cache key: bump when what is cached (or how it is computed) changes
REFERENCE_MIN_TIMEOUT_S = 60.0  # some references need seconds for their large plus inputs (as resolve_io_tests)
REFERENCE_MIN_MEMORY_MB = 2048


# ------------------------------------------------------------------------------------------------------ prompt styles

def humaneval_prompt(stub: str) -> str:
    """The user turn for a HumanEval-style function stub (the format of `mel.data.loaders.load_humaneval`)."""
    return f"{HUMANEVAL_INSTRUCTION}\n\n```python\n{stub}```"


def mbpp_prompt(text: str, example_assert: str) -> str:
    """The user turn for an MBPP task (the format of `mel.data.loaders.load_mbpp`)."""
    return f"{text.strip()}\nYour code should pass this test:\n{example_assert}\n{MBPP_INSTRUCTION}"


@dataclass(frozen=True)
class Prompted:
    """What the model is shown for a task, and the stub its completion is appended to ("" = a whole program)."""

    prompt: str
    code_prompt: str


# An EvalPlus ``prompt`` -> what the model sees; raises ValueError (the reason) when the prompt is not in the format.
PromptStyle = Callable[[str, str], Prompted]

_MBPP_DOCSTRING = re.compile(r'\s*"""\n?(?P<text>.*?)\n(?P<example>assert [^\n]*)\s*"""\s*', re.DOTALL)


def _humaneval_style(prompt: str, entry_point: str) -> Prompted:
    if not re.search(rf"^[ \t]*(?:async[ \t]+)?def[ \t]+{re.escape(entry_point)}[ \t]*\(", prompt, re.MULTILINE):
        raise ValueError(f"must be a function stub that defines {entry_point}(...)")
    return Prompted(humaneval_prompt(prompt), code_prompt=prompt)


def _mbpp_style(prompt: str, entry_point: str) -> Prompted:
    match = _MBPP_DOCSTRING.fullmatch(prompt)
    if match is None or not match.group("text").strip():
        raise ValueError('must be a docstring with the task text and then one example line \'assert ...\' ("""\\n'
                         'TEXT\\nassert ...\\n"""\\n)')
    return Prompted(mbpp_prompt(match.group("text"), match.group("example").strip()), code_prompt="")


PROMPT_STYLES: dict[str, PromptStyle] = {"humaneval": _humaneval_style, "mbpp": _mbpp_style}


def guess_style(prompt: str, entry_point: str) -> str:
    """``humaneval`` when the prompt is a stub that defines the entry point, else ``mbpp`` (a docstring prompt)."""
    try:
        _humaneval_style(prompt, entry_point)
        return "humaneval"
    except ValueError:
        return "mbpp"


# ----------------------------------------------------------------------------------------------------------- parsing

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


@dataclass(frozen=True)
class EvalPlusRow:
    """One validated EvalPlus row; inputs are Python literals of the positional-argument lists."""

    line: int
    task_id: str
    prompt: str
    entry_point: str
    canonical_solution: str
    base_inputs: tuple[str, ...]
    plus_inputs: tuple[str, ...]
    atol: float
    oracle: str  # `_oracle` source appended to reference and completion alike ("" when compared exactly)
    shown: Prompted
    skipped: int = 0  # inputs of the file left out (`UNRETURNABLE_INPUTS`)

    @property
    def reference_program(self) -> str:
        return self.prompt + self.canonical_solution + self.oracle

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.base_inputs + self.plus_inputs


def _arg_lists(row: dict, field: str, line: int, errors: _Errors, *, required: bool) -> list[list[Any]] | None:
    """A list of argument lists; None after recording an error. MBPP+ writes "no plus inputs" as ``{}``."""
    value = row.get(field)
    if value is None or (value == {} and not required):
        if required:
            errors.add(line, field, "is missing")
            return None
        return []
    if not (isinstance(value, list) and (value or not required) and all(isinstance(v, list) for v in value)):
        errors.add(line, field, "must be a " + ("non-empty " if required else "") + "list of argument lists")
        return None
    return value


def _atol(row: dict, line: int, errors: _Errors) -> float | None:
    value = row.get("atol")
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        errors.add(line, "atol", "must be a number >= 0")
        return None
    return float(value)


def parse_evalplus(path: str, style: str) -> list[EvalPlusRow]:
    """The validated rows of an EvalPlus JSONL file, in file order; ``style`` is a `PROMPT_STYLES` name or ``auto``
    (per row, `guess_style`). Raises `DatasetError` listing every bad row."""
    if style != "auto" and style not in PROMPT_STYLES:
        raise ValueError(f"unknown EvalPlus prompt style {style!r}; known: auto, {', '.join(sorted(PROMPT_STYLES))}")
    errors = _Errors(path)
    rows: list[EvalPlusRow] = []
    seen: dict[str, int] = {}
    for line, row in read_jsonl(path, errors):
        task_id = _string(row, "task_id", line, errors)
        prompt = _string(row, "prompt", line, errors)
        entry_point = _string(row, "entry_point", line, errors)
        solution = _string(row, "canonical_solution", line, errors)
        base = _arg_lists(row, "base_input", line, errors, required=True)
        plus = _arg_lists(row, "plus_input", line, errors, required=False)
        atol = _atol(row, line, errors)
        if entry_point is not None and not entry_point.isidentifier():
            errors.add(line, "entry_point", "must be a Python identifier")
            continue
        if None in (task_id, prompt, entry_point, solution, base, plus, atol):
            continue
        if not _check_unique(task_id, line, "task_id", seen, errors):
            continue
        try:
            shown = PROMPT_STYLES[guess_style(prompt, entry_point) if style == "auto" else style](prompt, entry_point)
        except ValueError as exc:
            errors.add(line, "prompt", str(exc))
            continue
        converted: dict[str, list[str]] = {}
        for field, args_lists in (("base_input", base), ("plus_input", plus)):
            try:
                converted[field] = _evalplus_inputs(args_lists, task_id)
            except Exception as exc:  # noqa: BLE001 - a value that cannot be written as a literal
                errors.add(line, field, f"has an input that cannot be used: {type(exc).__name__}: {exc}")
        if len(converted) < 2:
            continue
        unreturnable = UNRETURNABLE_INPUTS.get(task_id, frozenset())
        base_inputs = tuple(x for x in converted["base_input"] if x not in unreturnable)
        plus_inputs = tuple(x for x in converted["plus_input"] if x not in unreturnable)
        if not base_inputs:
            errors.add(line, "base_input", "has no input left once the unreturnable ones are left out")
            continue
        rows.append(EvalPlusRow(
            line=line, task_id=task_id, prompt=prompt, entry_point=entry_point, canonical_solution=solution,
            base_inputs=base_inputs, plus_inputs=plus_inputs, atol=atol, oracle=_oracle(task_id, entry_point, atol),
            shown=shown, skipped=len(converted["base_input"]) + len(converted["plus_input"]) - len(base_inputs)
            - len(plus_inputs),
        ))
    errors.raise_if_any()
    return rows


# ------------------------------------------------------------------------------------------------- reference outputs

@dataclass(frozen=True)
class Expected:
    """A row's expected outputs (Python literals, one per input), or why its reference gave none (``error``)."""

    outputs: tuple[str, ...] = ()
    floats: bool = False  # some output is a float or a list/tuple of floats (EvalPlus then compares within 1e-6)
    error: str = ""


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
    miss; a cache that cannot be written is logged and skipped (the load still succeeds)."""

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


def _run_reference(row: EvalPlusRow, timeout_s: float, memory_mb: int) -> Expected:
    from mel.verify import sandbox  # looked up at call time, so a test can count the calls

    try:
        results = sandbox.call_outputs(row.reference_program, row.entry_point, list(row.inputs),
                                       timeout_s=timeout_s, memory_mb=memory_mb)
    except Exception as exc:  # noqa: BLE001 - reported as the reference failing, never raised
        return Expected(error=f"the reference could not be run: {type(exc).__name__}: {exc}")
    return _expected(row, results)


def expected_outputs(rows: Sequence[EvalPlusRow], *, timeout_s: float, memory_mb: int, workers: int,
                     cache: ReferenceCache) -> list[Expected]:
    """Each row's expected outputs, from the cache or from running its reference in the sandbox (``workers`` at once;
    each run gets ``4 * timeout_s`` but at least 60 s and ``memory_mb`` but at least 2048 MiB)."""
    keys = [cache.key(row) for row in rows]
    out: list[Expected | None] = [cache.get(key, len(row.inputs)) for row, key in zip(rows, keys)]
    todo = [i for i, expected in enumerate(out) if expected is None]
    if todo:
        ref_timeout = max(REFERENCE_MIN_TIMEOUT_S, 4 * timeout_s)
        ref_memory = max(REFERENCE_MIN_MEMORY_MB, memory_mb)
        log.info("running %d EvalPlus reference solutions in the sandbox (%d cached)", len(todo), len(rows) - len(todo))
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo)))) as pool:
            for i, expected in zip(todo, pool.map(lambda i: _run_reference(rows[i], ref_timeout, ref_memory), todo)):
                out[i] = expected
                if not expected.error:
                    cache.put(keys[i], expected)
    return out  # type: ignore[return-value]


# -------------------------------------------------------------------------------------------------------------- tasks

@dataclass(frozen=True)
class EvalPlusTask:
    """One EvalPlus task, ready to verify: the ``base`` and ``plus`` checks share the prompt, differ in tests."""

    base: Problem
    plus: Problem
    code_prompt: str
    program_suffix: str


def _task(row: EvalPlusRow, expected: Expected, source: str) -> EvalPlusTask:
    atol = 1e-6 if row.atol == 0 and expected.floats else row.atol  # EvalPlus: floats of a task without an atol
    metadata = {"source": source, "task_id": row.task_id, "line": row.line, "skipped_inputs": row.skipped}

    def check(column: str, n: int) -> Problem:
        tests = CodeTests(style="io", entry_point=row.entry_point, inputs=row.inputs[:n],
                          outputs=expected.outputs[:n], atol=atol)
        return Problem(problem_id=row.task_id, kind="code", prompt=row.shown.prompt, tests=tests,
                       reference_solution=row.prompt + row.canonical_solution,
                       metadata={**metadata, "column": column})

    return EvalPlusTask(base=check("base", len(row.base_inputs)), plus=check("plus", len(row.inputs)),
                        code_prompt=row.shown.code_prompt, program_suffix=row.oracle)


def load_evalplus(path: str, *, style: str, source: str, limit: int | None = None, timeout_s: float = 5.0,
                  memory_mb: int = 512, workers: int = 2, cache_dir: str | None = None) -> list[EvalPlusTask]:
    """The tasks of an EvalPlus file in file order: the whole file is validated, the first ``limit`` rows are kept,
    and only then are their references run (or read from the cache). Raises `DatasetError` naming every bad row."""
    rows = parse_evalplus(path, style)
    if limit is not None:
        rows = rows[:limit]
    expected = expected_outputs(rows, timeout_s=timeout_s, memory_mb=memory_mb, workers=workers,
                                cache=ReferenceCache(cache_dir))
    errors = _Errors(path)
    tasks: list[EvalPlusTask] = []
    for row, outputs in zip(rows, expected):
        if outputs.error:
            errors.add(row.line, "canonical_solution", outputs.error)
            continue
        tasks.append(_task(row, outputs, source))
    errors.raise_if_any()
    return tasks
