"""Pair stage (MEL): per prompt, contrastive (y+, y-) pairs from the step's verdicts -> ``step_NNNN/pairs.parquet``.

Without contrast (``mel.contrastive: false``) the rows are failing rollouts alone (``plus_sample_index = -1``).
The manifest records p_pair (share of prompts with both Y+ and Y-) and the pair count.
"""
from __future__ import annotations

import random
import time

from mel import artifacts, schemas
from mel.config import Config
from mel.experience import draw_pairs, group_outcomes, p_pair
from mel.stages.common import StageResult, derive_seed, step_dir


def run_pair(cfg: Config, run_dir: str, step: int, rollouts_uri: str, verdicts_uri: str) -> StageResult:
    out = artifacts.join(step_dir(run_dir, step), "pairs.parquet")
    if artifacts.is_complete(out):
        return StageResult("pair", step, out, reused=True, summary=_summary(artifacts.read_manifest(out)))
    t0 = time.perf_counter()
    rollouts = artifacts.read_table(rollouts_uri, schemas.ROLLOUTS).to_pylist()
    verdicts = artifacts.read_table(verdicts_uri, schemas.VERDICTS).to_pylist()
    key = {(r["prompt_index"], r["sample_index"]): r for r in rollouts}
    if set(key) != {(v["prompt_index"], v["sample_index"]) for v in verdicts}:
        raise ValueError(f"{verdicts_uri} does not line up with {rollouts_uri} (prompt_index/sample_index differ)")
    verdict = {(v["prompt_index"], v["sample_index"]): v for v in verdicts}
    groups = group_outcomes([v["prompt_index"] for v in verdicts], [v["passed"] for v in verdicts])
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
    info = {"pairs": len(rows), "prompts": len(groups), "p_pair": p_pair(groups), "contrastive": cfg.mel.contrastive,
            "seconds": time.perf_counter() - t0}
    artifacts.write_rows(out, rows, schemas.PAIRS, **info)
    return StageResult("pair", step, out, seconds=info["seconds"], summary=_summary(info))


def _summary(info: dict) -> str:
    kind = "pairs" if info.get("contrastive", True) else "failing rollouts"
    return f"{info['pairs']} {kind} from {info['prompts']} prompts, p_pair {info['p_pair']:.2f}"
