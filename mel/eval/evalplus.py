"""EvalPlus benchmarks (HumanEval+, MBPP+): validated rows -> ``base`` and ``plus`` io checks per task.

An EvalPlus row (``task_id``, ``prompt``, ``entry_point``, ``canonical_solution``, ``base_input``, ``plus_input``,
``atol``) becomes one `EvalPlusTask` with two checks, as EvalPlus scores them:

- ``base``: ``io`` tests on the ``base_input`` argument lists;
- ``plus``: ``io`` tests on ``base_input + plus_input`` (EvalPlus's "plus" score means passing both).

The row validator, input conversions, special oracles, float rule, expected outputs (the reference run in the sandbox,
cached on disk) and the inputs left out (`UNRETURNABLE_INPUTS`) are `mel.verify.evalplus`'s, the very code
``mel verify code`` uses for EvalPlus rows, so both give the same verdict on the same sample (the ``plus`` column
here is its tests). This module adds what the benchmark needs on top: the prompt the model is shown
(`PROMPT_STYLES`), unique task ids, and the two columns.

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

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from mel.data.loaders import HUMANEVAL_INSTRUCTION, MBPP_INSTRUCTION, _check_unique, _Errors, read_jsonl
from mel.data.types import Problem
from mel.verify.evalplus import EvalPlusRow, Expected, expected_outputs, io_tests, parse_row

__all__ = ["PROMPT_STYLES", "EvalPlusTask", "Prompted", "StyledRow", "guess_style", "humaneval_prompt", "load_evalplus",
           "mbpp_prompt", "parse_evalplus"]


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

class StyledRow(NamedTuple):
    """A validated EvalPlus row and what the model is shown for it."""

    row: EvalPlusRow
    shown: Prompted


def parse_evalplus(path: str, style: str) -> list[StyledRow]:
    """The validated rows of an EvalPlus JSONL file, in file order; ``style`` is a `PROMPT_STYLES` name or ``auto``
    (per row, `guess_style`). Raises `DatasetError` listing every bad row."""
    if style != "auto" and style not in PROMPT_STYLES:
        raise ValueError(f"unknown EvalPlus prompt style {style!r}; known: auto, {', '.join(sorted(PROMPT_STYLES))}")
    errors = _Errors(path)
    rows: list[StyledRow] = []
    seen: dict[str, int] = {}
    for line, raw in read_jsonl(path, errors):
        row = parse_row(raw, line, errors, benchmark=True)
        if row is None or not _check_unique(row.task_id, line, "task_id", seen, errors):
            continue
        try:
            shown = PROMPT_STYLES[guess_style(row.prompt, row.entry_point) if style == "auto" else style](
                row.prompt, row.entry_point)
        except ValueError as exc:
            errors.add(line, "prompt", str(exc))
            continue
        rows.append(StyledRow(row, shown))
    errors.raise_if_any()
    return rows


# -------------------------------------------------------------------------------------------------------------- tasks

@dataclass(frozen=True)
class EvalPlusTask:
    """One EvalPlus task, ready to verify: the ``base`` and ``plus`` checks share the prompt, differ in tests."""

    base: Problem
    plus: Problem
    code_prompt: str
    program_suffix: str


def _task(styled: StyledRow, expected: Expected, source: str) -> EvalPlusTask:
    row, shown = styled
    metadata = {"source": source, "task_id": row.task_id, "line": row.line, "skipped_inputs": row.skipped}

    def check(column: str, n: int) -> Problem:
        return Problem(problem_id=row.task_id, kind="code", prompt=shown.prompt, tests=io_tests(row, expected, n),
                       reference_solution=row.prompt + row.canonical_solution,
                       metadata={**metadata, "column": column})

    return EvalPlusTask(base=check("base", len(row.base_inputs)), plus=check("plus", len(row.inputs)),
                        code_prompt=shown.code_prompt, program_suffix=row.oracle)


def load_evalplus(path: str, *, style: str, source: str, limit: int | None = None, timeout_s: float = 5.0,
                  memory_mb: int = 512, workers: int = 2, cache_dir: str | None = None,
                  isolation: str = "auto") -> list[EvalPlusTask]:
    """The tasks of an EvalPlus file in file order: the whole file is validated, the first ``limit`` rows are kept,
    and only then are their references run (or read from the cache, `mel.verify.evalplus.ReferenceCache`). Raises
    `DatasetError` naming every bad row."""
    rows = parse_evalplus(path, style)
    if limit is not None:
        rows = rows[:limit]
    expected = expected_outputs([styled.row for styled in rows], timeout_s=timeout_s, memory_mb=memory_mb,
                                workers=workers, cache_dir=cache_dir, isolation=isolation)
    errors = _Errors(path)
    tasks: list[EvalPlusTask] = []
    for styled, outputs in zip(rows, expected):
        if outputs.error:
            errors.add(styled.row.line, "canonical_solution", outputs.error)
            continue
        tasks.append(_task(styled, outputs, source))
    errors.raise_if_any()
    return tasks
