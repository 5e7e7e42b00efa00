"""Verifiers: turn (problem, raw completion) into a `Verdict` decided by trusted code.

`VERIFIERS` maps `Problem.kind` to a batch verifier ``(problems, completions, *, timeout_s, memory_mb, workers)``;
`verify_problems` groups a mixed batch by kind, calls each verifier once, and returns verdicts in input order.
Answer extraction lives in `mel.verify.extract`; code sandboxing in `mel.verify.sandbox`; math/regex in
`mel.verify.math`; EvalPlus rows and their reference outputs in `mel.verify.evalplus`; JSONL files of rows
(``mel verify``) in `mel.verify.jsonl`.
"""
from __future__ import annotations

from typing import Callable, Sequence

from mel.data.types import Problem
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


def _code(problems: Sequence[Problem], completions: Sequence[str], *, timeout_s: float, memory_mb: int,
          workers: int, isolation: str = "auto") -> list[Verdict]:
    return verify_code(completions, [p.tests for p in problems],  # type: ignore[misc]
                       timeout_s=timeout_s, memory_mb=memory_mb, workers=workers, isolation=isolation)


def _math(problems: Sequence[Problem], completions: Sequence[str], *, timeout_s: float, memory_mb: int,
          workers: int, isolation: str = "auto") -> list[Verdict]:
    return verify_math(completions, [p.answer or "" for p in problems], timeout_s=timeout_s, workers=workers)


def _regex(problems: Sequence[Problem], completions: Sequence[str], *, timeout_s: float, memory_mb: int,
           workers: int, isolation: str = "auto") -> list[Verdict]:
    return verify_regex(completions, [p.answer or "" for p in problems])


VERIFIERS: dict[str, BatchVerifier] = {"code": _code, "math": _math, "regex": _regex}


def verify_problems(problems: Sequence[Problem], completions: Sequence[str], *, timeout_s: float = 5.0,
                    memory_mb: int = 512, workers: int = 2, isolation: str = "auto") -> list[Verdict]:
    """One verdict per (problem, raw completion), in input order; each kind's verifier is called once."""
    if len(problems) != len(completions):
        raise ValueError(f"{len(problems)} problems but {len(completions)} completions")
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(problems):
        groups.setdefault(p.kind, []).append(i)
    out: list[Verdict | None] = [None] * len(problems)
    for kind, idxs in groups.items():
        verifier = VERIFIERS.get(kind)
        if verifier is None:
            for i in idxs:
                out[i] = Verdict(False, "sandbox_error", f"no verifier for kind {kind!r}")
            continue
        verdicts = verifier([problems[i] for i in idxs], [completions[i] for i in idxs],
                            timeout_s=timeout_s, memory_mb=memory_mb, workers=workers, isolation=isolation)
        for i, v in zip(idxs, verdicts):
            out[i] = v
    assert all(v is not None for v in out)
    return out  # type: ignore[return-value]
