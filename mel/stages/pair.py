"""Pair stage (MEL): per prompt, contrastive (y+, y-) pairs from the step's verdicts -> ``pairs``.

Without contrast (``mel.contrastive: false``) the rows are failing rollouts alone (``plus_sample_index = -1``).
Its stats record p_pair (share of prompts with both Y+ and Y-) and the pair count.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass

from mel import artifacts, schemas
from mel.config import Config
from mel.experience import draw_pairs, group_outcomes, p_pair
from mel.stages.common import derive_seed
from mel.stages.step import StageContext, StageStats


@dataclass(frozen=True)
class PairStats(StageStats):
    pairs: int  # pairs (or failing rollouts, without contrast)
    prompts: int
    p_pair: float  # share of prompts with both Y+ and Y-
    contrastive: bool
    seconds: float

    def summary(self) -> str:
        kind = "pairs" if self.contrastive else "failing rollouts"
        return f"{self.pairs} {kind} from {self.prompts} prompts, p_pair {self.p_pair:.2f}"


def run_pair(cfg: Config, ctx: StageContext, rollouts: str, verdicts: str) -> PairStats:
    step = ctx.step
    t0 = time.perf_counter()
    rollout_rows = artifacts.read_table(rollouts, schemas.ROLLOUTS).to_pylist()
    verdict_rows = artifacts.read_table(verdicts, schemas.VERDICTS).to_pylist()
    key = {(r["prompt_index"], r["sample_index"]): r for r in rollout_rows}
    if set(key) != {(v["prompt_index"], v["sample_index"]) for v in verdict_rows}:
        raise ValueError(f"{verdicts} does not line up with {rollouts} (prompt_index/sample_index differ)")
    verdict = {(v["prompt_index"], v["sample_index"]): v for v in verdict_rows}
    groups = group_outcomes([v["prompt_index"] for v in verdict_rows], [v["passed"] for v in verdict_rows])
    samples_of = {g: sorted(s for (p, s) in verdict if p == g) for g in groups}
    rng = random.Random(derive_seed(cfg.run.seed, step, "pairs"))
    rows = []
    for g in sorted(groups):
        idx = samples_of[g]
        for pair in draw_pairs([verdict[(g, s)]["passed"] for s in idx], g, cfg.mel.pairs_per_prompt, rng,
                               contrastive=cfg.mel.contrastive):
            minus = key[(g, idx[pair.minus])]
            minus_v = verdict[(g, idx[pair.minus])]
            plus = key[(g, idx[pair.plus])] if pair.plus is not None else None
            rows.append({
                "step": step, "prompt_index": g, "pair_index": pair.pair_index, "problem_id": minus["problem_id"],
                "problem_json": minus["problem_json"], "origin": "natural",
                "plus_sample_index": plus["sample_index"] if plus else -1,
                "minus_sample_index": minus["sample_index"],
                "y_plus": plus["completion_text"] if plus else None, "y_minus": minus["completion_text"],
                "minus_status": minus_v["status"], "minus_detail": minus_v["detail"],
            })
    stats = PairStats(pairs=len(rows), prompts=len(groups), p_pair=p_pair(groups), contrastive=cfg.mel.contrastive,
                      seconds=time.perf_counter() - t0)
    artifacts.write_rows(ctx.outputs["pairs"], rows, schemas.PAIRS, **ctx.record(stats))
    return stats
