"""``run.checkpoint_every``: the trained state stays in memory between written checkpoints, and a resume rebuilds it
by replaying updates from the cached artifacts (`mel.stages.policy`).

GRPO on the tiny config, 5 steps, k = 3: steps 3 and 5 write checkpoints, steps 1, 2 and 4 keep their state in
memory. The uninterrupted run is the reference; another run is SIGKILLed inside step 5's rollout (mid-generation)
and run again: step 4's stages are all reused (nothing generated again), step 4's update is replayed on step 3's
checkpoint and checked against its recorded fingerprint, and the run ends with the reference's metrics and final
weights, bit for bit. Then a cached artifact is changed (step 4's verdicts, rewritten with a complete manifest, as a
rerun of verification whose verdicts came out differently would): the replay no longer gives the recorded state, and
the run stops with an error naming step 4 instead of training on. Marked e2e; CI runs it.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from mel import artifacts

from conftest import REPO

pytestmark = pytest.mark.e2e
TINY = str(REPO / "configs" / "tiny.yaml")
OVERRIDES = ["run.steps=5", "run.checkpoint_every=3", "data.prompts_per_step=4", "rollout.group_size=4"]
TIMING = re.compile(r"^seconds$|_s$|_per_s$")


def _args(run_dir) -> list[str]:
    return ["run", TINY, *(a for o in OVERRIDES for a in ("--set", o)), "--run-dir", str(run_dir)]


def _mel_run(run_dir) -> tuple[int, str]:
    from cli.main import main
    from mel.progress import progress

    buf, environ = io.StringIO(), dict(os.environ)
    progress.stream = buf
    try:
        code = main(_args(run_dir))
    finally:
        progress.stream = None
        os.environ.clear()
        os.environ.update(environ)
    return code, buf.getvalue()


def _weights(run_dir, step: int) -> str:
    path = run_dir / f"step_{step:04d}" / "checkpoint" / "model.safetensors"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _metrics(run_dir) -> list[dict]:
    table = pq.read_table(run_dir / "metrics.parquet")
    return table.drop_columns([c for c in table.column_names if TIMING.search(c)]).to_pylist()


@pytest.fixture(scope="module")
def reference(prefect_harness, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    code, out = _mel_run(run_dir)
    assert code == 0, out
    return run_dir


def test_resident_steps_write_a_manifest_with_a_fingerprint_and_no_files(reference):
    from mel.stages.policy import is_resident

    resident = [is_resident(str(reference / f"step_{s:04d}" / "checkpoint")) for s in range(5)]
    assert resident == [True, True, False, True, False]  # k = 3: steps 3 and 5 (the last) write
    assert not (reference / "step_0000" / "checkpoint").exists()
    info = artifacts.read_manifest(str(reference / "step_0003" / "checkpoint"))
    assert info["parent"] == "step_0002/checkpoint"  # relative: a copied run directory resolves in its own
    assert info["update_inputs"] == {"rollouts": "step_0003/rollouts.parquet", "verdicts": "step_0003/verdicts.parquet",
                                     "meta_experiences": None}
    assert re.fullmatch(r"[0-9a-f]{64}", info["fingerprint"]["weights"])
    assert re.fullmatch(r"[0-9a-f]{64}", info["fingerprint"]["optimizer"])


def test_killed_inside_step_5_resumes_by_replay_and_ends_bit_identical(reference, prefect_harness, tmp_path):
    from prefect.settings import PREFECT_API_URL

    run_dir = tmp_path / "run"
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONUNBUFFERED": "1",
           "PREFECT_HOME": str(tmp_path / "prefect-home")}
    launcher = [sys.executable, str(REPO / "tests" / "_kill_launcher.py"), "kill", "rollout@4", "3", "--"]
    killed = subprocess.run([*launcher, *_args(run_dir)], cwd=REPO, env=env, text=True, capture_output=True,
                            timeout=600, start_new_session=True)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert not artifacts.is_complete(str(run_dir / "step_0004" / "rollouts.parquet"))
    changed = tmp_path / "changed"
    shutil.copytree(run_dir, changed)

    code, out = _mel_run(run_dir)
    assert code == 0, out
    step4 = dict(re.findall(r"^\[step 4/5\] (\w+) +(reused|done) ", out, re.M))
    assert step4 == {"rollout": "reused", "verify": "reused", "update": "reused"}, out
    assert re.search(r"^\[step 5/5\] rollout +done ", out, re.M), out
    replays = re.findall(r"\[step (\d+)\] replayed the update .*: identical to the recorded state", out)
    assert replays == ["4"], out  # only step 4's state was lost; step 3 had its checkpoint
    assert _weights(run_dir, 4) == _weights(reference, 4)
    assert _metrics(run_dir) == _metrics(reference)

    # the same killed run, but step 4's state as recorded is not what its update gives (other hardware, a kernel
    # that is not deterministic): the replay from the cached artifacts says so and stops. (A cached input that
    # changed since is no such case: the stages that read it run again, `Stage.complete`, tests/test_stage_table.py.)
    checkpoint = str(changed / "step_0003" / "checkpoint")
    info = artifacts.read_manifest(checkpoint)
    info["fingerprint"]["weights"] = "0" * 64
    artifacts.write_manifest(checkpoint, **{k: v for k, v in info.items() if k != "uri"})
    rerun = subprocess.run([sys.executable, "-m", "cli.main", *_args(changed)], cwd=REPO, env=env, text=True,
                           capture_output=True, timeout=600)  # a process of its own: what the user's terminal shows
    assert rerun.returncode == 1, rerun.stdout + rerun.stderr
    assert re.search(r"^mel: step 4: its update, replayed from the cached artifacts .* gives other weights than the "
                     r"run recorded", rerun.stderr, re.M), rerun.stderr
    assert "Traceback" not in rerun.stderr, rerun.stderr
    assert not artifacts.is_complete(str(changed / "step_0004" / "rollouts.parquet"))
