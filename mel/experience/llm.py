"""The policy writes its own meta-experience (MEL section 3.2, eqs. 2-4): s* ~ pi(. | I, x, y+, y-), then
C ~ pi(. | I, x, y+, y-, s*), then H ~ pi(. | I, x, y+, y-, s*, C).

Generation is primed field by field: the assistant turn is started with ``Bifurcation step:``, the policy continues
it (one line, up to ``max_new_tokens[0]`` tokens), then ``Critique:`` follows and the policy continues again (to a
blank line or its budget), and likewise ``Heuristic:``. Each field is therefore conditioned on the earlier ones,
exactly as eqs. 2-4 write it, and a small policy cannot lose the structure.

Departure from the paper: Appendix C asks for one free-form answer in four sections (failure path, success factors,
reflective summary, heuristics); we keep its instruction I verbatim but read the answer through three primed fields
(s* = the failure point, C = the diagnosis, H = the heuristics), the tuple M = (s*, C, H) of eq. 5.

``parse_meta_experience`` checks the result; a malformed one is kept with its reason and never trained on:
a missing or empty field, a field with no words, a field that is one word repeated, or a heuristic that names the
problem's specifics (the Appendix C "Strict Generalization Constraint": the entry point called as a function, or the
exact gold answer of a math problem).
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

from mel.experience.types import FIELD_LABELS, MetaExperience

_LABEL = re.compile(r"(?im)^[ \t*#>-]*(" + "|".join(re.escape(x) for x in FIELD_LABELS) + r")[ \t*]*:")
_WORD = re.compile(r"[A-Za-z]{2,}")


def cut_field(text: str) -> str:
    """A generated field up to the next field label (the policy sometimes writes on past its field)."""
    m = _LABEL.search(text)
    return (text[: m.start()] if m else text).strip()


def _field_problem(label: str, value: str) -> str:
    if not value.strip():
        return f"empty field {label!r}"
    words = _WORD.findall(value)
    if not words:
        return f"field {label!r} has no words"
    if len(words) >= 8 and Counter(w.lower() for w in words).most_common(1)[0][1] > 0.5 * len(words):
        return f"field {label!r} repeats one word"
    return ""


def specifics_in(text: str, specifics: Sequence[str]) -> str:
    """The first problem specific that ``text`` names (a function called by name, or an exact answer), or ""."""
    for spec in specifics:
        if not spec:
            continue
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", spec):
            if re.search(rf"\b{re.escape(spec)}\s*\(|`{re.escape(spec)}`", text):
                return spec
        elif re.search(rf"(?<![\w.]){re.escape(spec)}(?![\w.])", text):
            return spec
    return ""


def parse_meta_experience(text: str, specifics: Sequence[str] = ()) -> MetaExperience:
    """Read ``Bifurcation step: ... Critique: ... Heuristic: ...`` into M; never raises."""
    try:
        marks = list(_LABEL.finditer(text))
        fields: dict[str, str] = {}
        for i, m in enumerate(marks):
            label = next(x for x in FIELD_LABELS if x.lower() == m.group(1).lower())
            end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
            fields.setdefault(label, text[m.end():end].strip())
        values = [fields.get(label, "") for label in FIELD_LABELS]
        reason = next((f"missing field {label!r}" for label in FIELD_LABELS if label not in fields), "")
        reason = reason or next((r for r in map(_field_problem, FIELD_LABELS, values) if r), "")
        leaked = specifics_in(values[2], specifics)
        if not reason and leaked:
            reason = f"heuristic names the problem's specific {leaked!r}"
        step, critique, heuristic = values
        return MetaExperience(step, critique, heuristic, reject_reason=reason)
    except Exception as exc:  # a parser bug must not stop the step; the row says what happened
        return MetaExperience("", "", "", reject_reason=f"unparseable: {type(exc).__name__}: {exc}"[:300])


def generate_primed(engine, prompts: Sequence[str], max_new_tokens: Sequence[int], temperature: float, seed: int
                    ) -> list[tuple[str, int]]:
    """For each instruction prompt, the assistant text ``Bifurcation step: s*\nCritique: C\nHeuristic: H`` generated
    field by field, and the number of tokens the policy generated for it.

    With an engine that writes fields in one pass (``capabilities.fields_in_one_pass``: transformers) the three
    fields are written so, the labels forced in between (one prefill of the long instruction); otherwise each field is
    a separate primed generation (vLLM, whose prefix cache makes the repeated prompt cheap). s* is one line; C and H
    end at a blank line."""
    base = [engine.encode_prompt(p) for p in prompts]
    if engine.capabilities.fields_in_one_pass:
        first = engine.encode_text(f"{FIELD_LABELS[0]}:")
        labels = [f"{label}:" for label in FIELD_LABELS]
        outputs = engine.generate_fields([b + first for b in base], labels, max_new_tokens, temperature, seed,
                                         one_line=(True, False, False))
        return [(f"{FIELD_LABELS[0]}:{text}", tokens) for text, tokens in outputs]
    texts = [""] * len(prompts)
    tokens = [0] * len(prompts)
    for f, (label, budget) in enumerate(zip(FIELD_LABELS, max_new_tokens)):
        primed = [t + ("\n" if t else "") + f"{label}:" for t in texts]
        ids = [b + engine.encode_text(p) for b, p in zip(base, primed)]
        results = engine.generate_from_ids(ids, n=1, temperature=temperature, max_tokens=budget,
                                           seed=seed * 7 + f)
        for i, r in enumerate(results):
            sample = r.samples[0]
            value = cut_field(sample.text)
            texts[i] = f"{primed[i]} {value.split(chr(10))[0] if f == 0 else value}"
            tokens[i] += len(sample.token_ids)
    return list(zip(texts, tokens))
