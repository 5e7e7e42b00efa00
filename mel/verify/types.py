"""The verdict a verifier returns for one completion."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal[
    "passed", "failed", "runtime_error", "syntax_error", "timeout", "memory", "output_limit", "sandbox_error",
    "no_answer",
]
STATUSES: tuple[str, ...] = Status.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Verdict:
    """``passed`` is decided by the trusted parent process, never by the untrusted code's exit status or output."""

    passed: bool
    status: Status
    detail: str = ""
    tests_passed: int = 0
    tests_total: int = 0
    seconds: float = 0.0

    @property
    def reward(self) -> float:
        return 1.0 if self.passed else 0.0
