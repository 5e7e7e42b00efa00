"""Rollout stage: sample G completions for each of the step's prompts with the current policy."""
from __future__ import annotations

import time

from mel import artifacts, schemas
from mel.config import Config
from mel.stages.common import StageResult, derive_seed, policy_engine, problems_for_step, set_threads, step_dir


def run_rollout(cfg: Config, run_dir: str, step: int, checkpoint_uri: str) -> StageResult:
    out = artifacts.join(step_dir(run_dir, step), "rollouts.parquet")
    if artifacts.is_complete(out):
        return StageResult("rollout", step, out, reused=True, summary=_summary(artifacts.read_manifest(out)))
    set_threads(cfg)
    t0 = time.perf_counter()
    problems = problems_for_step(cfg, step)
    engine = policy_engine(cfg, checkpoint_uri).get()
    t_gen = time.perf_counter()
    results = engine.generate(
        [p.prompt for p in problems],
        n=cfg.rollout.group_size,
        temperature=cfg.rollout.temperature,
        max_tokens=cfg.rollout.max_new_tokens,
        seed=derive_seed(cfg.run.seed, step, "rollout"),
        top_p=cfg.rollout.top_p,
    )
    gen_s = time.perf_counter() - t_gen
    rows = []
    for prompt_index, (problem, result) in enumerate(zip(problems, results)):
        problem_json = problem.to_json()
        for sample_index, sample in enumerate(result.samples):
            rows.append({
                "step": step,
                "prompt_index": prompt_index,
                "sample_index": sample_index,
                "problem_id": problem.problem_id,
                "problem_json": problem_json,
                "prompt_text": problem.prompt,
                "prompt_token_ids": result.prompt_token_ids,
                "completion_text": sample.text,
                "completion_token_ids": sample.token_ids,
                "completion_logprobs": sample.logprobs,
                "finish_reason": sample.finish_reason,
                "num_completion_tokens": len(sample.token_ids),
            })
    tokens = sum(r["num_completion_tokens"] for r in rows)
    seconds = time.perf_counter() - t0
    info = {"samples": len(rows), "completion_tokens": tokens, "seconds": seconds,
            "gen_tokens_per_s": tokens / gen_s if gen_s > 0 else 0.0, "checkpoint": checkpoint_uri}
    artifacts.write_rows(out, rows, schemas.ROLLOUTS, **info)
    return StageResult("rollout", step, out, seconds=seconds, summary=_summary(info))


def _summary(info: dict) -> str:
    return (f"{info['samples']} samples, {info['completion_tokens']} tokens, "
            f"{info['gen_tokens_per_s']:.0f} tok/s")
