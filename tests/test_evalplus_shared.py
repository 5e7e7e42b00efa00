"""`mel verify code` and `mel eval` share one EvalPlus implementation (`mel.verify.evalplus`): on the same rows and
samples they give the same verdict per sample, compute each reference once between them (one disk cache), and leave
out the same inputs.

The rows are MBPP+'s Mbpp/2 (tuple arguments converted back, returned value compared as a set) and Mbpp/255 (five of
its inputs are unreturnable and left out: without that its canonical solution could never pass).
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mel import artifacts, schemas
from cli.main import main
from mel.verify import evalplus, sandbox

MBPP_PLUS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "mbpp_plus" / "MbppPlus-v0.2.0.jsonl"
TASKS = ("Mbpp/2", "Mbpp/255")


def fenced(code: str) -> str:
    return f"Here it is:\n```python\n{code}```\n"


def completions(rows: dict[str, dict]) -> list[tuple[str, str]]:
    """(task_id, completion) in task order: canonical, right but another container (the set oracle), wrong on plus
    inputs only, wrong everywhere."""
    two, colors = rows["Mbpp/2"], rows["Mbpp/255"]
    return [
        ("Mbpp/2", fenced(two["canonical_solution"])),
        ("Mbpp/2", fenced("def similar_elements(a, b):\n    return list(set(b) & set(a))\n")),
        ("Mbpp/2", fenced("def similar_elements(a, b):\n    a[0]\n    return tuple(set(a) & set(b))\n")),
        ("Mbpp/2", fenced("def similar_elements(a, b):\n    return (min(a),)\n")),
        ("Mbpp/255", fenced(colors["canonical_solution"])),
        ("Mbpp/255", fenced("def combinations_colors(l, n):\n    return []\n")),
    ]


@pytest.fixture
def rows() -> dict[str, dict]:
    if not MBPP_PLUS.exists():
        pytest.skip(f"{MBPP_PLUS} is not present on this machine")
    found = {}
    with open(MBPP_PLUS, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row["task_id"] in TASKS:
                found[row["task_id"]] = row
    return found


@pytest.fixture
def counted_references(monkeypatch, tmp_path) -> list[str]:
    """The entry points whose reference runs in the sandbox; the default EvalPlus cache is a fresh folder."""
    monkeypatch.setattr(evalplus, "DEFAULT_CACHE_DIR", str(tmp_path / "evalplus-cache"))
    calls: list[str] = []
    real = sandbox.call_outputs

    def counting(program, entry_point, inputs, **kwargs):
        calls.append(entry_point)
        return real(program, entry_point, inputs, **kwargs)

    monkeypatch.setattr(sandbox, "call_outputs", counting)
    return calls


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def verify_verdicts(tmp_path: Path, rows: dict[str, dict], samples: list[tuple[str, str]]) -> list[dict]:
    path = write_jsonl(tmp_path / "verify.jsonl", [{**rows[t], "completion": c} for t, c in samples])
    out = tmp_path / "verdicts.parquet"
    assert main(["verify", "code", path, "--out", str(out), "--timeout", "5"]) == 0
    return pq.read_table(out).to_pylist()


def eval_verdicts(tmp_path: Path, rows: dict[str, dict], samples: list[tuple[str, str]]) -> list[dict]:
    from mel.eval.plan import EvalRequest, plan_cells
    from mel.eval.cells import run_eval_generate, run_eval_verify

    bench = write_jsonl(tmp_path / "bench.jsonl", [rows[t] for t in TASKS])
    sample_file = write_jsonl(tmp_path / "samples.jsonl", [{"task_id": t, "completion": c} for t, c in samples])
    eval_dir, (cell,) = plan_cells(EvalRequest(target=sample_file, benchmarks=("mbpp_plus",), path=bench,
                                               out=str(tmp_path / "eval"), samples_file=sample_file))
    run_eval_verify(cell, eval_dir, run_eval_generate(cell, eval_dir))
    return artifacts.read_table(artifacts.join(cell.folder(eval_dir), "results.parquet"),
                                schemas.EVAL_RESULTS).to_pylist()


def test_verify_code_and_eval_agree_per_sample_and_share_the_reference_cache(tmp_path, rows, counted_references):
    samples = completions(rows)
    verified = verify_verdicts(tmp_path, rows, samples)
    assert sorted(counted_references) == ["combinations_colors", "similar_elements"]  # once per task, not per row
    evaluated = eval_verdicts(tmp_path, rows, samples)
    assert sorted(counted_references) == ["combinations_colors", "similar_elements"]  # eval read verify's cache

    assert [r["passed"] for r in verified] == [True, True, False, False, True, False]
    plus = [r for r in evaluated if r["column"] == "plus"]
    assert [(r["problem_id"], r["passed"]) for r in plus] == [(r["task_id"], r["passed"]) for r in verified]
    assert [r["status"] for r in plus] == [r["status"] for r in verified]
    base = [r["passed"] for r in evaluated if r["column"] == "base"]
    assert base == [True, True, True, False, True, False]  # the third is wrong on plus inputs only
    # the same tests on both sides: Mbpp/255 without its 5 unreturnable inputs
    skipped = len(evalplus.UNRETURNABLE_INPUTS["Mbpp/255"])
    total = len(rows["Mbpp/255"]["base_input"]) + len(rows["Mbpp/255"]["plus_input"])
    assert [r["tests_total"] for r in verified if r["task_id"] == "Mbpp/255"] == [total - skipped] * 2


def test_one_validator_names_the_same_bad_fields_on_both_sides(tmp_path, rows, capsys):
    from mel.data.loaders import DatasetError
    from mel.eval.evalplus import parse_evalplus

    good = rows["Mbpp/2"]
    bad = [{**good, "base_input": "[1]"}, {**good, "atol": -1}, {k: v for k, v in good.items() if k != "entry_point"},
           {**good, "plus_input": [[[float("nan")], [1]]]}]
    path = write_jsonl(tmp_path / "bad.jsonl", bad)
    expected = ["bad.jsonl line 1: field 'base_input' must be a non-empty list of argument lists",
                "bad.jsonl line 2: field 'atol' must be a number >= 0",
                "bad.jsonl line 3: field 'entry_point' is missing",
                "bad.jsonl line 4: field 'plus_input' has an input that cannot be used: ValueError: NaN has no "
                "Python literal"]
    with pytest.raises(DatasetError) as err:
        parse_evalplus(path, "mbpp")
    assert str(err.value).splitlines()[1:] == expected
    verify_rows = [{**row, "completion": "pass"} for row in bad]
    assert main(["verify", "code", write_jsonl(tmp_path / "bad.jsonl", verify_rows), "--out",
                 str(tmp_path / "o.parquet")]) == 1
    assert [line.removeprefix("mel verify: bad row: ") for line in capsys.readouterr().err.splitlines()
            if "bad row:" in line] == expected


def test_float_outputs_of_a_task_without_atol_compare_within_1e_6(tmp_path):
    from mel.data.loaders import _Errors

    raw = {"task_id": "T/1", "entry_point": "f", "canonical_solution": "def f(x):\n    return x / 3\n",
           "base_input": [[1]], "plus_input": {}}
    errors = _Errors(str(tmp_path / "t.jsonl"))
    exact, given = (evalplus.parse_row({**raw, "atol": atol}, 1, errors, benchmark=False) for atol in (0, 0.5))
    assert errors.messages == [] and exact.plus_inputs == () and exact.oracle == ""
    assert evalplus.io_tests(exact, evalplus.Expected(("0.3333333333333333",), floats=True)).atol == 1e-6
    assert evalplus.io_tests(exact, evalplus.Expected(("'a'",), floats=False)).atol == 0.0
    assert evalplus.io_tests(given, evalplus.Expected(("0.3333333333333333",), floats=True)).atol == 0.5
