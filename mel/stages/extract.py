"""Extract stage (MEL): one meta-experience M = (s*, C, H) per pair with the configured builder
-> ``step_NNNN/experiences.parquet``.

The ``llm`` and ``self_critique`` builders generate with the policy that sampled the step (the step's input
checkpoint); ``template`` generates nothing. A malformed M is written with its ``reject_reason``.
"""
from __future__ import annotations

import time

from mel import artifacts, schemas
from mel.config import Config
from mel.experience import BUILDERS, BuildContext, PairInput
from mel.stages.common import StageResult, derive_seed, parse_problems, policy_engine, set_threads, step_dir


def run_extract(cfg: Config, run_dir: str, step: int, checkpoint_uri: str, pairs_uri: str) -> StageResult:
    out = artifacts.join(step_dir(run_dir, step), "experiences.parquet")
    if artifacts.is_complete(out):
        return StageResult("extract", step, out, reused=True, summary=_summary(artifacts.read_manifest(out)))
    set_threads(cfg)
    t0 = time.perf_counter()
    pairs = artifacts.read_table(pairs_uri, schemas.PAIRS).to_pylist()
    problems = parse_problems([r["problem_json"] for r in pairs])
    inputs = [PairInput(p, r["y_plus"], r["y_minus"], r["minus_status"], r["minus_detail"])
              for p, r in zip(problems, pairs)]
    ctx = BuildContext(policy_engine(cfg, checkpoint_uri), cfg.mel, derive_seed(cfg.run.seed, step, "extract"))
    built = BUILDERS.get(cfg.mel.builder)(inputs, ctx)
    rows = []
    for r, b in zip(pairs, built):
        m = b.experience
        rows.append({
            **r, "builder": cfg.mel.builder, "category": m.category, "bifurcation_step": m.bifurcation_step,
            "critique": m.critique, "heuristic": m.heuristic, "experience_text": m.render(),
            "retro_prompt": b.retro_prompt, "built_ok": m.ok, "reject_reason": m.reject_reason,
            "gen_tokens": b.gen_tokens,
        })
    pairs_info = artifacts.read_manifest(pairs_uri)
    info = {"pairs": len(rows), "built": sum(r["built_ok"] for r in rows), "builder": cfg.mel.builder,
            "gen_tokens": sum(r["gen_tokens"] for r in rows), "seconds": time.perf_counter() - t0,
            "p_pair": float(pairs_info["p_pair"]), "pair_seconds": float(pairs_info["seconds"]),
            "revise": pairs_info.get("revise")}
    artifacts.write_rows(out, rows, schemas.EXPERIENCES, **info)
    return StageResult("extract", step, out, seconds=info["seconds"], summary=_summary(info))


def _summary(info: dict) -> str:
    gen = f", {info['gen_tokens']} tokens generated" if info["gen_tokens"] else ""
    return f"{info['built']}/{info['pairs']} well-formed ({info['builder']}){gen}"
