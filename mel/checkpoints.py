"""Checkpoint retention: which step checkpoints keep their weights, and pruning the others.

Policy (``run.keep_checkpoints = N``, ``run.keep_every = k``): once step s's checkpoint is complete, the N newest
written checkpoints keep their weights (steps that kept their state in memory, ``run.checkpoint_every``, wrote none
and count for nothing here), and so does every k-th step's (1-based steps k, 2k, ...: the points of an
evaluation curve); the optimizer state (AdamW's two moments, twice the weights' size) stays only in the newest written
one, the only one a later step resumes (or replays resident steps) from. For SmolLM2-135M in fp32 a step checkpoint
is 0.54 GB of weights plus 1.08 GB of optimizer state, so the default N = 2 holds about 2.2 GB however long the run.

A pruned checkpoint keeps its manifest, marked ``pruned`` (or ``optimizer_dropped``), so the run stays complete for
the resume check and ``mel eval RUN`` can say which steps were pruned. The manifest is marked first and the files
deleted after, so a crash in between leaves files that the next prune removes; pruning is idempotent and only ever
touches checkpoints older than a complete newer one.

``mel.artifacts`` (and with it pyarrow) is imported by the functions that use it, so that the trainer, which only
names ``OPTIMIZER_FILE``, runs where the artifact store is not installed (``benchmarks/gpu_check.py`` on a bare GPU
machine).
"""
from __future__ import annotations

from typing import Iterable

__all__ = ["kept_steps", "prune", "is_pruned", "require_weights", "CheckpointPruned", "ReplayMismatch",
           "OPTIMIZER_FILE"]

OPTIMIZER_FILE = "optimizer.pt"  # the optimizer state inside a checkpoint folder (written by mel.update)


class CheckpointPruned(FileNotFoundError):
    """A stage asked for weights or optimizer state that the retention policy removed."""


class ReplayMismatch(RuntimeError):
    """A step that kept its trained state in memory (``run.checkpoint_every``) cannot be rebuilt as it was: its
    update, replayed from the cached artifacts, gives another state than the one recorded, or those artifacts are
    gone (`mel.stages.policy`)."""


def kept_steps(written: Iterable[int], keep_last: int, keep_every: int) -> set[int]:
    """The 0-based steps among ``written`` (the steps that wrote a checkpoint, in order) that keep their weights."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be at least 1, not {keep_last}")
    written = sorted(written)
    kept = set(written[-keep_last:])
    if keep_every > 0:
        kept |= {s for s in written if (s + 1) % keep_every == 0}
    return kept


def _checkpoint(run_dir: str, step: int) -> str:
    from mel import artifacts

    return artifacts.join(artifacts.join(run_dir, f"step_{step:04d}"), "checkpoint")


def _mark(uri: str, **flags: bool) -> None:
    from mel import artifacts

    info = {k: v for k, v in artifacts.read_manifest(uri).items() if k not in ("uri", "written_at")}
    artifacts.write_manifest(uri, **{**info, **flags})


def _remove(uri: str) -> None:
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def prune(run_dir: str, newest: int, keep_last: int, keep_every: int = 0) -> list[str]:
    """Apply the policy after step ``newest``'s checkpoint is complete; returns what it pruned or thinned (URIs)."""
    from mel import artifacts

    if not artifacts.is_complete(_checkpoint(run_dir, newest)):
        raise ValueError(f"step {newest}'s checkpoint is not complete: nothing may be pruned before it is")
    written = {}  # step -> manifest, for the steps that wrote their checkpoint (resident ones have no files)
    for step in range(newest + 1):
        uri = _checkpoint(run_dir, step)
        if artifacts.is_complete(uri) and not (info := artifacts.read_manifest(uri)).get("resident"):
            written[step] = info
    kept = kept_steps(written, keep_last, keep_every)
    changed = []
    for step, info in written.items():
        if step == max(written):  # the newest written checkpoint: what a resume (or a replay) starts from
            continue
        uri = _checkpoint(run_dir, step)
        if step not in kept:
            if not info.get("pruned"):
                _mark(uri, pruned=True)
                changed.append(uri)
            _remove(uri)
        else:
            if not info.get("optimizer_dropped"):
                _mark(uri, optimizer_dropped=True)
                changed.append(uri)
            _remove(artifacts.join(uri, OPTIMIZER_FILE))
    return changed


def is_pruned(uri: str) -> bool:
    """True for a step checkpoint whose weights the retention policy removed."""
    from mel import artifacts

    return artifacts.is_complete(uri) and bool(artifacts.read_manifest(uri).get("pruned"))


def require_weights(uri: str, *, optimizer: bool = False) -> None:
    """Raise `CheckpointPruned` (saying which policy did it) if ``uri``'s weights (or, with ``optimizer``, its
    optimizer state) were pruned; a model folder without a manifest (the base model) always passes."""
    from mel import artifacts

    if not artifacts.is_complete(uri):
        return
    info = artifacts.read_manifest(uri)
    if info.get("pruned") or (optimizer and info.get("optimizer_dropped")):
        what = "weights" if info.get("pruned") else "optimizer state"
        raise CheckpointPruned(
            f"{uri}: its {what} were pruned by the run's retention policy (run.keep_checkpoints, run.keep_every; "
            "only the newest checkpoint keeps its optimizer state). Rerun the steps after it from a fresh run "
            "directory, or keep more checkpoints.")
