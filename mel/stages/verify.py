"""Verify stage: score every rollout with the verifier of its problem's kind (code sandbox, math-verify, regex)."""
from __future__ import annotations

import time

from mel import artifacts, schemas
from mel.config import Config
from mel.data import Problem
from mel.stages.common import StageResult, parse_problems, step_dir, step_verifier
from mel.verify import isolation_mode
from mel.verify.sandbox import describe_isolation


def run_verify(cfg: Config, run_dir: str, step: int, rollouts_uri: str) -> StageResult:
    out = artifacts.join(step_dir(run_dir, step), "verdicts.parquet")
    if artifacts.is_complete(out):
        return StageResult("verify", step, out, reused=True, summary=_summary(artifacts.read_manifest(out)))
    t0 = time.perf_counter()
    rollouts = artifacts.read_table(rollouts_uri, schemas.ROLLOUTS).to_pylist()
    problems = parse_problems([r["problem_json"] for r in rollouts])
    verdicts = step_verifier(cfg)(problems, [r["completion_text"] for r in rollouts])
    rows = [
        {
            "step": step,
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
        for r, v in zip(rollouts, verdicts)
    ]
    seconds = time.perf_counter() - t0
    statuses: dict[str, int] = {}
    for v in verdicts:
        statuses[v.status] = statuses.get(v.status, 0) + 1
    info = {"samples": len(rows), "passed": sum(v.passed for v in verdicts), "statuses": statuses,
            "seconds": seconds, "isolation": _isolation(cfg, problems)}
    artifacts.write_rows(out, rows, schemas.VERDICTS, **info)
    return StageResult("verify", step, out, seconds=seconds, summary=_summary(info))


def _isolation(cfg: Config, problems: list[Problem]) -> str:
    """The code sandbox's isolation mode, recorded with the verdicts (``-`` when no code was run)."""
    if not any(p.kind == "code" for p in problems):
        return "-"
    return isolation_mode(cfg.verify.isolation)


def _summary(info: dict) -> str:
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(info["statuses"].items()))
    sandbox = f", sandbox {describe_isolation(info['isolation'])}" if info.get("isolation", "-") != "-" else ""
    return f"{info['passed']}/{info['samples']} passed ({statuses}){sandbox}"
