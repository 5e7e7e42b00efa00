"""The problem record every task set produces and every verifier consumes.

A `Problem` is plain data (it round-trips through JSON so it can sit in a Parquet column); the verifier that checks a
completion against it is chosen by `Problem.kind` (see `mel.verify.VERIFIERS`, a registry).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

ProblemKind = Literal["code", "math", "regex"]
TestStyle = Literal["io", "assert", "check"]


@dataclass(frozen=True)
class CodeTests:
    """How a code completion is checked.

    - ``io`` (EvalPlus style): call ``entry_point(*args)`` for each input and compare the returned value with the
      expected output. ``inputs[i]`` is a Python literal of the positional-argument list (``"[3, 4]"``),
      ``outputs[i]`` a Python literal of the expected return value (``"7"``); floats compare with ``atol``.
    - ``assert`` (MBPP style): ``setup_code`` then each statement of ``asserts`` (``"assert f(1) == 2"``).
    - ``check`` (HumanEval style): ``check_code`` defines ``check(candidate)``, called with ``entry_point``.
    """

    style: TestStyle
    entry_point: str = ""
    setup_code: str = ""
    asserts: tuple[str, ...] = ()
    check_code: str = ""
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    atol: float = 0.0

    def __post_init__(self) -> None:
        if self.style == "io" and (not self.entry_point or len(self.inputs) != len(self.outputs) or not self.inputs):
            raise ValueError("io tests need an entry_point and as many outputs as inputs (at least one)")
        if self.style == "assert" and not self.asserts:
            raise ValueError("assert tests need at least one assert statement")
        if self.style == "check" and not (self.check_code and self.entry_point):
            raise ValueError("check tests need check_code and an entry_point")

    @property
    def num_tests(self) -> int:
        return {"io": len(self.inputs), "assert": len(self.asserts), "check": 1}[self.style]


@dataclass(frozen=True)
class Problem:
    """One prompt with what is needed to verify an answer to it.

    ``prompt`` is the user turn shown to the model (the rollout engine wraps it in the chat template).
    ``kind`` picks the verifier: ``code`` uses ``tests``; ``math`` compares the extracted answer with ``answer`` (gold);
    ``regex`` passes a completion whose stripped text matches the regular expression ``answer`` (a toy verifiable
    reward used by the learning test).
    """

    problem_id: str
    kind: ProblemKind
    prompt: str
    tests: CodeTests | None = None
    answer: str | None = None
    reference_solution: str = ""
    metadata: dict = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind == "code" and self.tests is None:
            raise ValueError(f"problem {self.problem_id!r}: a code problem needs tests")
        if self.kind in ("math", "regex") and not self.answer:
            raise ValueError(f"problem {self.problem_id!r}: a {self.kind} problem needs an answer")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> "Problem":
        raw = json.loads(text)
        tests = raw.pop("tests")
        if tests is not None:
            fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in tests.items()}
            tests = CodeTests(**fields)
        return Problem(tests=tests, **raw)
