"""A built-in ``math`` task set (``easy_math``): one- and two-step arithmetic word problems with whole-number answers,
checked by the math verifier (``\\boxed{}`` answer, ``math-verify``).

It is to R-MEL what ``easy_code`` is to MEL-Code: the paper's domain (R-MEL trains and evaluates on math) at a size a
135M-parameter policy on a CPU can sometimes solve, so a run has mixed groups for MEL's pairs and all-negative ones
for R-MEL's revision without a dataset file. Paper-scale runs use ``gsm8k`` or ``math500`` with ``data.path``.
The problems are generated from fixed tables (no randomness), so the set and its order never change.
"""
from __future__ import annotations

from mel.data.loaders import math_prompt
from mel.data.types import Problem

_ITEMS = ("apples", "pencils", "marbles", "books", "stickers", "coins")
_NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana")


def _templates(a: int, b: int, c: int, item: str, name: str) -> list[tuple[str, int]]:
    return [
        (f"What is {a} + {b}?", a + b),
        (f"What is {a} times {b}?", a * b),
        (f"{name} has {a + b} {item} and gives away {b}. How many {item} does {name} have left?", a),
        (f"{name} buys {a} bags with {b} {item} in each bag. How many {item} does {name} have?", a * b),
        (f"{name} has {a} {item}, finds {b} more, then finds {c} more. How many {item} does {name} have now?",
         a + b + c),
        (f"{a * b} {item} are shared equally among {a} children. How many {item} does each child get?", b),
    ]


def easy_math_problems() -> list[Problem]:
    """48 problems ``easy_math/0`` ... ``easy_math/47``, in a fixed order."""
    problems: list[Problem] = []
    for k in range(8):
        a, b, c = 2 + k, 3 + (k * 5) % 7, 1 + (k * 3) % 4
        for question, answer in _templates(a, b, c, _ITEMS[k % len(_ITEMS)], _NAMES[k]):
            problems.append(Problem(problem_id=f"easy_math/{len(problems)}", kind="math",
                                    prompt=math_prompt(question), answer=str(answer),
                                    metadata={"source": "easy_math"}))
    return problems
