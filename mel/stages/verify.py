"""Verify stage: score every rollout with the verifier of its problem's kind (code sandbox, math-verify, regex)
-> ``verdicts``."""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import pyarrow as pa

from mel import artifacts, schemas
from mel.config import Config
from mel.data import Problem
from mel.stages.common import parse_problems, verify_batch
from mel.stages.step import StageContext, StageStats, StepStats
from mel.verify import isolation_mode
from mel.verify.sandbox import describe_isolation


@dataclass(frozen=True)
class VerifyStats(StageStats):
    samples: int
    passed: int
    statuses: dict[str, int]  # verdict status -> count
    isolation: str  # the code sandbox's isolation mode ("-" when no code was run)
    seconds: float

    metric_columns = (pa.field("verify_s", pa.float64()),)

    def metrics(self, step: StepStats) -> dict:
        return {"verify_s": self.seconds}

    def summary(self) -> str:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(self.statuses.items()))
        sandbox = f", sandbox {describe_isolation(self.isolation)}" if self.isolation != "-" else ""
        return f"{self.passed}/{self.samples} passed ({statuses}){sandbox}"


def run_verify(cfg: Config, ctx: StageContext, rollouts: str) -> VerifyStats:
    t0 = time.perf_counter()
    rows_in = artifacts.read_table(rollouts, schemas.ROLLOUTS).to_pylist()
    problems = parse_problems([r["problem_json"] for r in rows_in])
    items = [(p, r["completion_text"]) for p, r in zip(problems, rows_in)]
    verdicts = ctx.fanout.map(functools.partial(verify_batch, cfg), items)  # in order, wherever each chunk ran
    rows = [
        {
            "step": ctx.step,
            "prompt_index": r["prompt_index"],
            "sample_index": r["sample_index"],
            "problem_id": r["problem_id"],
            "passed": v.passed,
            "status": v.status,
            "detail": v.detail[:2000],
            "reward": v.reward,
            "tests_passed": v.tests_passed,
            "tests_total": v.tests_total,
            "seconds": v.seconds,
        }
        for r, v in zip(rows_in, verdicts)
    ]
    statuses: dict[str, int] = {}
    for v in verdicts:
        statuses[v.status] = statuses.get(v.status, 0) + 1
    stats = VerifyStats(samples=len(rows), passed=sum(v.passed for v in verdicts), statuses=statuses,
                        isolation=_isolation(cfg, problems), seconds=time.perf_counter() - t0)
    artifacts.write_rows(ctx.outputs["verdicts"], rows, schemas.VERDICTS, **ctx.record(stats))
    return stats


def _isolation(cfg: Config, problems: list[Problem]) -> str:
    """The code sandbox's isolation mode, recorded with the verdicts (``-`` when no code was run)."""
    if not any(p.kind == "code" for p in problems):
        return "-"
    return isolation_mode(cfg.verify.isolation)
