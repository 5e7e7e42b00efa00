"""The stages of one RL step, one module each, as plain functions over artifact URIs (no orchestration here):

    rollout.run_rollout   (checkpoint, problems)    -> step_NNNN/rollouts.parquet
    verify.run_verify     (rollouts)                -> step_NNNN/verdicts.parquet
    update.run_update     (checkpoint, rollouts, verdicts) -> step_NNNN/checkpoint/ + step_NNNN/update.parquet

Each returns a ``StageResult``; if its output artifact is already complete it returns at once with ``reused=True``.
The Prefect tasks in ``tasks/`` are thin wrappers over these.
"""
from mel.stages.common import StageResult, step_dir

__all__ = ["StageResult", "step_dir"]
