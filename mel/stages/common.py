"""What the stages share: the result record, run-directory layout, seeds and problem selection."""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from mel import artifacts
from mel.config import Config
from mel.data import Problem, load_taskset


@dataclass(frozen=True)
class StageResult:
    stage: str
    step: int
    uri: str  # the stage's main output artifact
    reused: bool = False  # the artifact was already complete; nothing was recomputed
    seconds: float = 0.0
    summary: str = ""  # one line for the progress output
    extra: dict = field(default_factory=dict)  # other output URIs (e.g. the update's checkpoint)


def step_dir(run_dir: str, step: int) -> str:
    return artifacts.join(run_dir, f"step_{step:04d}")


def derive_seed(base: int, step: int, purpose: str) -> int:
    """A stable 31-bit seed for (run seed, step, purpose), independent of the run directory."""
    digest = hashlib.sha256(f"{base}:{step}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def problems_for_step(cfg: Config, step: int) -> list[Problem]:
    """The ``prompts_per_step`` problems of ``step``: the task set shuffled once by ``data.shuffle_seed``, cut to
    ``data.limit``, and walked in order, cycling."""
    problems = load_taskset(cfg.data.taskset, cfg.data.path)
    order = list(range(len(problems)))
    random.Random(cfg.data.shuffle_seed).shuffle(order)
    if cfg.data.limit is not None:
        order = order[: cfg.data.limit]
    if not order:
        raise ValueError(f"task set {cfg.data.taskset!r} has no problems")
    start = step * cfg.data.prompts_per_step
    return [problems[order[(start + i) % len(order)]] for i in range(cfg.data.prompts_per_step)]


def parse_problems(problem_jsons: list[str]) -> list[Problem]:
    """The ``Problem`` of each ``problem_json`` cell, each distinct text parsed once (a group's G rows share one)."""
    parsed: dict[str, Problem] = {}
    for text in problem_jsons:
        if text not in parsed:
            parsed[text] = Problem.from_json(text)
    return [parsed[text] for text in problem_jsons]


def step_verifier(cfg: Config):
    """``verify(problems, completions) -> verdicts`` with the run's verify settings (sandbox, limits, workers)."""
    from mel.verify import verify_problems

    def verify(problems, completions):
        return verify_problems(problems, completions, timeout_s=cfg.verify.timeout_s, memory_mb=cfg.verify.memory_mb,
                               workers=cfg.verify.workers, isolation=cfg.verify.isolation)

    return verify


def policy_engine(cfg: Config, checkpoint_uri: str):
    """The generation engine of ``rollout.engine`` on the checkpoint ``checkpoint_uri``, built on first use."""
    from mel.engines.base import LazyEngine

    def make():
        from mel.checkpoints import require_weights
        from mel.engines import make_engine

        require_weights(checkpoint_uri)
        return make_engine(cfg.rollout.engine, artifacts.fetch_folder(checkpoint_uri), dtype=cfg.model.dtype,
                           use_chat_template=cfg.rollout.use_chat_template, system_prompt=cfg.rollout.system_prompt,
                           batch_size=cfg.rollout.batch_size)

    return LazyEngine(make)


def set_threads(cfg: Config) -> None:
    if cfg.run.torch_threads > 0:
        import torch

        torch.set_num_threads(cfg.run.torch_threads)


STEP_ARTIFACTS = ("rollouts.parquet", "verdicts.parquet", "update.parquet", "checkpoint")
MEL_STEP_ARTIFACTS = ("pairs.parquet", "experiences.parquet", "meta_experiences.parquet")
REVISE_STEP_ARTIFACTS = ("revised_pairs.parquet", "revisions.parquet")


def completed_run_metrics(run_dir: str, config_hash: str, steps: int) -> list[dict] | None:
    """The run's per-step metrics if every stage of all ``steps`` steps is complete under ``run_dir`` for this
    config; None if anything is missing (then the flow has work to do)."""
    from mel import schemas

    config_uri = artifacts.join(run_dir, "config.yaml")
    if not artifacts.is_complete(config_uri) or artifacts.read_manifest(config_uri).get("config_hash") != config_hash:
        return None
    from mel.config import load_config

    cfg = load_config(config_uri)
    names = STEP_ARTIFACTS + (MEL_STEP_ARTIFACTS if cfg.mel.enabled else ()) + (
        REVISE_STEP_ARTIFACTS if cfg.revise.mode != "none" else ())
    for step in range(steps):
        base = step_dir(run_dir, step)
        for name in names:
            if not artifacts.is_complete(artifacts.join(base, name)):
                return None
    metrics_uri = artifacts.join(run_dir, "metrics.parquet")
    if not artifacts.is_complete(metrics_uri) or artifacts.read_manifest(metrics_uri).get("steps") != steps:
        return None
    return artifacts.read_table(metrics_uri, schemas.METRICS).to_pylist()
