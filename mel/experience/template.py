"""MEL-Code's template builder: M = (s*, C, H) from a contrastive pair by diff-guided divergence categorization.

Given y+ (passes every unit test) and y- (fails), both raw completions, the builder

1. extracts the two programs (``mel.verify.extract.extract_code``);
2. aligns their code lines (``difflib`` over normalized lines: blank lines, comments and docstrings skipped,
   whitespace and spaces around punctuation removed) and takes s* = the first line of y- that leaves y+
   (``first_divergent_line``), or, for the bifurcation-skip ablation or without y+, the first step of y-'s plan
   (``first_plan_step``);
3. names the divergence category (``divergence_category``);
4. fills the category's critique and heuristic templates (``TEMPLATES``): C points at s* ("Here y- ...", "From
   here y- ..."), quotes a short excerpt of the verdict's detail and y+'s line that the category was decided on
   (contrastive only); H is fixed text per category -- an abstract, conditionally triggered rule ("When ..., I
   should ...", MEL Appendix C) that names nothing of the problem.

Category decision order (the first rule that fires wins):

1. the verdict status of y-: ``syntax_error`` -> syntax_error, ``runtime_error`` -> runtime_error, ``timeout`` ->
   timeout, ``memory`` / ``output_limit`` -> resource_limit. Every other status (``failed``, and the ones a failing
   y- should not have: ``passed``, ``sandbox_error``, ``no_answer``, unknown strings) goes on as ``failed``.
2. the detail: ``returned A, expected B`` where A and B are literals of different kinds (str / number / bool / list /
   tuple / dict / set / None), or a detail naming a type (``type``, ``NoneType``, ``<class ...>``)
   -> wrong_return_type.
3. without y+ (the non-contrastive ablation, or a y+ with no code): wrong_output.
4. similarity of the two programs (``SequenceMatcher`` ratio over their normalized code tokens) < 0.5
   -> wrong_algorithm (the line-level rules below would read a rewrite's unrelated lines as evidence).
5. a pair of aligned, replaced lines that differ only by a comparison operator (``<`` vs ``<=``, ``>`` vs ``>=``),
   a ``+1`` / ``-1`` term, or an integer literal changed by one (``range(n)`` vs ``range(n+1)``) -> off_by_one.
6. a guard line only in y+ (``if not x``, ``is None``, a length or value compared with 0/1, a comparison with an
   empty literal, or an ``if`` whose body starts with ``return`` / ``raise``) with no guard among y-'s own lines
   -> missing_edge_case.
7. return statements only in y+ and only in y- whose expressions are of different known kinds (a str / list /
   number / bool / tuple / dict / set / None literal or constructor, ``str()`` / ``"".join()`` / ``sorted()`` ...),
   or one being a conversion of the other (``str(x)`` vs ``x``, ``[x]`` vs ``x``), or y- printing what y+ returns
   -> wrong_return_type.
8. otherwise -> wrong_output.

Length: the rendered M (``MetaExperience.render()``) is kept at 50-80 tokens of the policy's own tokenizer when the
caller passes its counter (``count_tokens``; the extract stage does): the rendering below is made with an estimate,
then its quoted parts' budget is shrunk or grown until the tokenizer counts 50-80 (``_fit_to_tokenizer``). Without a
counter the length rests on the estimate, made for SmolLM2's tokenizer: The fixed text of every template (the three
labels included) is at most 50 tokens; the quoted parts (s*, the detail, y+'s line) are put on one line and cut with
"..." to share 29 tokens of a conservative estimate
(``_token_cost``, which overestimates byte-level BPE counts of code by about 40%); a short tail is added to H when
they leave room for it, so a short s* still gives >= 50 tokens. ``tests/test_template_builder.py`` checks the
numbers against the real tokenizer.

Departures from MEL-Code (section 3.2 names "template-based construction with diff-guided divergence
categorization" and 50-80 tokens, and publishes neither its templates nor its category list):

- the category list, the decision order, the similarity threshold and every template text are ours;
- the similarity rule comes before the line-level rules (a recursion vs a loop would otherwise read as a missing
  base-case guard);
- without y+ only the status and the detail are used, and s* is y-'s first plan step;
- s* is a code line of y- (code has no numbered reasoning steps), not a reasoning step as in MEL;
- the category rules read normalized code lines with regular expressions, also where both programs would parse
  with ``ast``: one rule set for every pair (most failing y- of a small policy do not compile), at the cost of
  missing what a line-level pattern cannot see (a guard split over lines, a return built in a helper);
- the category and the quoted detail come from y-'s verdict, which C_retro therefore shows
  (``mel.experience.prompts.retro_context_code``: [x, y+, y-, v-]).
"""
from __future__ import annotations

import ast
import difflib
import math
import re
from dataclasses import dataclass
from typing import Callable, Literal, Optional, Sequence

from mel.experience.types import MetaExperience
from mel.verify.extract import extract_code

__all__ = [
    "CATEGORIES", "TEMPLATES", "CategoryTemplate", "Bifurcation", "build_template", "divergence_category",
    "first_divergent_line", "first_plan_step",
]

Bifurcation = Literal["diff", "first_plan_step"]


@dataclass(frozen=True)
class CategoryTemplate:
    """The texts of one category. ``critique`` opens C and points at s* ("Here ..."); ``heuristic`` is fixed text;
    ``heuristic_tail`` extends it when the quoted code and detail are short (keeping M at 50-80 tokens)."""

    critique: str
    heuristic: str
    heuristic_tail: str


TEMPLATES: dict[str, CategoryTemplate] = {
    "syntax_error": CategoryTemplate(
        "Here y- is not valid Python",
        "When writing nested brackets or blocks, I should re-check each line's syntax",
        ", closing every bracket and block I open"),
    "runtime_error": CategoryTemplate(
        "Here y- raises an exception on some input",
        "When an operation can fail on some inputs, I should check its precondition first",
        ", such as an index range or a zero divisor"),
    "timeout": CategoryTemplate(
        "From here y- runs too slowly",
        "When inputs can be large, I should estimate my loops' cost before coding",
        ", replacing repeated scans with one pass"),
    "resource_limit": CategoryTemplate(
        "From here y- exceeds the memory or output limit",
        "When data or output can grow large, I should keep memory and printing bounded",
        ", preferring generators to full copies"),
    "wrong_algorithm": CategoryTemplate(
        "From here y- solves a different problem",
        "When choosing an approach, I should first restate what output each input needs",
        ", then check the method on a small example"),
    "off_by_one": CategoryTemplate(
        "Here y- sets a bound one step off",
        "When a bound comes from a length, I should check whether the boundary is included",
        ", testing the first and last positions"),
    "missing_edge_case": CategoryTemplate(
        "Here y- goes on without guarding a boundary input",
        "When inputs can be empty, zero or None, I should handle them first",
        ", returning what the task defines for them before the main logic"),
    "wrong_return_type": CategoryTemplate(
        "From here y- returns the wrong type or shape",
        "When examples show the expected output, I should return exactly that type",
        ", not a printed, joined or wrapped variant"),
    "wrong_output": CategoryTemplate(
        "From here y- computes a wrong value",
        "When a solution gives wrong values, I should trace a small example by hand",
        ", comparing each step with the expected result"),
}
CATEGORIES: tuple[str, ...] = tuple(TEMPLATES)
CONTRAST = "; y+ has `{plus}`"
"""Appended to the critique when y+ is given: y+'s line the category was decided on."""
PLUS_ENDED = "; y+ ends before it"
"""Appended instead when y+ has no line there (y- runs on past y+'s end)."""
NO_CONTRAST = "; no passing y+ to compare"
"""Appended to the critique without y+ (the non-contrastive ablation)."""

_STATUS_CATEGORY = {
    "syntax_error": "syntax_error", "runtime_error": "runtime_error", "timeout": "timeout",
    "memory": "resource_limit", "output_limit": "resource_limit",
}
_SIMILARITY_THRESHOLD = 0.5
_MAX_INPUT_CHARS = 200_000  # longer completions are cut before extraction (no real completion comes near)
_MAX_LINES = 400  # lines per program that enter the diff
_MAX_LINE_CHARS = 400  # characters per line that enter normalization
_MAX_TOKENS_FOR_RATIO = 1_200



# --- lines --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Line:
    raw: str  # stripped
    norm: str


_DOCSTRING_OPEN = re.compile(r"""^[rRuUbB]{0,2}("{3}|'{3})""")
_ONE_LINE_STRING = re.compile(r"""^[rRuUbB]{0,2}("[^"\\]*(?:\\.[^"\\]*)*"|'[^'\\]*(?:\\.[^'\\]*)*')$""")
_CODE_TOKEN = re.compile(r"\d+(?:\.\d+)?|\w+|<=|>=|==|!=|//|\*\*|->|:=|\S")


def _strip_comment(line: str) -> str:
    quote = ""
    i = 0
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return line[:i]
        i += 1
    return line


def _normalize(line: str) -> str:
    """One code line in comparable form: no comment, whitespace collapsed, no spaces around punctuation."""
    text = re.sub(r"\s+", " ", _strip_comment(line[:_MAX_LINE_CHARS])).strip()
    return re.sub(r" ?([^\w\s]) ?", r"\1", text)


def _code_lines(code: str) -> list[_Line]:
    """The lines that carry code: blank lines, comment lines and docstrings are skipped."""
    lines: list[_Line] = []
    closing = ""
    for text in code.split("\n")[: _MAX_LINES * 4]:
        stripped = text.strip()
        if closing:
            if closing in stripped:
                closing = ""
            continue
        if not stripped or stripped.startswith("#") or _ONE_LINE_STRING.match(stripped):
            continue
        opened = _DOCSTRING_OPEN.match(stripped)
        if opened:
            rest = stripped[opened.end():]
            if opened.group(1) not in rest:
                closing = opened.group(1)
            continue
        lines.append(_Line(stripped, _normalize(stripped)))
        if len(lines) >= _MAX_LINES:
            break
    return lines


def _as_code(text: str) -> str:
    """A chat completion (fenced) becomes its program; plain code is left as it is."""
    text = str(text)[:_MAX_INPUT_CHARS]
    return extract_code(text) if "```" in text else text


_PLAN_SKIP = re.compile(r"^(?:import\s|from\s+\S+\s+import\s|def\s|async\s+def\s|class\s|@)")


def first_plan_step(code: str) -> str:
    """The first line of the solution body (stripped): the first code line that is not an import, a ``def`` /
    ``class`` line or a decorator; the first ``def`` line when there is nothing else; "" for no code."""
    try:
        lines = _code_lines(_as_code(code))
        for line in lines:
            if not _PLAN_SKIP.match(line.raw):
                return line.raw
        defs = [line.raw for line in lines if re.match(r"^(?:async\s+)?def\s", line.raw)]
        return defs[0] if defs else (lines[0].raw if lines else "")
    except Exception:  # never raise on model output
        return ""


# --- the diff -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Diff:
    plus: list[_Line]
    minus: list[_Line]
    opcodes: Sequence[tuple[str, int, int, int, int]]

    def first_divergence(self) -> tuple[Optional[_Line], Optional[_Line]]:
        """(y- line, y+ counterpart): the first y- line off y+'s path; y-'s last line when y- is a prefix of y+."""
        for tag, i1, _i2, j1, _j2 in self.opcodes:
            if tag == "equal":
                continue
            minus = self.minus[j1] if j1 < len(self.minus) else (self.minus[-1] if self.minus else None)
            plus = self.plus[i1] if i1 < len(self.plus) else None
            return minus, plus
        return (self.minus[-1] if self.minus else None), (self.plus[-1] if self.plus else None)

    def replaced_pairs(self) -> list[tuple[_Line, _Line]]:
        pairs: list[tuple[_Line, _Line]] = []
        for tag, i1, i2, j1, j2 in self.opcodes:
            if tag == "replace":
                pairs.extend(zip(self.plus[i1:i2], self.minus[j1:j2]))
        return pairs

    def plus_only(self) -> list[int]:
        return [i for tag, i1, i2, _j1, _j2 in self.opcodes if tag in ("replace", "delete") for i in range(i1, i2)]

    def minus_only(self) -> list[int]:
        return [j for tag, _i1, _i2, j1, j2 in self.opcodes if tag in ("replace", "insert") for j in range(j1, j2)]

    def similarity(self) -> float:
        a = _CODE_TOKEN.findall(" ".join(line.norm for line in self.plus))[:_MAX_TOKENS_FOR_RATIO]
        b = _CODE_TOKEN.findall(" ".join(line.norm for line in self.minus))[:_MAX_TOKENS_FOR_RATIO]
        if not a and not b:
            return 1.0
        return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def _diff(plus_code: str, minus_code: str) -> _Diff:
    plus, minus = _code_lines(plus_code), _code_lines(minus_code)
    matcher = difflib.SequenceMatcher(None, [x.norm for x in plus], [x.norm for x in minus], autojunk=False)
    return _Diff(plus, minus, matcher.get_opcodes())


def first_divergent_line(plus_code: str, minus_code: str) -> str:
    """The first code line of y- (stripped) that leaves y+ (lines compared normalized; blank lines, comments and
    docstrings skipped); y-'s last code line when y- is a prefix of y+ (or equal to it); "" for a y- with no code."""
    try:
        line, _ = _diff(_as_code(plus_code), _as_code(minus_code)).first_divergence()
        return line.raw if line else ""
    except Exception:  # never raise on model output
        return ""


# --- categorization -----------------------------------------------------------------------------------------


def _off_by_one_pair(plus: str, minus: str) -> bool:
    """The two normalized lines differ only by <-vs-<=, >-vs->=, a +1/-1 term, or an integer literal off by one."""
    a, b = _CODE_TOKEN.findall(plus), _CODE_TOKEN.findall(minus)
    changes = [op for op in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes() if op[0] != "equal"]
    if not changes:
        return False
    for tag, i1, i2, j1, j2 in changes:
        old, new = a[i1:i2], b[j1:j2]
        if tag in ("insert", "delete"):
            if (old or new) not in (["+", "1"], ["-", "1"]):
                return False
        elif {tuple(old), tuple(new)} in ({("<",), ("<=",)}, {(">",), (">=",)}):
            continue
        elif len(old) == len(new) == 1 and old[0].isdigit() and new[0].isdigit():
            if abs(int(old[0][:18]) - int(new[0][:18])) != 1:
                return False
        else:
            return False
    return True


def _off_by_one(d: _Diff) -> Optional[_Line]:
    for plus, minus in d.replaced_pairs():
        if _off_by_one_pair(plus.norm, minus.norm):
            return plus
    return None


_GUARD = re.compile(
    r"^(?:el)?if\b(?:.*\b(?:and|or))? not\b"  # if not x / ... and not x (not "if x not in seen")
    r"|^(?:el)?if\b.*(?:\bis (?:not )?None\b"  # x is None
    r"|(?:\b[A-Za-z_]\w*|len\([^()]*\))(?:==|!=|<=|>=|<|>)-?[01]\b(?!\.)"  # n <= 1, len(xs) == 0
    r"|(?:==|!=)(?:\[\]|\(\)|\{\}|''|\"\"|None))"  # xs == []
)
_IF = re.compile(r"^(?:el)?if\b")
_EARLY_EXIT = re.compile(r"^(?:return|raise)\b")


def _is_guard(lines: list[_Line], i: int) -> bool:
    """A guard: an ``if`` testing emptiness / None / 0 / 1, or an ``if`` whose body starts with return / raise."""
    norm = lines[i].norm
    if not _IF.match(norm):
        return False
    if _GUARD.match(norm):
        return True
    one_line_body = re.search(r":((?:return|raise)\b.*)$", norm)
    next_line = lines[i + 1].norm if i + 1 < len(lines) else ""
    return bool(one_line_body or (norm.endswith(":") and _EARLY_EXIT.match(next_line)))


def _missing_edge_case(d: _Diff) -> Optional[_Line]:
    plus_guards = [i for i in d.plus_only() if _is_guard(d.plus, i)]
    if not plus_guards or any(_is_guard(d.minus, j) for j in d.minus_only()):
        return None
    return d.plus[plus_guards[0]]


_CONVERSION = re.compile(r"^(?:str|list|int|float|bool|tuple|set|sorted|repr)\((.*)\)$")
_JOIN = re.compile(r"""^(?:'[^']*'|"[^"]*")\.join\((.*)\)$""")
_KIND_PATTERNS: tuple[tuple[str, re.Pattern], ...] = (
    ("none", re.compile(r"^(?:None)?$")),
    ("bool", re.compile(r"^(?:True|False|bool\(.*|not\b.*)$")),
    ("str", re.compile(r"""^(?:[rRbBuUfF]{0,2}['"].*|str\(.*|repr\(.*|(?:'[^']*'|"[^"]*")\.join\(.*)$""")),
    ("list", re.compile(r"^(?:\[.*\]|list\(.*\)|sorted\(.*\))$")),
    ("tuple", re.compile(r"^(?:tuple\(.*\)|\(\)|\(.*,.*\))$")),
    ("dict", re.compile(r"^(?:dict\(.*\)|\{\}|\{[^{}]*:.*\})$")),
    ("set", re.compile(r"^(?:set\(.*\)|\{[^:]*\})$")),
    ("number", re.compile(r"^(?:-?\d+(?:\.\d+)?|(?:int|float|len|sum|abs|round)\(.*\))$")),
)


def _has_top_level_comma(expr: str) -> bool:
    depth = 0
    for ch in expr:
        depth += (ch in "([{") - (ch in ")]}")
        if ch == "," and depth == 0:
            return True
    return False


def _expr_kind(expr: str) -> str:
    """The kind of value an expression plainly gives ("" when it does not show)."""
    if _has_top_level_comma(expr) and expr[:1] not in "'\"":
        return "tuple"
    for kind, pattern in _KIND_PATTERNS:
        if pattern.match(expr):
            return kind
    return ""


def _returned_expr(norm: str) -> Optional[str]:
    """The expression of a ``return`` (or, as what the caller gets, of a ``print``) line, or None."""
    m = re.match(r"^(?:return\b ?(.*)|print\((.*)\))$", norm)
    if not m:
        return None
    return m.group(1) if m.group(1) is not None else m.group(2)


def _kinds_differ(plus: str, minus: str) -> bool:
    a, b = _returned_expr(plus), _returned_expr(minus)
    if a is None or b is None:
        return False
    if plus.startswith("return") and minus.startswith("print("):
        return True  # y- prints what y+ returns: the caller gets None
    if minus.startswith("print("):
        return False
    for outer, inner in ((a, b), (b, a)):
        conv = _CONVERSION.match(outer) or _JOIN.match(outer)
        if (conv and conv.group(1) == inner) or outer == f"[{inner}]":
            return True
    ka, kb = _expr_kind(a), _expr_kind(b)
    return bool(ka and kb and ka != kb)


def _wrong_return_type(d: _Diff) -> Optional[_Line]:
    plus_returns = [d.plus[i] for i in d.plus_only() if d.plus[i].norm.startswith("return")]
    for j in d.minus_only():
        for p in plus_returns:
            if _kinds_differ(p.norm, d.minus[j].norm):
                return p
    return None


def _literal_kind(text: str) -> str:
    try:
        value = ast.literal_eval(text.strip()[:2000])
    except Exception:  # not a literal (or too deep / too long to read)
        return ""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float, complex)):
        return "number"
    return type(value).__name__


_RETURNED = re.compile(r"returned (.*), expected (.*)$", re.DOTALL)
_TYPE_WORD = re.compile(r"\btype\b|\bNoneType\b|<class '", re.IGNORECASE)


def _detail_names_type(detail: str) -> bool:
    detail = str(detail)[:2000].split(" | output:")[0]
    m = _RETURNED.search(detail)
    if m:
        got, want = _literal_kind(m.group(1)), _literal_kind(m.group(2))
        if got and want and got != want:
            return True
    return bool(_TYPE_WORD.search(detail))


def _wrong_algorithm(d: _Diff) -> Optional[_Line]:
    if d.similarity() < _SIMILARITY_THRESHOLD:
        return d.first_divergence()[1]
    return None


# The line-level rules for a failed y- with a y+, in decision order; each returns y+'s line it was decided on.
_DIFF_RULES: tuple[tuple[str, Callable[[_Diff], Optional[_Line]]], ...] = (
    ("wrong_algorithm", _wrong_algorithm),
    ("off_by_one", _off_by_one),
    ("missing_edge_case", _missing_edge_case),
    ("wrong_return_type", _wrong_return_type),
)


def _categorize(d: Optional[_Diff], minus_status: str, minus_detail: str) -> tuple[str, Optional[_Line]]:
    """(category, y+'s line the category was decided on) -- the decision order of the module docstring."""
    by_status = _STATUS_CATEGORY.get(str(minus_status).strip())
    if by_status:
        return by_status, (d.first_divergence()[1] if d else None)
    if _detail_names_type(minus_detail):
        return "wrong_return_type", (d.first_divergence()[1] if d else None)
    if d is None or not d.plus:
        return "wrong_output", None
    for category, rule in _DIFF_RULES:
        evidence = rule(d)
        if evidence is not None:
            return category, evidence
    return "wrong_output", d.first_divergence()[1]


def divergence_category(plus_code: Optional[str], minus_code: str, minus_status: str, minus_detail: str) -> str:
    """The divergence category of y- against y+ (``plus_code`` None: non-contrastive, status and detail only).
    Decision order: see the module docstring. Never raises; an unreadable input falls back to wrong_output."""
    try:
        d = _diff(_as_code(plus_code), _as_code(minus_code)) if plus_code is not None else None
        return _categorize(d, minus_status, minus_detail)[0]
    except Exception:  # never raise on model output
        return _STATUS_CATEGORY.get(str(minus_status), "wrong_output")


# --- length control -----------------------------------------------------------------------------------------
# The fixed text of a template (labels, critique, contrast, heuristic) is at most FIXED_TOKENS_MAX tokens and the
# quoted parts (s*, y+'s line, the detail) share SLOT_TOKENS estimated tokens, so M <= 80 tokens; the heuristic tail
# (<= TAIL_TOKENS) is added when the quoted parts leave room for it, so M >= 50 tokens even when they are short.
# tests/test_template_builder.py checks these numbers against SmolLM2's tokenizer.

FIXED_TOKENS_MAX = 50
TAIL_TOKENS = 12
SLOT_TOKENS = 29  # 80 - FIXED_TOKENS_MAX - 1: one token of margin for the estimate
_STEP_CHARS, _PLUS_CHARS, _DETAIL_CHARS = 80, 64, 64
_PLUS_MIN, _DETAIL_MIN = 8, 8  # kept for y+'s line and the detail while s* is cut

_PIECE = re.compile(r"\.\.\.|[A-Za-z]+|[0-9]|\s+|[^\sA-Za-z0-9]")
_SEGMENT = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")
_SYLLABLE = re.compile(r"[^aeiouy][aeiouy][^aeiouy]")
# Words that are one token, with or without a leading space, in SmolLM2's vocabulary (checked by the tests):
# Python keywords and builtins, common short names, and the words of the sandbox's verdict details.
_ONE_TOKEN_WORDS = frozenset("""
abs acc add all and ans any arr bin buf cnt col cur dec def del dir dst end err fmt for get hex idx inc int key len
lst map max mid min msg neg not num obj oct ord out pop pos pow res ret row seq set sig src str sub sum tmp top try
val zip
Attribute Error Exception False Index Local Memory Name None Runtime Stop True Type Value Zero answer append array
assert async attribute await being bool break bytes cache ceil char chars class collections cols comparison compile
complex continue count counter curr defined depth dict division elif else error eval except exec exit expected
extend filter first float floor format from getattr global grid hash height high import index input isinstance
item items iter join keys lambda last left length limit line lines list lower math matrix maximum more must name
next node none nums object open other pass prefix prev print program property raise range replace repr result
return right round rows self setattr signal size slice sort sorted split sqrt start status string strip suffix
super temp test tested than time total tuple type upper value values visited while width with word words yield zero
""".split())


def _segment_cost(seg: str) -> int:
    """Tokens of one letter segment (a word, or one part of a camelCase / snake_case name), overestimated."""
    vowels = sum(ch in "aeiouyAEIOUY" for ch in seg)
    if len(seg) <= 2 or seg in _ONE_TOKEN_WORDS:
        return 1
    if len(seg) == 3:  # consonant-vowel-consonant syllables are mostly one token; "ahi", "blo" are two
        return 1 if _SYLLABLE.fullmatch(seg.lower()) else 2
    if len(seg) > 12 or not 0.2 <= vowels / len(seg) <= 0.7:  # not word-like: one token a letter
        return len(seg)
    return math.ceil(len(seg) * 3 / 4) if seg.isupper() else math.ceil(len(seg) / 3)


def _piece_cost(piece: str, next_piece: str) -> int:
    if piece == " " and next_piece[:1] and not next_piece[:1].isdigit() and not next_piece.isspace():
        return 0  # merged into the next word or symbol ("Ġword", "Ġ(")
    if not piece.isascii():
        return len(piece.encode("utf-8", "replace"))  # at most one token a byte
    if piece[0].isalpha():
        segments = _SEGMENT.findall(piece)
        return sum(map(_segment_cost, segments)) if "".join(segments) == piece else len(piece)
    return 1


def _token_cost(text: str) -> int:
    """Tokens of one line of text under a byte-level BPE vocabulary (SmolLM2's), overestimated: word-like letter
    runs at about three letters a token, other letter runs, digits and symbols at one token a character, other
    characters at one token a UTF-8 byte."""
    pieces = _PIECE.findall(text)
    return sum(_piece_cost(p, pieces[k + 1] if k + 1 < len(pieces) else "") for k, p in enumerate(pieces))


def _clean(text: str) -> str:
    """One line of printable text (whitespace runs become one space, other unprintable characters "?"),
    backticks made quotes (the critique quotes with backticks)."""
    text = "".join(ch if ch.isprintable() else (" " if ch.isspace() else "?") for ch in str(text)[:4000])
    return re.sub(r"\s+", " ", text.replace("`", "'")).strip()


def _fit(text: str, tokens: int, chars: int, start: int = 0) -> str:
    """``text`` from piece ``start`` on (marked "..." when > 0), cut to at most ``tokens`` (estimated) and
    ``chars``, with a trailing "..." where it was cut."""
    pieces = _PIECE.findall(text)
    head = "..." if start > 0 else ""

    def candidate(k: int) -> str:
        body = "".join(pieces[start:start + k]).strip()
        return head + body + ("..." if start + k < len(pieces) else "")

    def fits(k: int) -> bool:
        quoted = candidate(k)
        return _token_cost(quoted) <= tokens and len(quoted) <= chars

    lo, hi = 0, len(pieces) - start  # the longest prefix that fits (the cost grows with the prefix)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return candidate(lo) if fits(lo) else ""


def _quote(line: str, other: str, tokens: int, chars: int) -> str:
    """``line`` cleaned and cut to the budget; when the place where it first differs from ``other`` would be cut
    off, the quote starts a few pieces before that place."""
    text = _clean(line)
    if _token_cost(text) <= tokens and len(text) <= chars:
        return text
    matcher = difflib.SequenceMatcher(None, text[:400], _clean(other)[:400], autojunk=False)
    change = next((i1 for tag, i1, _i2, _j1, _j2 in matcher.get_opcodes() if tag != "equal"), 0)
    if _token_cost(text[:change]) <= tokens // 2 and change <= chars // 2:
        return _fit(text, tokens, chars)
    pieces = _PIECE.findall(text)
    offset, k = 0, 0
    while k < len(pieces) and offset + len(pieces[k]) <= change:  # k: the piece where the change starts
        offset += len(pieces[k])
        k += 1
    start = k
    while start > 0 and _token_cost("".join(pieces[start - 1:k])) <= tokens // 3:  # a third of it before
        start -= 1
    return _fit(text, tokens, chars, start=start)


def _detail_excerpt(detail: str, tokens: int) -> str:
    """The verdict's detail without the test number and the program's output, cleaned and cut to ``tokens``;
    ``returned A, expected B`` keeps the start of both values."""
    text = re.sub(r"^test \d+: ", "", str(detail)[:4000].split(" | output:")[0].strip())
    text = _clean(text).rstrip(" :;,")
    if _token_cost(text) <= tokens and len(text) <= _DETAIL_CHARS:
        return text
    pair = re.fullmatch(r"returned (.*), expected (.*)", text)
    if pair and tokens >= 8:
        half = (tokens - 3) // 2  # "returned", ",", "expected"
        got = _fit(pair.group(1), half, _DETAIL_CHARS // 2)
        want = _fit(pair.group(2), tokens - 3 - _token_cost(got), _DETAIL_CHARS // 2)
        return f"returned {got}, expected {want}"
    return _fit(text, tokens, _DETAIL_CHARS)


# --- the builder --------------------------------------------------------------------------------------------


def _render_parts(category: str, step_line: str, step_other: str, plus_line: Optional[str],
                  detail: str, slot_tokens: int = SLOT_TOKENS) -> tuple[str, str, str]:
    """(s*, C, H) with the quoted parts sharing ``slot_tokens``: s* first, then y+'s line, then the detail (each
    later one keeps a reserve while the earlier ones are cut); the heuristic's tail when room is left."""
    template = TEMPLATES[category]
    contrastive = plus_line is not None
    excerpt = _detail_excerpt(detail, slot_tokens)
    detail_reserve = min(_DETAIL_MIN, _token_cost(excerpt) + 2) if excerpt else 0  # + 2: the parentheses
    plus_reserve = min(_PLUS_MIN, _token_cost(_clean(plus_line))) if plus_line else 0
    budget = slot_tokens
    step = _quote(step_line, step_other, budget - detail_reserve - plus_reserve, _STEP_CHARS)
    budget -= _token_cost(step)
    plus = (_quote(plus_line, step_line, budget - detail_reserve, _PLUS_CHARS) or "...") if plus_line else ""
    budget -= _token_cost(plus)
    excerpt = _detail_excerpt(detail, budget - 2) if excerpt else ""
    budget -= (_token_cost(excerpt) + 2) if excerpt else 0
    critique = template.critique + (f" ({excerpt})" if excerpt else "")
    if contrastive:
        critique += CONTRAST.format(plus=plus) if plus else PLUS_ENDED
    else:
        critique += NO_CONTRAST
    tail = template.heuristic_tail if budget >= TAIL_TOKENS else ""
    return step, critique + ".", template.heuristic + tail + "."


TokenCounter = Callable[[str], int]
"""Tokens of a text under the policy's own tokenizer (no special tokens), as the NLL term will see M."""
M_TOKENS = (50, 80)  # MEL-Code's length of M
_SLOT_CEILING = 60  # the most estimated tokens the quoted parts may get when a coarse tokenizer leaves M short


def _fit_to_tokenizer(render: Callable[[int], tuple[str, str, str]],
                      count_tokens: Optional[TokenCounter]) -> tuple[str, str, str]:
    """The rendering whose M the policy's tokenizer counts at 50-80 tokens: the quoted parts' budget (estimated
    tokens) is shrunk by the excess over 80, or grown by the shortfall under 50 while that changes the quotes, a few
    times; without a counter, the estimate's rendering. Where no budget gets within the bounds (a tokenizer so fine
    that the fixed text alone exceeds 80), the shortest rendering is kept."""
    slot = SLOT_TOKENS
    parts = render(slot)
    if count_tokens is None:
        return parts
    low, high = M_TOKENS
    best: tuple[int, tuple[str, str, str]] | None = None
    for _ in range(6):
        n = count_tokens(MetaExperience(*parts).render())
        if n <= high and (best is None or best[0] > high or n > best[0]):
            best = (n, parts)
        elif best is None or (best[0] > high and n < best[0]):
            best = (n, parts)
        if n > high and slot > 0:
            slot = max(slot - (n - high), 0)
        elif n < low and slot < _SLOT_CEILING:
            slot = min(slot + (low - n), _SLOT_CEILING)
        else:
            break
        new = render(slot)
        if new == parts:
            break
        parts = new
    else:
        n = count_tokens(MetaExperience(*parts).render())
        if n <= high and (best is None or best[0] > high or n > best[0]):
            best = (n, parts)
    assert best is not None  # the loop's first pass always sets it
    return best[1]


def build_template(problem_prompt: str, y_plus: Optional[str], y_minus: str, minus_status: str, minus_detail: str,
                   bifurcation: Bifurcation = "diff", count_tokens: Optional[TokenCounter] = None) -> MetaExperience:
    """M = (s*, C, H) from the pair (y+, y-) of completions (``y_plus`` None: the non-contrastive ablation).

    ``bifurcation``: ``diff`` (s* = the first divergent line of y-; y-'s first plan step without y+) or
    ``first_plan_step`` (the bifurcation-skip ablation). ``problem_prompt`` is not quoted anywhere: the heuristic is
    fixed text per category, so it names nothing of the problem. Never raises on any completion or verdict text; a
    y- with no code gives an M with ``reject_reason`` "y- has no code"; an unknown ``bifurcation`` is a
    ValueError (a configuration error, not model output). ``count_tokens`` (the policy's tokenizer) holds M to
    50-80 of its tokens (``_fit_to_tokenizer``); without it the length rests on SmolLM2's estimate."""
    if bifurcation not in ("diff", "first_plan_step"):
        raise ValueError(f"unknown bifurcation {bifurcation!r}; known: diff, first_plan_step")
    try:
        minus_code = extract_code(str(y_minus)[:_MAX_INPUT_CHARS]) if str(y_minus).strip() else ""
        plus_code = extract_code(str(y_plus)[:_MAX_INPUT_CHARS]) if y_plus is not None else ""
        d = _diff(plus_code, minus_code)
        if not d.minus:
            return MetaExperience("", "", "", reject_reason="y- has no code")
        contrastive = bool(d.plus)
        category, evidence = _categorize(d if contrastive else None, minus_status, minus_detail)
        minus_line, plus_line = d.first_divergence() if contrastive else (None, None)
        if bifurcation == "first_plan_step" or minus_line is None:
            step_text = first_plan_step(minus_code)
            minus_line = next((x for x in d.minus if x.raw == step_text), d.minus[0])
        cited = evidence or plus_line
        step, critique, heuristic = _fit_to_tokenizer(lambda slot: _render_parts(
            category, minus_line.raw, plus_line.raw if plus_line else "",
            (cited.raw if cited else "") if contrastive else None, str(minus_detail), slot), count_tokens)
        return MetaExperience(step, critique, heuristic, category=category)
    except Exception as exc:  # never raise on model output
        return MetaExperience("", "", "", reject_reason=f"template builder failed: {type(exc).__name__}")
