"""End-to-end runs of the tiny config through Prefect: artifacts and schemas, resume with everything reused, a
SIGKILL in the middle of a step, and a step through the code sandbox. Marked e2e (CI runs them); the whole-run
SIGKILL test is also marked slow (`make test-all`): CI's kill tests are the prune kill here and two cases of
`test_kill_each_stage`."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mel import artifacts, schemas
from mel.config import load_config
from mel.stages.step import metrics_schema
from mel.stages.table import STEP
from mel.verify.types import STATUSES

from conftest import REPO

pytestmark = pytest.mark.e2e
TINY = str(REPO / "configs" / "tiny.yaml")
LEARNING_COLUMNS = ["step", "reward_mean", "pass_rate", "mixed_group_rate", "loss", "pg_loss", "kl", "clip_frac",
                    "grad_norm", "entropy", "completion_tokens"]


def _train_in_process(run_dir: Path, overrides=()) -> str:
    from flows.train import train
    from mel.progress import progress

    buf = io.StringIO()
    progress.stream = buf
    try:
        train(config_path=TINY, overrides=list(overrides), run_dir=str(run_dir))
    finally:
        progress.stream = None
    return buf.getvalue()


def test_tiny_flow_writes_typed_artifacts_then_reuses_them(prefect_harness, tmp_path):
    run_dir = tmp_path / "tiny"
    first = _train_in_process(run_dir)
    assert "reused" not in first.split("step  reward")[0]
    for step in (0, 1):
        base = run_dir / f"step_{step:04d}"
        grpo_metrics = metrics_schema(s.stats for s in STEP.enabled(load_config(TINY)))  # the stages that ran
        for name, schema in (("rollouts", schemas.ROLLOUTS), ("verdicts", schemas.VERDICTS),
                             ("update", grpo_metrics)):
            uri = str(base / f"{name}.parquet")
            assert artifacts.is_complete(uri)
            assert pq.read_schema(uri).names == schema.names
        assert (base / "checkpoint" / "config.json").exists() and (base / "checkpoint" / "model.safetensors").exists()
        # the optimizer state stays only in the newest checkpoint (run.keep_checkpoints keeps both steps' weights)
        assert (base / "checkpoint" / "optimizer.pt").exists() == (step == 1)
    rollouts = pq.read_table(run_dir / "step_0000" / "rollouts.parquet").to_pylist()
    assert len(rollouts) == 8 * 8
    assert all(r["num_completion_tokens"] == len(r["completion_token_ids"]) == len(r["completion_logprobs"])
               for r in rollouts)
    metrics = pq.read_table(run_dir / "metrics.parquet").to_pylist()
    assert [m["step"] for m in metrics] == [0, 1]
    assert all(m["grad_norm"] > 0 and m["gen_tokens_per_s"] > 0 for m in metrics)
    assert metrics[1]["kl"] > 0  # the policy moved away from the reference after step 1

    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(run_dir / "step_0001" / "checkpoint")  # a plain HF folder

    second = _train_in_process(run_dir)
    assert "all 6 stages reused" in second
    assert pq.read_table(run_dir / "metrics.parquet").to_pylist() == metrics


def test_a_deleted_artifact_is_recomputed_despite_the_prefect_cache(prefect_harness, tmp_path):
    run_dir = tmp_path / "tiny"
    _train_in_process(run_dir, ["run.steps=1"])
    verdicts = str(run_dir / "step_0000" / "verdicts.parquet")
    before = pq.read_table(verdicts).drop_columns(["seconds"])  # wall time differs run to run
    artifacts.remove(verdicts)
    out = _train_in_process(run_dir, ["run.steps=1"])
    assert artifacts.is_complete(verdicts) and pq.read_table(verdicts).drop_columns(["seconds"]).equals(before)
    assert "reused 2 of 3 stages" in out


@pytest.mark.slow  # the CI budget (make test <= 20 min on 2 cores): make test-all runs it
def test_damaged_artifacts_are_recomputed_never_read(prefect_harness, tmp_path, capfd):
    run_dir = tmp_path / "tiny"
    _train_in_process(run_dir, ["run.steps=2"])
    metrics = pq.read_table(run_dir / "metrics.parquet").select(LEARNING_COLUMNS).to_pylist()
    rollouts = run_dir / "step_0001" / "rollouts.parquet"
    flipped = bytearray(rollouts.read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF  # same size, one byte changed
    rollouts.write_bytes(bytes(flipped))
    weights = run_dir / "step_0000" / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    artifacts._intact.clear()  # as in a new process
    capfd.readouterr()
    out = _train_in_process(run_dir, ["run.steps=2"])
    err = capfd.readouterr().err
    assert "rollouts.parquet is damaged (its sha256 differs" in err
    assert "checkpoint is damaged (model.safetensors" in err
    assert "[step 1/2] update   done" in out and "[step 2/2] rollout  done" in out, out
    assert pq.read_table(run_dir / "metrics.parquet").select(LEARNING_COLUMNS).to_pylist() == metrics


def test_easy_code_step_runs_through_the_code_sandbox(prefect_harness, tmp_path):
    run_dir = tmp_path / "code"
    _train_in_process(run_dir, ["data.taskset=easy_code", "run.steps=1", "data.prompts_per_step=2",
                                "rollout.group_size=2", "algorithm.kl_coef=0"])
    verdicts = pq.read_table(run_dir / "step_0000" / "verdicts.parquet").to_pylist()
    assert len(verdicts) == 4
    assert all(v["status"] in STATUSES and not v["passed"] for v in verdicts)  # a random model writes no code


def _cli(args, env, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


def _harness_env(tmp_path) -> dict[str, str]:
    """The environment of a ``mel`` subprocess reporting to the session's test server (no temporary server of its
    own to start, ~10 s a process; the ephemeral path is what the Ray ``--ray auto`` test's subprocess takes)."""
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": PREFECT_API_URL.value()}


@pytest.mark.slow
def test_sigkill_mid_step_then_rerun_matches_an_uninterrupted_run(prefect_harness, tmp_path):
    env = _harness_env(tmp_path)
    whole, killed = tmp_path / "whole", tmp_path / "killed"

    proc = _cli(["run", TINY, "--run-dir", str(whole)], env)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    rerun = _cli(["run", TINY, "--run-dir", str(whole)], env)
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0 and "all 6 stages reused" in out, out

    proc = _cli(["run", TINY, "--run-dir", str(killed)], env, start_new_session=True)
    marker = killed / "step_0001" / "rollouts.parquet.manifest.json"
    deadline = time.time() + 600
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert marker.exists(), "the run ended before it could be killed in step 2"
    assert not artifacts.is_complete(str(killed / "step_0001" / "update.parquet")), "killed too late"

    resumed = _cli(["run", TINY, "--run-dir", str(killed)], env)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert "reused" in out and "step 1 update" in out and "step 2 rollout" in out
    a = pq.read_table(whole / "metrics.parquet").select(LEARNING_COLUMNS).to_pylist()
    b = pq.read_table(killed / "metrics.parquet").select(LEARNING_COLUMNS).to_pylist()
    assert a == b


@pytest.mark.slow  # the CI budget (make test <= 20 min on 2 cores): make test-all runs it
def test_checkpoints_pruned_and_a_kill_right_after_a_prune_resumes_exactly(prefect_harness, tmp_path, capsys):
    from mel.checkpoints import OPTIMIZER_FILE, is_pruned
    from mel.eval.plan import run_checkpoints

    env = _harness_env(tmp_path)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    keep = ["--set", "run.steps=3", "--set", "run.keep_checkpoints=1"]
    proc = _cli(["run", TINY, "--run-dir", str(whole), *keep], env)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    ck = [whole / f"step_{s:04d}" / "checkpoint" for s in range(3)]
    assert [is_pruned(str(c)) for c in ck] == [True, True, False]
    assert not ck[0].exists() and (ck[2] / OPTIMIZER_FILE).exists() and (ck[2] / "model.safetensors").exists()
    found, _ = run_checkpoints(str(whole))
    assert [c.label for c in found] == ["base", "step_0002"]
    assert "2 checkpoints were pruned" in capsys.readouterr().err

    proc = _cli(["run", TINY, "--run-dir", str(killed), *keep], env, start_new_session=True)
    first = killed / "step_0000" / "checkpoint.manifest.json"
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        try:
            if json.loads(first.read_text()).get("pruned"):
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert is_pruned(str(first)[: -len(".manifest.json")]), "the run ended before its first prune"
    assert not artifacts.is_complete(str(killed / "step_0002" / "update.parquet")), "killed too late"
    resumed = _cli(["run", TINY, "--run-dir", str(killed), *keep], env)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    a = pq.read_table(whole / "metrics.parquet").select(LEARNING_COLUMNS).to_pylist()
    b = pq.read_table(killed / "metrics.parquet").select(LEARNING_COLUMNS).to_pylist()
    assert a == b
