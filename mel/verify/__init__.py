"""Verifiers: turn (problem, raw completion) into a `Verdict` decided by trusted code.

`VERIFIERS` (a `mel.registry.Registry`) maps `Problem.kind` to a batch verifier; `verify_problems` groups a mixed
batch by kind, calls each verifier once, and returns verdicts in input order (an unknown kind is an error naming the
known ones, before anything runs).
Answer extraction lives in `mel.verify.extract`; code sandboxing in `mel.verify.sandbox`; math/regex in
`mel.verify.math`; EvalPlus rows and their reference outputs in `mel.verify.evalplus`; JSONL files of rows
(``mel verify``) in `mel.verify.jsonl`.
"""
from __future__ import annotations

from typing import Callable, Sequence

from mel.data.types import Problem
from mel.registry import Registry
from mel.verify.extract import extract_answer, extract_code
from mel.verify.math import clear_math_caches, shutdown_math_workers, verify_math, verify_regex
from mel.verify.sandbox import IsolationUnavailable, isolation_mode, verify_code
from mel.verify.types import STATUSES, Status, Verdict

__all__ = [
    "VERIFIERS", "Verdict", "Status", "STATUSES", "verify_problems", "verify_code", "verify_math", "verify_regex",
    "extract_code", "extract_answer", "isolation_mode", "IsolationUnavailable", "shutdown_math_workers",
    "clear_math_caches",
]

BatchVerifier = Callable[..., list[Verdict]]
VERIFIERS: Registry[BatchVerifier] = Registry("verifier")
"""By `Problem.kind`: ``verifier(problems, texts, *, timeout_s, memory_mb, workers, isolation, extract)`` -> one
verdict per (problem, text), in order. Training (`verify_problems`) and evaluation (`mel.eval.cells`) both call them;
``extract`` (code only): take the code out of a raw completion (False: the text is the program, already assembled)."""


@VERIFIERS.register("code")
def _code(problems: Sequence[Problem], texts: Sequence[str], *, timeout_s: float, memory_mb: int, workers: int,
          isolation: str = "auto", extract: bool = True) -> list[Verdict]:
    return verify_code(texts, [p.tests for p in problems],  # type: ignore[misc]
                       timeout_s=timeout_s, memory_mb=memory_mb, workers=workers, isolation=isolation, extract=extract)


@VERIFIERS.register("math")
def _math(problems: Sequence[Problem], texts: Sequence[str], *, timeout_s: float, memory_mb: int, workers: int,
          isolation: str = "auto", extract: bool = True) -> list[Verdict]:
    return verify_math(texts, [p.answer or "" for p in problems], timeout_s=timeout_s, workers=workers)


@VERIFIERS.register("regex")
def _regex(problems: Sequence[Problem], texts: Sequence[str], *, timeout_s: float, memory_mb: int, workers: int,
           isolation: str = "auto", extract: bool = True) -> list[Verdict]:
    return verify_regex(texts, [p.answer or "" for p in problems])


def verify_problems(problems: Sequence[Problem], completions: Sequence[str], *, timeout_s: float = 5.0,
                    memory_mb: int = 512, workers: int = 2, isolation: str = "auto") -> list[Verdict]:
    """One verdict per (problem, raw completion), in input order; each kind's verifier is called once."""
    if len(problems) != len(completions):
        raise ValueError(f"{len(problems)} problems but {len(completions)} completions")
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(problems):
        groups.setdefault(p.kind, []).append(i)
    verifiers = {kind: VERIFIERS.get(kind) for kind in groups}  # an unknown kind: KeyError naming the known ones
    out: list[Verdict | None] = [None] * len(problems)
    for kind, idxs in groups.items():
        verdicts = verifiers[kind]([problems[i] for i in idxs], [completions[i] for i in idxs],
                            timeout_s=timeout_s, memory_mb=memory_mb, workers=workers, isolation=isolation)
        for i, v in zip(idxs, verdicts):
            out[i] = v
    assert all(v is not None for v in out)
    return out  # type: ignore[return-value]
