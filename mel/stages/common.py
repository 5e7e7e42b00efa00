"""What the stage functions share: seeds, problem selection, the step's verifier. (What a stage is, and the
run-directory layout ``step_dir``: `mel.stages.step`; the policy's engine and trainer state: `mel.stages.policy`.)"""
from __future__ import annotations

import hashlib
import random

from mel.config import Config
from mel.data import Problem, load_taskset
from mel.stages.step import step_dir

__all__ = ["derive_seed", "problems_for_step", "parse_problems", "step_verifier", "verify_batch", "set_threads",
           "step_dir"]


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


def verify_batch(cfg: Config, items: list[tuple[Problem, str]]) -> list:
    """The verdicts of ``(problem, completion)`` items, in order, with the run's verify settings (a picklable unit
    of work: the verify stage's fanout may run it on another machine)."""
    if not items:
        return []
    problems, completions = zip(*items)
    return step_verifier(cfg)(list(problems), list(completions))


def set_threads(cfg: Config) -> None:
    """``run.torch_threads`` for this process's torch (0: torch's default), set only when it differs."""
    if cfg.run.torch_threads > 0:
        import torch

        if torch.get_num_threads() != cfg.run.torch_threads:
            torch.set_num_threads(cfg.run.torch_threads)
