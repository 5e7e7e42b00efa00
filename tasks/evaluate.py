"""Eval tasks: generate a cell's samples -> ``generations.parquet``; verify them -> ``results.parquet``,
``problems.parquet`` (see `mel.eval.cells`). A cell's folder is keyed by the checkpoint's content, the
benchmark and the sampling, so an unchanged triple is reused."""
from __future__ import annotations

from prefect import task

from mel.eval.cells import EvalCell, run_eval_generate, run_eval_verify
from tasks.common import STAGE_CACHE


@task(name="eval-generate", cache_policy=STAGE_CACHE, persist_result=True)
def eval_generate(cell: EvalCell, eval_dir: str) -> str:
    return run_eval_generate(cell, eval_dir)


@task(name="eval-verify", cache_policy=STAGE_CACHE, persist_result=True)
def eval_verify(cell: EvalCell, eval_dir: str, generations_uri: str) -> str:
    return run_eval_verify(cell, eval_dir, generations_uri)
