"""Rollout stage: sample G completions for each of the step's prompts with the current policy -> ``rollouts``."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from mel import artifacts, schemas
from mel.config import Config
from mel.stages.common import derive_seed, problems_for_step, set_threads
from mel.stages.policy import policy_engine
from mel.stages.step import StageContext, StageStats, StepStats


@dataclass(frozen=True)
class RolloutStats(StageStats):
    samples: int
    completion_tokens: int  # generated this step
    gen_tokens_per_s: float  # generation throughput (generation time only)
    seconds: float

    metric_columns = (
        pa.field("num_samples", pa.int32()),
        pa.field("completion_tokens", pa.int64()),  # tokens generated this step
        pa.field("mean_completion_tokens", pa.float64()),
        pa.field("gen_tokens_per_s", pa.float64()),  # generation throughput
        pa.field("rollout_s", pa.float64()),
    )

    def summary(self) -> str:
        return f"{self.samples} samples, {self.completion_tokens} tokens, {self.gen_tokens_per_s:.0f} tok/s"

    def metrics(self, step: StepStats) -> dict:
        return {"num_samples": self.samples, "completion_tokens": self.completion_tokens,
                "mean_completion_tokens": self.completion_tokens / self.samples if self.samples else float("nan"),
                "gen_tokens_per_s": self.gen_tokens_per_s, "rollout_s": self.seconds}


def run_rollout(cfg: Config, ctx: StageContext, checkpoint: str) -> RolloutStats:
    set_threads(cfg)
    t0 = time.perf_counter()
    problems = problems_for_step(cfg, ctx.step)
    engine = policy_engine(cfg, checkpoint).get()
    t_gen = time.perf_counter()
    results = engine.generate(
        [p.prompt for p in problems],
        n=cfg.rollout.group_size,
        temperature=cfg.rollout.temperature,
        max_tokens=cfg.rollout.max_new_tokens,
        seed=derive_seed(cfg.run.seed, ctx.step, "rollout"),
        top_p=cfg.rollout.top_p,
    )
    gen_s = time.perf_counter() - t_gen
    rows: list[dict[str, Any]] = []
    for prompt_index, (problem, result) in enumerate(zip(problems, results)):
        problem_json = problem.to_json()
        for sample_index, sample in enumerate(result.samples):
            rows.append({
                "step": ctx.step,
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
    stats = RolloutStats(samples=len(rows), completion_tokens=tokens,
                         gen_tokens_per_s=tokens / gen_s if gen_s > 0 else 0.0, seconds=time.perf_counter() - t0)
    artifacts.write_rows(ctx.outputs["rollouts"], rows, schemas.ROLLOUTS, **ctx.record(stats), checkpoint=checkpoint)
    return stats
