"""Tests of the task-set layer: built-in sets, JSONL loaders on the shared benchmark files, the registry."""
from __future__ import annotations

import ast
import json
import math
import random
import re
import string
from pathlib import Path
from typing import Any

import pytest

from mel.data import TASKSETS, CodeTests, DatasetError, Problem, load_taskset, register_taskset
from mel.data.easy_code import compile_function, easy_code_problems
from mel.data.loaders import load_gsm8k, load_humaneval, load_math, load_mbpp
from mel.data.toy import toy_regex_problems

REPO = Path(__file__).resolve().parents[1]
DATASETS = (REPO / ".." / "shared" / "datasets").resolve()
needs_datasets = pytest.mark.skipif(not DATASETS.is_dir(), reason=f"shared benchmark datasets not found at {DATASETS}")


def _close(a: Any, b: Any, atol: float) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, abs_tol=atol)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_close(x, y, atol) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], atol) for k in a)
    return type(a) is type(b) and a == b


# --- easy_code -------------------------------------------------------------------------------------------------------

def test_easy_code_count_ids_and_order() -> None:
    problems = easy_code_problems()
    assert len(problems) >= 110
    ids = [p.problem_id for p in problems]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"easy/[a-z_0-9]+", i) for i in ids)
    assert ids[0] == "easy/add"
    assert [p.problem_id for p in easy_code_problems()] == ids  # deterministic
    names = {i.split("/", 1)[1] for i in ids}
    assert {"add", "square", "is_even", "reverse_string", "factorial", "max_of_three", "count_vowels",
            "celsius_to_fahrenheit", "sum_list", "is_palindrome", "fizzbuzz"} <= names


def test_easy_code_problem_shape() -> None:
    for p in easy_code_problems():
        assert p.kind == "code" and p.tests is not None and p.tests.style == "io"
        assert p.problem_id == f"easy/{p.tests.entry_point}"
        assert 3 <= len(p.tests.inputs) == len(p.tests.outputs) <= 6
        assert f"`{p.tests.entry_point}(" in p.prompt and "```python" in p.prompt
        assert p.reference_solution.startswith(f"def {p.tests.entry_point}(")


def test_easy_code_literals_round_trip() -> None:
    for p in easy_code_problems():
        for text in (*p.tests.inputs, *p.tests.outputs):
            value = ast.literal_eval(text)
            assert repr(value) == text, (p.problem_id, text)
        for text in p.tests.inputs:
            assert isinstance(ast.literal_eval(text), list), (p.problem_id, text)


def test_easy_code_reference_solutions_pass_their_own_tests() -> None:
    for p in easy_code_problems():
        fn = compile_function(p.reference_solution, p.tests.entry_point)
        for inp, out in zip(p.tests.inputs, p.tests.outputs):
            got = fn(*ast.literal_eval(inp))
            assert _close(got, ast.literal_eval(out), p.tests.atol), (p.problem_id, inp, got, out)


def test_easy_code_spot_values() -> None:
    by_id = {p.problem_id: p for p in easy_code_problems()}
    add = by_id["easy/add"].tests
    assert dict(zip(add.inputs, add.outputs))["[1, 2]"] == "3"
    fizz = by_id["easy/fizzbuzz"].tests
    assert dict(zip(fizz.inputs, fizz.outputs))["[15]"] == "'FizzBuzz'"
    fact = by_id["easy/factorial"].tests
    assert dict(zip(fact.inputs, fact.outputs))["[5]"] == "120"
    assert by_id["easy/celsius_to_fahrenheit"].tests.atol > 0 and add.atol == 0
    assert by_id["easy/add"].prompt.startswith("Write a Python function `add(a, b)` that returns the sum of a and b.")


def test_wrong_solution_fails_io_tests() -> None:
    p = next(p for p in easy_code_problems() if p.problem_id == "easy/square")
    wrong = compile_function("def square(n):\n    return n * 2\n", "square")
    results = [_close(wrong(*ast.literal_eval(i)), ast.literal_eval(o), 0.0) for i, o in zip(p.tests.inputs,
                                                                                             p.tests.outputs)]
    assert not all(results)


# --- toy_regex -------------------------------------------------------------------------------------------------------

def test_toy_regex() -> None:
    problems = toy_regex_problems()
    assert 12 <= len(problems) <= 20
    assert [p.problem_id for p in problems] == [f"toy/{i}" for i in range(len(problems))]
    assert all(p.kind == "regex" and p.answer.startswith("^") for p in problems)
    vowel = problems[0]
    assert re.search(vowel.answer, "apple".strip()) and not re.search(vowel.answer, "banana")
    # Crude random text (seeded): every pattern passes some and fails some, and the average share is moderate,
    # so a random policy gets mixed groups.
    rng = random.Random(0)
    alphabet = string.ascii_letters + string.digits + " .,!?'-"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(3000)]
    shares = [sum(bool(re.search(p.answer, t.strip())) for t in texts) / len(texts) for p in problems]
    assert all(0.05 < s < 0.8 for s in shares), shares
    assert 0.15 < sum(shares) / len(shares) < 0.5, shares


# --- Problem JSON round trip -----------------------------------------------------------------------------------------

def test_problem_json_round_trip() -> None:
    samples = [easy_code_problems()[0], easy_code_problems()[-1], toy_regex_problems()[3]]
    samples.append(Problem(problem_id="m/1", kind="code", prompt="p",
                           tests=CodeTests(style="assert", asserts=("assert f(1) == 2",), setup_code="import os")))
    for p in samples:
        back = Problem.from_json(p.to_json())
        assert back == p and back.metadata == p.metadata and back.reference_solution == p.reference_solution
        assert isinstance(back.tests.inputs if back.tests else (), tuple)


# --- loaders on the shared datasets ----------------------------------------------------------------------------------

def test_humaneval_from_package() -> None:
    problems = load_humaneval()
    assert len(problems) == 164
    assert problems[0].problem_id == "HumanEval/0" and problems[163].problem_id == "HumanEval/163"
    p = problems[0]
    assert p.tests.style == "check" and p.tests.entry_point == "has_close_elements"
    assert "def check(candidate)" in p.tests.check_code
    assert p.metadata["code_prompt"] in p.prompt and p.metadata["code_prompt"].startswith("from typing import List")
    for q in problems[:5]:  # the canonical solution passes the check code (wiring check, trusted code)
        ns: dict[str, Any] = {}
        exec(q.reference_solution + "\n" + q.tests.check_code, ns)
        ns["check"](ns[q.tests.entry_point])


@needs_datasets
def test_humaneval_from_file_matches_package() -> None:
    from_file = load_humaneval(str(DATASETS / "humaneval" / "HumanEval.jsonl"))
    assert [p.to_json() for p in from_file] == [p.to_json() for p in load_humaneval()]


@needs_datasets
def test_mbpp_train() -> None:
    path = str(DATASETS / "mbpp" / "mbpp_train.jsonl")
    problems = load_mbpp(path)
    assert len(problems) == 374
    assert problems[0].problem_id == "mbpp/601" and problems[-1].problem_id == "mbpp/974"
    first = json.loads(Path(path).read_text().splitlines()[0])
    p = problems[0]
    assert p.tests.style == "assert" and p.tests.asserts == tuple(first["test_list"])
    assert first["text"] in p.prompt and first["test_list"][0] in p.prompt
    assert p.tests.entry_point == "max_chain_length"
    assert len(load_mbpp(path, task_ids=range(601, 611))) == 10
    for q in problems[1:6]:  # reference code passes its own asserts (wiring check, trusted dataset code)
        ns: dict[str, Any] = {}
        exec(q.tests.setup_code + "\n" + q.reference_solution, ns)
        for statement in q.tests.asserts:
            exec(statement, ns)


@needs_datasets
def test_gsm8k_test_both_formats() -> None:
    original_path = DATASETS / "gsm8k" / "test.jsonl"
    original = load_gsm8k(str(original_path))
    normalized = load_gsm8k(str(DATASETS / "gsm8k" / "test.normalized.jsonl"))
    assert len(original) == len(normalized) == 1319
    first_row = json.loads(original_path.read_text().splitlines()[0])
    expected = first_row["answer"].split("####")[-1].strip().replace(",", "")
    assert original[0].answer == expected == "18"
    assert first_row["question"] in original[0].prompt and "\\boxed{}" in original[0].prompt
    assert [(p.problem_id, p.answer) for p in original] == [(p.problem_id, p.answer) for p in normalized]
    assert all(p.kind == "math" and "," not in p.answer for p in original)


@needs_datasets
def test_math500() -> None:
    problems = load_math(str(DATASETS / "math500" / "test.jsonl"))
    assert len(problems) == 500
    assert len({p.problem_id for p in problems}) == 500
    assert problems[0].problem_id == "test/precalculus/807.json"
    assert problems[0].answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert all("\\boxed{}" in p.prompt and p.kind == "math" for p in problems)


@needs_datasets
def test_load_taskset_with_paths_and_limit() -> None:
    assert len(load_taskset("mbpp", str(DATASETS / "mbpp" / "mbpp_train.jsonl"), limit=7)) == 7
    assert len(load_taskset("math500", str(DATASETS / "math500" / "test.jsonl"))) == 500
    assert len(load_taskset("gsm8k", "file://" + str(DATASETS / "gsm8k" / "test.jsonl"), limit=3)) == 3


# --- bad rows --------------------------------------------------------------------------------------------------------

def test_bad_rows_are_all_reported(tmp_path: Path) -> None:
    good = {"text": "Write a function to add.", "code": "def f(a, b):\n    return a + b", "task_id": 1,
            "test_setup_code": "", "test_list": ["assert f(1, 2) == 3"], "challenge_test_list": []}
    rows = [good, {**good, "task_id": 2, "test_list": []}, {**good, "task_id": 3},
            {**good, "task_id": 4, "test_list": "assert f(1, 2) == 3"}]
    path = tmp_path / "mbpp_bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DatasetError) as info:
        load_mbpp(str(path))
    message = str(info.value)
    assert "mbpp_bad.jsonl line 2: field 'test_list' must be a non-empty list of strings" in message
    assert "mbpp_bad.jsonl line 4: field 'test_list' must be a non-empty list of strings" in message
    assert "line 1:" not in message and "line 3:" not in message
    assert isinstance(info.value, ValueError)


def test_bad_json_and_missing_fields(tmp_path: Path) -> None:
    path = tmp_path / "gsm.jsonl"
    path.write_text('{"question": "q", "answer": "x #### 5"}\nnot json\n\n{"question": "q2", "answer": "no marker"}\n')
    with pytest.raises(DatasetError) as info:
        load_gsm8k(str(path))
    message = str(info.value)
    assert "gsm.jsonl line 2: is not valid JSON" in message
    assert "gsm.jsonl line 4: field 'answer' must end with '#### <number>'" in message
    math_path = tmp_path / "math.jsonl"
    math_path.write_text('{"problem": "1+1?", "answer": ""}\n{"answer": "2"}\n')
    with pytest.raises(DatasetError, match=r"math.jsonl line 1: field 'answer'(.|\n)*line 2: field 'problem'"):
        load_math(str(math_path))
    with pytest.raises(DatasetError, match="file not found"):
        load_math(str(tmp_path / "absent.jsonl"))


# --- registry --------------------------------------------------------------------------------------------------------

def test_registry_names_and_errors() -> None:
    assert {"easy_code", "toy_regex", "humaneval", "mbpp", "gsm8k", "math500"} <= set(TASKSETS)
    with pytest.raises(KeyError) as info:
        load_taskset("no_such_set")
    for name in ("easy_code", "toy_regex", "humaneval", "mbpp", "gsm8k", "math500"):
        assert name in str(info.value)
    with pytest.raises(ValueError, match="no_such_set"):
        load_taskset("no_such_set")
    with pytest.raises(ValueError, match="needs a path"):
        load_taskset("gsm8k")
    with pytest.raises(ValueError, match="limit"):
        load_taskset("easy_code", limit=-1)
    with pytest.raises(ValueError, match="already registered"):
        register_taskset("easy_code")(lambda: [])


def test_load_taskset_builtins() -> None:
    assert [p.problem_id for p in load_taskset("easy_code", limit=3)] == ["easy/add", "easy/subtract", "easy/multiply"]
    assert len(load_taskset("toy_regex")) == len(toy_regex_problems())
    assert len(load_taskset("humaneval", limit=10)) == 10
