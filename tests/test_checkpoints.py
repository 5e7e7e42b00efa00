"""Checkpoint retention (``mel.checkpoints``): which steps keep weights, pruning order, and what a pruned checkpoint
still tells."""
from __future__ import annotations

from pathlib import Path

import pytest

from mel import artifacts
from mel.checkpoints import CheckpointPruned, OPTIMIZER_FILE, is_pruned, kept_steps, prune, require_weights


def test_kept_steps() -> None:
    assert kept_steps([0], 2, 0) == {0}
    assert kept_steps(range(6), 2, 0) == {4, 5}
    assert kept_steps(range(10), 1, 4) == {3, 7, 9}  # 1-based steps 4 and 8, plus the newest
    assert kept_steps([2, 5, 8, 9], 2, 0) == {8, 9}  # only steps that wrote a checkpoint count (checkpoint_every=3)
    with pytest.raises(ValueError, match="at least 1"):
        kept_steps(range(4), 0, 0)


def _fake_run(tmp_path: Path, steps: int) -> str:
    run = str(tmp_path / "run")
    for step in range(steps):
        def build(d: Path) -> None:
            (d / "model.safetensors").write_bytes(b"w" * 100)
            (d / OPTIMIZER_FILE).write_bytes(b"o" * 200)
        artifacts.write_folder(f"{run}/step_{step:04d}/checkpoint", build, step=step)
    return run


def test_prune_keeps_the_newest_and_the_optimizer_only_in_the_newest(tmp_path) -> None:
    run = _fake_run(tmp_path, 5)
    changed = prune(run, 4, keep_last=2, keep_every=2)
    ck = [f"{run}/step_{s:04d}/checkpoint" for s in range(5)]
    assert [is_pruned(u) for u in ck] == [True, False, True, False, False]  # step 2 (1-based) kept by keep_every
    assert not Path(ck[0]).exists() and not Path(ck[2]).exists()
    assert (Path(ck[1]) / "model.safetensors").exists() and not (Path(ck[1]) / OPTIMIZER_FILE).exists()
    assert (Path(ck[3]) / "model.safetensors").exists() and not (Path(ck[3]) / OPTIMIZER_FILE).exists()
    assert (Path(ck[4]) / OPTIMIZER_FILE).exists()
    assert artifacts.read_manifest(ck[0])["step"] == 0  # the manifest stays, with what it said before
    assert set(changed) == {ck[0], ck[1], ck[2], ck[3]}
    assert prune(run, 4, keep_last=2, keep_every=2) == []  # idempotent
    with pytest.raises(CheckpointPruned, match="weights were pruned"):
        require_weights(ck[0])
    with pytest.raises(CheckpointPruned, match="optimizer state"):
        require_weights(ck[3], optimizer=True)
    require_weights(ck[3])
    require_weights(ck[4], optimizer=True)


def test_a_crash_between_marking_and_deleting_is_finished_by_the_next_prune(tmp_path) -> None:
    run = _fake_run(tmp_path, 3)
    uri = f"{run}/step_0000/checkpoint"
    info = artifacts.read_manifest(uri)
    artifacts.write_manifest(uri, step=info["step"], pruned=True)  # marked, files still there
    prune(run, 2, keep_last=1)
    assert not Path(uri).exists() and is_pruned(uri)


def test_nothing_is_pruned_before_the_newest_checkpoint_is_complete(tmp_path) -> None:
    run = _fake_run(tmp_path, 2)
    with pytest.raises(ValueError, match="not complete"):
        prune(run, 2, keep_last=1)
    assert not is_pruned(f"{run}/step_0000/checkpoint")


def test_resident_steps_count_for_nothing_and_the_newest_written_keeps_its_optimizer(tmp_path) -> None:
    """run.checkpoint_every = 3: steps 0, 1, 3, 4 kept their state in memory (a manifest marked resident, no files);
    the newest step is resident, so the newest written checkpoint (step 2), which a replay starts from, keeps both."""
    run = _fake_run(tmp_path, 6)
    for step in (0, 1, 3, 4):
        uri = f"{run}/step_{step:04d}/checkpoint"
        artifacts.remove(uri)
        artifacts.write_manifest(uri, step=step, resident=True)
    prune(run, 4, keep_last=1)
    ck = [f"{run}/step_{s:04d}/checkpoint" for s in range(6)]
    assert (Path(ck[2]) / OPTIMIZER_FILE).exists() and not is_pruned(ck[2])
    assert not any(is_pruned(ck[s]) for s in (0, 1, 3, 4))  # nothing to prune there
    prune(run, 5, keep_last=1)  # step 5 wrote one: step 2 goes
    assert is_pruned(ck[2]) and not Path(ck[2]).exists() and (Path(ck[5]) / OPTIMIZER_FILE).exists()
