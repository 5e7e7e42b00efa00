"""MEL-Code's template builder (mel.experience.template): divergence categories, s*, and M's 50-80 token length."""
from __future__ import annotations

import ast
import difflib
import inspect
import json.decoder
import random
import textwrap

import pytest

from mel.experience import template as T
from mel.experience.template import (
    CATEGORIES, TEMPLATES, build_template, divergence_category, first_divergent_line, first_plan_step,
)
from mel.experience.types import render_experience

# --- hand-made pairs ------------------------------------------------------------------------------------------

SUM_PLUS = """def sum_to(n):
    total = 0
    for i in range(n + 1):
        total += i
    return total
"""
SUM_MINUS = SUM_PLUS.replace("range(n + 1)", "range(n)")

MAX_PLUS = """def largest(xs):
    if not xs:
        return 0
    return max(xs)
"""
MAX_MINUS = """def largest(xs):
    return max(xs)
"""

STR_PLUS = """def doubled(x):
    y = x * 2
    return str(y)
"""
STR_MINUS = STR_PLUS.replace("return str(y)", "return y")

FIB_RECURSIVE = """def fib(n):
    if n <= 1:
        return n
    return fib(n - 1) + fib(n - 2)
"""
FIB_LOOP = """def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a * b
    return b
"""

SCALE_PLUS = """def scale(xs, k):
    out = []
    for x in xs:
        out.append(x * k)
    return out
"""
SCALE_MINUS = SCALE_PLUS.replace("x * k", "x + k")

# one pair per category that a failed verdict reaches through the diff
DIFF_CASES = {
    "off_by_one": (SUM_PLUS, SUM_MINUS, "test 0: returned 10, expected 15"),
    "missing_edge_case": (MAX_PLUS, MAX_MINUS, "test 2: ValueError: max() arg is an empty sequence"),
    "wrong_return_type": (STR_PLUS, STR_MINUS, "test 0: AssertionError: "),
    "wrong_algorithm": (FIB_RECURSIVE, FIB_LOOP, "test 1: returned 0, expected 1"),
    "wrong_output": (SCALE_PLUS, SCALE_MINUS, "test 0: returned [3, 4], expected [2, 4]"),
}
STATUS_CASES = {
    "syntax_error": ("syntax_error", "invalid syntax (<program>, line 3)"),
    "runtime_error": ("runtime_error", "test 0: ZeroDivisionError: division by zero"),
    "timeout": ("timeout", "time limit of 5.0s reached"),
    "resource_limit": ("memory", "killed by signal 9"),
}


@pytest.fixture(scope="module")
def n_tokens(tiny_model_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _fenced(code: str) -> str:
    return f"Here is my solution:\n\n```python\n{code}```\n\nIt loops over the input once.<|im_end|>"


def _stdlib_lines() -> list[str]:
    """Realistic code lines: the source of a few stdlib modules."""
    lines = []
    for module in (difflib, ast, textwrap, json.decoder, random):
        lines += [x.strip() for x in inspect.getsource(module).split("\n") if len(x.strip()) >= 8]
    return lines


# --- the registry ---------------------------------------------------------------------------------------------


def test_categories_cover_the_required_ones_each_with_templates():
    required = {"syntax_error", "runtime_error", "timeout", "resource_limit", "wrong_algorithm", "off_by_one",
                "missing_edge_case", "wrong_return_type", "wrong_output"}
    assert required <= set(CATEGORIES) and CATEGORIES == tuple(TEMPLATES)
    assert all(t.critique and t.heuristic.startswith("When ") and ", I should " in t.heuristic
               for t in TEMPLATES.values())


# --- divergence_category --------------------------------------------------------------------------------------


@pytest.mark.parametrize("category", sorted(STATUS_CASES))
def test_verdict_status_decides_first(category):
    status, detail = STATUS_CASES[category]
    assert divergence_category(SUM_PLUS, SUM_MINUS, status, detail) == category  # the diff says off_by_one


@pytest.mark.parametrize("status", ["output_limit", "memory"])
def test_memory_and_output_limit_are_resource_limit(status):
    assert divergence_category(None, SUM_MINUS, status, "") == "resource_limit"


@pytest.mark.parametrize("category", sorted(DIFF_CASES))
def test_failed_pair_gets_its_diff_category(category):
    plus, minus, detail = DIFF_CASES[category]
    assert divergence_category(plus, minus, "failed", detail) == category


@pytest.mark.parametrize("plus_line,minus_line", [
    ("while i < n:", "while i <= n:"),
    ("if j >= len(xs):", "if j > len(xs):"),
    ("return xs[:-1]", "return xs[:]"),
    ("for i in range(1, n):", "for i in range(2, n):"),
])
def test_comparison_and_plus_minus_one_changes_are_off_by_one(plus_line, minus_line):
    program = "def f(xs, n):\n    i = 0\n    j = 0\n    {}\n        pass\n    return i\n"
    assert divergence_category(program.format(plus_line), program.format(minus_line), "failed", "") == "off_by_one"


def test_whitespace_only_changes_do_not_count_as_a_divergence():
    assert divergence_category(SUM_PLUS, SUM_PLUS.replace("range(n + 1)", "range(n+1)"), "failed", "") \
        == "wrong_output"


def test_a_guard_of_y_minus_own_means_no_missing_edge_case():
    minus = MAX_PLUS.replace("if not xs:", "if len(xs) == 0:").replace("return 0", "return None")
    assert divergence_category(MAX_PLUS, minus, "failed", "") != "missing_edge_case"


def test_membership_test_is_not_a_guard():
    plus = "def unique(xs):\n    seen = []\n    for x in xs:\n        if x not in seen:\n            seen.append(x)\n" \
           "    return seen\n"
    minus = "def unique(xs):\n    seen = []\n    for x in xs:\n        seen.append(x)\n    return seen\n"
    assert divergence_category(plus, minus, "failed", "") == "wrong_output"


@pytest.mark.parametrize("plus_return,minus_return", [
    ("return ''.join(out)", "return out"),
    ("return [y]", "return y"),
    ("return True", "return 'yes'"),
    ("return y", "print(y)"),
])
def test_return_expressions_of_different_kinds_are_wrong_return_type(plus_return, minus_return):
    program = "def f(x):\n    out = list(str(x))\n    y = x * 2\n    {}\n"
    assert divergence_category(program.format(plus_return), program.format(minus_return), "failed", "") \
        == "wrong_return_type"


@pytest.mark.parametrize("plus", [SCALE_PLUS, None])
def test_detail_with_values_of_different_kinds_is_wrong_return_type(plus):
    assert divergence_category(plus, SCALE_MINUS, "failed", "test 0: returned '6', expected 6") \
        == "wrong_return_type"


def test_without_y_plus_a_failed_verdict_is_wrong_output():
    assert divergence_category(None, SUM_MINUS, "failed", "test 0: returned 10, expected 15") == "wrong_output"


def test_chat_completions_are_read_as_their_programs():
    assert divergence_category(_fenced(MAX_PLUS), _fenced(MAX_MINUS), "failed", "") == "missing_edge_case"


# --- s* -------------------------------------------------------------------------------------------------------


def test_first_divergent_line_is_y_minus_line_that_leaves_y_plus():
    assert first_divergent_line(SUM_PLUS, SUM_MINUS) == "for i in range(n):"


def test_first_divergent_line_skips_blank_lines_comments_and_docstrings():
    minus = SUM_MINUS.replace("    total = 0\n", '    """Sum it."""\n\n    # start at zero\n    total  =  0\n')
    assert first_divergent_line(SUM_PLUS, minus) == "for i in range(n):"


def test_first_divergent_line_where_y_minus_lacks_a_guard_is_the_line_it_runs_instead():
    assert first_divergent_line(MAX_PLUS, MAX_MINUS) == "return max(xs)"


def test_first_divergent_line_of_a_prefix_of_y_plus_is_its_last_line():
    assert first_divergent_line(SUM_PLUS, "def sum_to(n):\n    total = 0\n") == "total = 0"


def test_first_divergent_line_reads_fenced_chat_output():
    assert first_divergent_line(_fenced(SUM_PLUS), _fenced(SUM_MINUS)) == "for i in range(n):"


def test_first_plan_step_skips_imports_decorators_def_and_docstring():
    code = 'import math\nfrom typing import List\n\n@cache\ndef f(xs):\n    """Doc\n    string."""\n' \
           "    # plan: sort first\n    xs = sorted(xs)\n    return xs\n"
    assert first_plan_step(code) == "xs = sorted(xs)"


def test_first_plan_step_of_a_lone_def_is_the_def_line():
    assert first_plan_step("import os\n\ndef f(x): return x + 1\n") == "def f(x): return x + 1"


def test_first_plan_step_reads_fenced_chat_output():
    assert first_plan_step(_fenced(FIB_LOOP)) == "a, b = 0, 1"


# --- build_template -------------------------------------------------------------------------------------------


def test_build_template_uses_the_first_divergent_line_and_records_the_category():
    m = build_template("Write sum_to(n).", SUM_PLUS, SUM_MINUS, "failed", "test 0: returned 10, expected 15")
    assert (m.ok, m.bifurcation_step, m.category) == (True, "for i in range(n):", "off_by_one")


def test_critique_quotes_y_plus_line_and_the_detail():
    m = build_template("Write sum_to(n).", SUM_PLUS, SUM_MINUS, "failed", "test 0: returned 10, expected 15")
    assert "`for i in range(n + 1):`" in m.critique and "(returned 10, expected 15)" in m.critique
    assert "test 0" not in m.critique


def test_bifurcation_skip_forces_s_star_to_the_first_plan_step():
    m = build_template("Write sum_to(n).", SUM_PLUS, SUM_MINUS, "failed", "", bifurcation="first_plan_step")
    assert (m.bifurcation_step, m.category) == ("total = 0", "off_by_one")


def test_non_contrastive_uses_the_first_plan_step_and_says_there_is_no_y_plus():
    m = build_template("Write sum_to(n).", None, _fenced(SUM_MINUS), "failed", "test 0: returned 10, expected 15")
    assert (m.bifurcation_step, m.category) == ("total = 0", "wrong_output")
    assert T.NO_CONTRAST in m.critique and "y+ has" not in m.critique


def test_y_plus_with_no_code_is_treated_as_non_contrastive():
    m = build_template("Write sum_to(n).", "   ", SUM_MINUS, "failed", "")
    assert m.category == "wrong_output" and T.NO_CONTRAST in m.critique


@pytest.mark.parametrize("y_minus", ["", "   \n\t", "```python\n```", "# only a comment\n"])
def test_y_minus_without_code_is_rejected(y_minus):
    m = build_template("Write f.", SUM_PLUS, y_minus, "failed", "")
    assert not m.ok and m.reject_reason == "y- has no code"


def test_unknown_bifurcation_mode_names_the_known_ones():
    with pytest.raises(ValueError, match="diff, first_plan_step"):
        build_template("Write f.", SUM_PLUS, SUM_MINUS, "failed", "", bifurcation="middle")  # type: ignore[arg-type]


def test_heuristics_do_not_name_the_problem():
    entry = "count_vowel_pairs"
    plus = f"def {entry}(s):\n    if not s:\n        return 0\n    return sum(c in 'aeiou' for c in s[:-1])\n"
    minus = f"def {entry}(s):\n    return sum(c in 'aeiou' for c in s)\n"
    prompt = f"Write {entry}(s) that counts vowels. assert {entry}('ab') == 1"
    for status in ["failed", "syntax_error", "runtime_error", "timeout", "memory"]:
        for y_plus in (plus, None):
            m = build_template(prompt, y_plus, minus, status, f"test 0: {entry}('') raised ValueError")
            assert m.ok and entry not in m.heuristic and "aeiou" not in m.heuristic


# --- length: 50-80 tokens -------------------------------------------------------------------------------------


def test_fixed_template_text_leaves_room_for_the_quoted_parts(n_tokens):
    glues = (T.CONTRAST.format(plus=""), T.PLUS_ENDED, T.NO_CONTRAST)
    for t in TEMPLATES.values():
        longest = max(n_tokens(render_experience("", f"{t.critique} (){g}.", t.heuristic + ".")) for g in glues)
        shortest = min(n_tokens(render_experience("", t.critique + g + ".", t.heuristic + t.heuristic_tail + "."))
                       for g in glues)
        assert longest <= T.FIXED_TOKENS_MAX and n_tokens(t.heuristic_tail) <= T.TAIL_TOKENS and shortest >= 49
    assert T.FIXED_TOKENS_MAX + T.SLOT_TOKENS <= 80


def test_one_token_words_of_the_estimate_are_one_token(n_tokens):
    assert all(n_tokens(w) == 1 and n_tokens(" " + w) == 1 for w in T._ONE_TOKEN_WORDS)


def test_token_estimate_does_not_undercount_real_code(n_tokens):
    lines = [T._clean(x) for x in _stdlib_lines()][:3000]
    under = [n_tokens(x) - T._token_cost(x) for x in lines if n_tokens(x) > T._token_cost(x)]
    assert len(under) <= len(lines) // 100 and max(under, default=0) <= 3


LONG_LINE = ("result = sorted(set(item.strip().lower() for item in text.split(',') if item and not "
             "item.startswith('#')), key=lambda s: (len(s), s))")
LONG_DETAIL = ("test 3: returned ['alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta', 'eta', 'theta'], expected "
               "['beta', 'alpha', 'delta', 'gamma', 'epsilon', 'eta', 'zeta', 'theta'] | output: debug 1 2 3")


def _long_pair(category: str) -> tuple[str, str, str, str]:
    """(y+, y-, status, detail) of ``category`` whose lines and detail are far longer than M can quote."""
    if category in STATUS_CASES:
        status = STATUS_CASES[category][0]
        plus = f"def f(text):\n    {LONG_LINE}\n    return result\n"
        return plus, plus.replace("len(s), s", "-len(s), s"), status, LONG_DETAIL * 5
    plus, minus, _ = DIFF_CASES[category]
    pad = "_and_a_rather_long_identifier_name_" * 3
    return plus.replace("xs", "xs" + pad), minus.replace("xs", "xs" + pad), "failed", LONG_DETAIL * 5


@pytest.mark.parametrize("category", CATEGORIES)
@pytest.mark.parametrize("contrastive", [True, False])
def test_m_is_50_to_80_tokens_for_short_inputs(category, contrastive, n_tokens):
    if category in STATUS_CASES:
        (status, detail), (plus, minus) = STATUS_CASES[category], ("x = 1\n", "x = 2\n")
    else:
        (plus, minus, detail), status = DIFF_CASES[category], "failed"
    m = build_template("Write f.", plus if contrastive else None, minus, status, detail)
    assert (m.category == category or not contrastive) and 50 <= n_tokens(m.render()) <= 80


@pytest.mark.parametrize("status", ["failed", "syntax_error", "runtime_error", "timeout", "memory"])
@pytest.mark.parametrize("y_plus", ["y", None])
def test_m_is_at_least_50_tokens_for_the_shortest_inputs(status, y_plus, n_tokens):
    m = build_template("", y_plus, "x", status, "")
    assert m.ok and 50 <= n_tokens(m.render()) <= 80


@pytest.mark.parametrize("category", CATEGORIES)
@pytest.mark.parametrize("contrastive", [True, False])
def test_m_is_50_to_80_tokens_for_very_long_lines_and_details(category, contrastive, n_tokens):
    plus, minus, status, detail = _long_pair(category)
    m = build_template("Write f.", plus if contrastive else None, minus, status, detail)
    assert (m.category == category or not contrastive) and 50 <= n_tokens(m.render()) <= 80


@pytest.mark.parametrize("bifurcation", ["diff", "first_plan_step"])
def test_m_is_50_to_80_tokens_over_many_realistic_lines(bifurcation, n_tokens):
    rng = random.Random(0)
    lines = _stdlib_lines()
    statuses = ["failed", "failed", "failed", "syntax_error", "runtime_error", "timeout", "memory", "output_limit"]
    counts = []
    for _ in range(300):
        line, other, detail = rng.choice(lines), rng.choice(lines), rng.choice(lines)
        plus = f"def f(a, b):\n    {line}\n    {other}\n    return a\n"
        minus = f"def f(a, b):\n    {line.replace('(', '( ', 1) if rng.random() < 0.5 else other}\n    return b\n"
        m = build_template("Write f.", plus if rng.random() < 0.8 else None, minus, rng.choice(statuses),
                           f"test 0: {detail}", bifurcation=bifurcation)
        counts.append(n_tokens(m.render()))
    assert min(counts) >= 50 and max(counts) <= 80


# --- garbage never raises -------------------------------------------------------------------------------------

_RNG = random.Random(7)
GARBAGE = [
    "",
    "\x00\x01\x02\xff\xfe" * 50,
    bytes(_RNG.randrange(256) for _ in range(20_000)).decode("latin-1"),
    "".join(chr(_RNG.randrange(0x20, 0x2FFF)) for _ in range(5_000)),
    "```python\n" * 500,
    "```\n" + "def f(:\n" * 3 + "```",
    "def f(x):\n" + "    y = (((((((( x\n" * 20_000,
    "x = " + "a+" * 100_000 + "1",
    "\ud800 lone surrogate \udfff",
    "return " + "9" * 10_000,
]


@pytest.mark.parametrize("k", range(len(GARBAGE)))
def test_garbage_inputs_never_raise(k):
    text = GARBAGE[k]
    for y_plus in (text, SUM_PLUS, None):
        for status in ("failed", "syntax_error", text[:30]):
            m = build_template(text, y_plus, text, status, text)
            assert m.ok != bool(m.reject_reason), m  # well-formed with no reason, or rejected with one
            assert not m.ok or (m.bifurcation_step and m.critique and m.heuristic), m
    assert divergence_category(text, text, text, text) in CATEGORIES
    assert isinstance(first_divergent_line(text, text), str) and isinstance(first_plan_step(text), str)


@pytest.mark.parametrize("k", [1, 3, 6, 7, 9])
def test_garbage_that_has_code_still_gives_50_to_80_tokens(k, n_tokens):
    m = build_template("Write f.", SUM_PLUS, GARBAGE[k], "failed", GARBAGE[k])
    assert m.ok and 50 <= n_tokens(m.render()) <= 80


@pytest.mark.timeout(120)  # a guard against a hang (e.g. a quadratic diff), not a timing claim
def test_huge_inputs_are_built():
    m = build_template("Write f.", GARBAGE[6], GARBAGE[6].replace("x", "y"), "failed", GARBAGE[7])
    assert m.ok != bool(m.reject_reason), m


# --- the policy's own tokenizer -----------------------------------------------------------------------------------

_LONG_PLUS = ("def f(xs):\n    if not xs:\n        return 0\n    total = sum(x * x for x in xs if x % 2 == 0)\n"
              "    return total\n")
_LONG_MINUS = "def f(xs):\n    total = sum(x * x for x in xs if x % 2 == 1 and x > 1000000)\n    return total\n"
_LONG_DETAIL = "test 3: f([2, 4, 6, 8, 10, 12, 14]) returned 0, expected 364"


@pytest.mark.parametrize("name,count", [
    ("finer than SmolLM2 (2 tokens per 5 characters)", lambda t: len(t) * 2 // 5),
    ("coarser than SmolLM2 (one token a word)", lambda t: len(t.split())),
])
def test_m_is_held_to_50_to_80_tokens_of_the_tokenizer_it_is_given(name, count):
    plain = build_template("x", _LONG_PLUS, _LONG_MINUS, "failed", _LONG_DETAIL).render()
    assert not 50 <= count(plain) <= 80, name  # the SmolLM2 estimate alone misses this tokenizer's bounds
    fitted = build_template("x", _LONG_PLUS, _LONG_MINUS, "failed", _LONG_DETAIL, count_tokens=count)
    assert fitted.ok and fitted.category == "missing_edge_case"
    assert 50 <= count(fitted.render()) <= 80, (name, count(fitted.render()))


def test_the_smollm2_tokenizer_as_counter_keeps_m_in_bounds(n_tokens):
    m = build_template("x", _LONG_PLUS, _LONG_MINUS, "failed", _LONG_DETAIL, count_tokens=n_tokens)
    assert 50 <= n_tokens(m.render()) <= 80
