"""Answer extraction: the one place where raw model output becomes a program or a final answer.

- `extract_code(text)`: the program to execute for a code completion.
  1. Chat-template special tokens (``<|im_end|>``, ``<|endoftext|>``, ``</s>``, ...) and a leading role line are
     removed.
  2. Fenced blocks (three backticks, optionally a language tag; an unterminated last fence, as left by a length cut-off,
     runs to the end of the text): among the ``python``/``py``/``python3`` blocks the longest is taken (the last one on
     a tie) -- the longest block is the solution far more often than a trailing usage example; with no Python-tagged
     block, the longest (then last) fenced block of any tag.
  3. No fence: the text itself if it compiles; else the text minus leading prose lines (lines before the first one
     that looks like code), and minus trailing unindented prose lines while the rest does not compile.
- `extract_answer(text)`: the final answer of a math completion: the content of the last ``\\boxed{...}`` (or
  ``\\fbox{...}``) with balanced braces, else the last number in the text (``-1,234.5`` -> ``-1234.5``; ``3/4`` is kept
  as a fraction), else None.

Both are pure functions and never raise on any input string.
"""
from __future__ import annotations

import re
import warnings

__all__ = ["extract_code", "extract_answer"]

_SPECIAL_TOKENS = re.compile(
    r"<\|(?:im_start|im_end|endoftext|eot_id|end_of_text|start_header_id|end_header_id|begin_of_text|assistant|user"
    r"|system|end)\|>|</s>|<s>|<eos>|<bos>|<end_of_turn>|<start_of_turn>"
)
_ROLE_LINE = re.compile(r"\A\s*(?:assistant|model)\s*\n")
_FENCE = re.compile(r"^[ \t]*```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)", re.DOTALL | re.MULTILINE)
_PY_TAGS = {"python", "py", "python3", "py3"}
_CODE_START = re.compile(
    r"^(?:def |class |import |from \S+ import |@|#|async def |if |for |while |try:|with |return |raise |print\(|"
    r"[A-Za-z_][A-Za-z0-9_]*(?:\s*,\s*[A-Za-z_][A-Za-z0-9_]*)*\s*[+\-*/]?=[^=])"
)
_MAX_TRIM_TRIES = 40


def _clean_chat(text: str) -> str:
    text = _SPECIAL_TOKENS.sub("\n", text)
    return _ROLE_LINE.sub("", text, count=1)


def _compiles(code: str) -> bool:
    try:
        with warnings.catch_warnings():  # e.g. SyntaxWarning for '\d' in a string: noise, not our verdict
            warnings.simplefilter("ignore")
            compile(code, "<extract>", "exec", dont_inherit=True)
        return True
    except BaseException:  # SyntaxError, ValueError (null bytes), RecursionError, MemoryError, ...
        return False


def _pick(blocks: list[str]) -> str:
    best = ""
    for block in blocks:  # longest, the last one on a tie
        if len(block.strip()) >= len(best.strip()):
            best = block
    return best


def _strip_prose(text: str) -> str:
    if _compiles(text):
        return text.strip("\n")
    lines = text.split("\n")
    start = 0
    while start < len(lines) and not _CODE_START.match(lines[start]):
        start += 1
    if start == len(lines):  # nothing looks like code: hand back the text (it will fail honestly)
        return text.strip("\n")
    lines = lines[start:]
    tries = 0
    while len(lines) > 1 and tries < _MAX_TRIM_TRIES and not _compiles("\n".join(lines)):
        last = lines[-1]
        if last.strip() and (last[:1].isspace() or _CODE_START.match(last)):
            break  # an indented or code-looking last line is part of the program, not trailing prose
        lines.pop()
        tries += 1
    return "\n".join(lines).strip("\n")


def extract_code(text: str) -> str:
    """The program in a raw model completion (see the module docstring for the rules)."""
    try:
        text = _clean_chat(str(text))
        blocks: list[tuple[str, str]] = [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]
        python_blocks = [body for tag, body in blocks if tag in _PY_TAGS]
        if python_blocks:
            return _pick(python_blocks).strip("\n")
        if blocks:
            return _pick([body for _, body in blocks]).strip("\n")
        return _strip_prose(text)
    except Exception:  # never raise on model output
        return str(text)


_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOXED_BARE = re.compile(r"\\boxed\s+([^\s$]+)")
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?|-?\.\d+")


def _last_boxed(text: str) -> str | None:
    found: str | None = None
    for m in _BOXED.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            i += 1
        if depth == 0:
            found = text[m.end():i - 1].strip()
    if found is None:
        bare = _BOXED_BARE.findall(text)
        if bare:
            found = bare[-1]
    return found


def extract_answer(text: str) -> str | None:
    """The final answer: last balanced ``\\boxed{...}``, else the last number, else None."""
    try:
        text = _clean_chat(str(text))
        boxed = _last_boxed(text)
        if boxed:
            return boxed
        numbers = _NUMBER.findall(text)
        if numbers:
            return re.sub(r"\s+", "", numbers[-1]).replace(",", "")
        return None
    except Exception:
        return None
