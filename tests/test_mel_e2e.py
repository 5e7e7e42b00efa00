"""End-to-end MEL-Code and MEL runs on the tiny config through Prefect: the pair, extract and replay stages write
their typed artifacts, some meta-experiences are accepted, and the NLL term is non-zero exactly on the steps that
train on meta-experiences. Marked e2e (CI runs them); the 2-step MEL run is also marked slow (`make test-all`):
CI's MEL run is the 1-step one of the model-load test, which checks its in-context replay too."""
from __future__ import annotations

import io

import pyarrow.parquet as pq
import pytest

from mel import artifacts, schemas

from conftest import REPO

pytestmark = pytest.mark.e2e
TINY = str(REPO / "configs" / "tiny.yaml")
METHODS = REPO / "configs" / "methods"


def _train(method: str, run_dir, overrides=()) -> str:
    from flows.train import train
    from mel.progress import progress

    buf = io.StringIO()
    progress.stream = buf
    try:
        train(config_path=str(METHODS / f"{method}.yaml"), overrides=list(overrides), run_dir=str(run_dir), base=TINY)
    finally:
        progress.stream = None
    return buf.getvalue()


def _check_mel_run(run_dir, steps: int) -> list[dict]:
    accepted, shares = 0, []
    for step in range(steps):
        base = run_dir / f"step_{step:04d}"
        for name, schema in (("pairs", schemas.PAIRS), ("experiences", schemas.EXPERIENCES),
                             ("meta_experiences", schemas.META_EXPERIENCES)):
            uri = str(base / f"{name}.parquet")
            assert artifacts.is_complete(uri), uri
            assert pq.read_schema(uri).names == schema.names
        rows = pq.read_table(base / "meta_experiences.parquet").to_pylist()
        accepted += sum(r["accepted"] for r in rows)
        shares.append(sum(r["accepted"] for r in rows) / len(rows) if rows else 0.0)  # every candidate M, malformed too
        assert all(r["built_ok"] or r["reject_reason"] for r in rows)
        assert all(not r["selected"] or r["accepted"] for r in rows)
    assert accepted > 0
    metrics = pq.read_table(run_dir / "metrics.parquet").to_pylist()
    assert [m["retention"] for m in metrics] == pytest.approx(shares)  # MEL's retention, from the artifact's rows
    for m in metrics:
        assert (m["nll_loss"] > 0) == (m["num_experiences"] > 0), m
        assert (m["grad_norm_nll"] > 0) == (m["num_experiences"] > 0), m
        assert m["p_usable"] == pytest.approx(m["p_pair"] * m["p_accept"])
    assert any(m["num_experiences"] > 0 for m in metrics)
    return metrics


def test_mel_code_on_the_tiny_config(prefect_harness, tmp_path):
    run_dir = tmp_path / "mel_code"
    out = _train("mel_code", run_dir)
    metrics = _check_mel_run(run_dir, 2)
    assert all(m["nll_coef"] in (0.0, pytest.approx(0.004)) for m in metrics)
    assert all(m["num_accepted"] == m["num_built"] for m in metrics)  # re-execution is deterministic here
    assert "pair" in out and "replay" in out
    assert "all 12 stages reused" in _train("mel_code", run_dir)


@pytest.mark.slow
def test_mel_on_the_tiny_config(prefect_harness, tmp_path):
    run_dir = tmp_path / "mel"
    _train("mel", run_dir)
    metrics = _check_mel_run(run_dir, 2)
    rows = pq.read_table(run_dir / "step_0000" / "meta_experiences.parquet").to_pylist()
    assert all(r["replay"] == "in_context" for r in rows)
    assert all(r["replay_completion"] for r in rows if r["built_ok"])  # every well-formed M was replayed
    assert all(m["mel_gen_tokens"] > 0 for m in metrics if m["num_pairs"])


def test_no_pairs_means_no_nll_term(prefect_harness, tmp_path):
    """The tiny random model never passes an easy code task: no pairs, empty artifacts, an NLL term of exactly 0."""
    run_dir = tmp_path / "none"
    _train("mel_code", run_dir, ["data.taskset=easy_code", "run.steps=1", "data.prompts_per_step=2"])
    assert pq.read_table(run_dir / "step_0000" / "meta_experiences.parquet").num_rows == 0
    (m,) = pq.read_table(run_dir / "metrics.parquet").to_pylist()
    assert m["num_pairs"] == 0 and m["num_experiences"] == 0 and m["nll_loss"] == 0.0 and m["grad_norm_nll"] == 0.0


def test_one_model_load_per_mel_step(prefect_harness, tmp_path):
    """MEL's rollout, extract (the policy writes M) and replay (re-attempts with M in context) share one engine, and
    the update trains that engine's model: one model read from disk for the whole step."""
    from mel.engines.base import ENGINE_CACHE
    from mel.models import MODEL_LOADS

    engines, models = ENGINE_CACHE.loads, MODEL_LOADS.count
    _train("mel", tmp_path / "mel", ["run.steps=1"])
    assert ENGINE_CACHE.loads - engines == 1
    assert MODEL_LOADS.count - models == 1, "the update loaded the model again instead of training the engine's"
    rows = pq.read_table(tmp_path / "mel" / "step_0000" / "experiences.parquet").to_pylist()
    assert rows, "the step built no meta-experience: extract never asked for the engine"
    replayed = pq.read_table(tmp_path / "mel" / "step_0000" / "meta_experiences.parquet").to_pylist()
    assert replayed and all(r["replay"] == "in_context" for r in replayed)
    assert all(r["replay_completion"] for r in replayed if r["built_ok"])  # every well-formed M was replayed
