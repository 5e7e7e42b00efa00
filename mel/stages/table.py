"""The stages of one RL step, in order, declared once: the paper's stage list
rollout -> verify -> [pair -> (revise) -> extract -> replay] -> update.

The bracketed stages run when meta-experience learning is on (``mel.builder`` is not ``none``): MEL, MEL-Code,
Self-Critique and their ablations; revise runs for R-MEL and MEL+Extra (``revise.mode``). Each entry names its
function (one module per stage, in ``mel.stages``), the artifact roles it reads and the files it writes under
``step_NNNN/`` (role -> name; the first is its record, whose manifest holds its stats), when it runs, what it needs
and its stats record (which declares the stage's metrics columns). The flow, the resume check, the CLI's listing, the
progress lines and the metrics row come from here (see `mel.stages.step`); adding a stage is one entry below and one
module.

``STEP_TABLES`` names the tables a run can use (``"mel"``, this one; tests register others).
"""
from __future__ import annotations

from mel.config import Config
from mel.registry import Registry
from mel.stages import extract, pair, replay, revise, rollout, update, verify
from mel.stages.step import Resources, Stage, StepTable


def mel_enabled(cfg: Config) -> bool:
    return cfg.mel.enabled


def revise_enabled(cfg: Config) -> bool:
    return cfg.mel.enabled and cfg.revise.mode != "none"


POLICY = Resources(gpu=True)  # generates with, or trains, the policy
CPU = Resources()

STEP = StepTable(
    Stage("rollout", rollout.run_rollout, rollout.RolloutStats, inputs=("checkpoint",),
          outputs={"rollouts": "rollouts.parquet"}, resources=POLICY),
    Stage("verify", verify.run_verify, verify.VerifyStats, inputs=("rollouts",),
          outputs={"verdicts": "verdicts.parquet"}, resources=CPU),  # starts its own verify.workers processes
    Stage("pair", pair.run_pair, pair.PairStats, inputs=("rollouts", "verdicts"),
          outputs={"pairs": "pairs.parquet"}, enabled=mel_enabled, resources=CPU),
    Stage("revise", revise.run_revise, revise.ReviseStats, inputs=("checkpoint", "rollouts", "verdicts", "pairs"),
          outputs={"pairs": "revised_pairs.parquet", "revisions": "revisions.parquet"}, enabled=revise_enabled,
          resources=POLICY, report=revise.report),
    Stage("extract", extract.run_extract, extract.ExtractStats, inputs=("checkpoint", "pairs"),
          outputs={"experiences": "experiences.parquet"}, enabled=mel_enabled, resources=POLICY),
    Stage("replay", replay.run_replay, replay.ReplayStats, inputs=("checkpoint", "experiences"),
          outputs={"meta_experiences": "meta_experiences.parquet"}, enabled=mel_enabled, resources=POLICY,
          report=replay.report),
    Stage("update", update.run_update, update.UpdateStats, inputs=("checkpoint", "rollouts", "verdicts"),
          optional=("meta_experiences",), outputs={"metrics": "update.parquet", "checkpoint": "checkpoint"},
          resources=POLICY),
)

METRICS = STEP.metrics  # metrics.parquet's columns for this table: step, then each stage's declared columns in order

STEP_TABLES: Registry[StepTable] = Registry("step table")
STEP_TABLES.register("mel")(STEP)


def step_table(name: str) -> StepTable:
    """The table registered as ``name``. (Flows call this rather than naming the registry: a flow's function is
    shipped by value to Ray workers with the objects it names, and the registry holds tables tests define.)"""
    return STEP_TABLES.get(name)
