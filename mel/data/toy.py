"""A tiny ``regex`` task set (``toy_regex``) for the learning test with a small, randomly initialised model.

Each prompt asks for a word with a simple surface property, and the verifier passes a completion whose stripped text
matches the regular expression in ``Problem.answer``. Every pattern is anchored with ``^`` (and none uses
``re.MULTILINE``), so ``re.match`` and ``re.search`` give the same verdict. The properties concern the first
characters (one concerns the last), not whether a letter occurs anywhere, so that the share of random text that passes
stays moderate (roughly 20-50 %) whatever the completion length: a random policy then gets groups with both passing
and failing samples, which is what a group-relative advantage needs, and learning shows up as a rising pass rate.
"""
from __future__ import annotations

import re

from mel.data.types import Problem

_TOY: list[tuple[str, str]] = [
    ("Reply with a word that starts with a vowel.", r"^[AaEeIiOoUu]"),
    ("Reply with a word that starts with a letter from A to M.", r"^[A-Ma-m]"),
    ("Reply with a word that starts with a letter from N to Z.", r"^[N-Zn-z]"),
    ("Reply with a word that starts with a consonant.", r"^[B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]"),
    ("Reply with a word that starts with a capital letter.", r"^[A-Z]"),
    ("Reply with a word that starts with a lowercase letter.", r"^[a-z]"),
    ("Reply with a word that starts with S, T, P, C or M.", r"^[SsTtPpCcMm]"),
    ("Reply with a word that starts with a letter from A to F.", r"^[A-Fa-f]"),
    ("Reply with a word that starts with a letter from G to R.", r"^[G-Rg-r]"),
    ("Reply with a word that starts with R, S, T, L, N or E.", r"^[RrSsTtLlNnEe]"),
    ("Reply with a word that ends with a vowel.", r"^[\s\S]*[AaEeIiOoUu]$"),
    ("Reply with a word whose second letter is a vowel.", r"^[A-Za-z][AaEeIiOoUu]"),
    ("Reply with a word that starts with a letter from A to H.", r"^[A-Ha-h]"),
    ("Reply with a word that starts with B, D, F, H, K or P.", r"^[BbDdFfHhKkPp]"),
    ("Reply with a word of at least five letters.", r"^[A-Za-z]{5,}"),
    ("Reply with a word that starts with a letter from I to S.", r"^[I-Si-s]"),
]


def toy_regex_problems() -> list[Problem]:
    """The 16 toy prompts as ``regex`` problems ``toy/0`` ... ``toy/15``, in a fixed order."""
    problems = []
    for i, (prompt, pattern) in enumerate(_TOY):
        re.compile(pattern)
        problems.append(Problem(problem_id=f"toy/{i}", kind="regex", prompt=prompt, answer=pattern,
                                metadata={"source": "toy_regex"}))
    return problems
