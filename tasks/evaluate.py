"""Eval tasks: generate a cell's samples -> ``generations.parquet``; verify them -> ``results.parquet``,
``problems.parquet`` (see `mel.eval.cells`). A cell's folder is keyed by the checkpoint's content, the
benchmark and the sampling, so an unchanged triple is reused: its artifact's manifest says so, and the tasks' cache
(`tasks.common.ManifestCache`) is keyed by the same manifest."""
from __future__ import annotations

from prefect import task

from mel import artifacts
from mel.eval.cells import EvalCell, cell_done, generations_uri, problems_uri, run_eval_generate, run_eval_verify
from tasks.common import ManifestCache, stamp


def _generated(params: dict) -> tuple[str, bool]:
    uri = generations_uri(params["cell"], params["eval_dir"])
    return uri, artifacts.is_complete(uri)


def _verified(params: dict) -> tuple[str, bool]:
    return problems_uri(params["cell"], params["eval_dir"]), cell_done(params["cell"], params["eval_dir"])


@task(name="eval-generate", cache_policy=ManifestCache(done=_generated), persist_result=True)
def eval_generate(cell: EvalCell, eval_dir: str) -> str:
    reused = artifacts.is_complete(generations_uri(cell, eval_dir))
    uri = run_eval_generate(cell, eval_dir)
    stamp(uri, reused)
    return uri


@task(name="eval-verify", cache_policy=ManifestCache(done=_verified), persist_result=True)
def eval_verify(cell: EvalCell, eval_dir: str, generations_uri: str) -> str:
    reused = cell_done(cell, eval_dir)
    uri = run_eval_verify(cell, eval_dir, generations_uri)
    stamp(uri, reused)
    return uri
