"""Replay stage (MEL): keep or drop each well-formed meta-experience by replay validation, then draw the at most K
that enter this step's NLL term -> ``step_NNNN/meta_experiences.parquet`` (every M, accepted or not, with why).

The manifest carries the step's p_pair, p_accept, p_usable and retention ratio (definitions in ``mel.schemas``).
"""
from __future__ import annotations

import random
import time

from mel import artifacts, schemas
from mel.config import Config
from mel.experience import REPLAYS, ReplayContext, ReplayInput
from mel.stages.common import (
    StageResult,
    derive_seed,
    parse_problems,
    policy_engine,
    set_threads,
    step_dir,
    step_verifier,
)


def run_replay(cfg: Config, run_dir: str, step: int, checkpoint_uri: str, experiences_uri: str) -> StageResult:
    out = artifacts.join(step_dir(run_dir, step), "meta_experiences.parquet")
    if artifacts.is_complete(out):
        return StageResult("replay", step, out, reused=True, summary=_summary(artifacts.read_manifest(out)))
    set_threads(cfg)
    t0 = time.perf_counter()
    rows = artifacts.read_table(experiences_uri, schemas.EXPERIENCES).to_pylist()
    ok = [i for i, r in enumerate(rows) if r["built_ok"]]
    problems = parse_problems([rows[i]["problem_json"] for i in ok])
    items = [ReplayInput(p, rows[i]["y_plus"], rows[i]["y_minus"], rows[i]["experience_text"])
             for p, i in zip(problems, ok)]
    ctx = ReplayContext(policy_engine(cfg, checkpoint_uri), step_verifier(cfg), cfg.mel.replay_samples, cfg.rollout.temperature,
                        cfg.rollout.max_new_tokens, derive_seed(cfg.run.seed, step, "replay"))
    outcomes = dict(zip(ok, REPLAYS.get(cfg.mel.replay)(items, ctx)))
    accepted = [i for i in ok if outcomes[i].accepted]
    rng = random.Random(derive_seed(cfg.run.seed, step, "select"))
    selected = set(rng.sample(accepted, min(cfg.mel.max_experiences, len(accepted))))
    out_rows = []
    for i, r in enumerate(rows):
        o = outcomes.get(i)
        out_rows.append({
            **r, "replay": cfg.mel.replay,
            "replay_status": o.status if o else "not_built",
            "replay_detail": o.detail if o else r["reject_reason"],
            "replay_completion": o.completion if o else "",
            "replay_tokens": o.gen_tokens if o else 0,
            "accepted": bool(o and o.accepted), "selected": i in selected,
        })
    built_info = artifacts.read_manifest(experiences_uri)
    p_pair = float(built_info["p_pair"])
    n_pairs = len(rows)
    p_accept = len(accepted) / n_pairs if n_pairs else 0.0
    info = {
        "pairs": n_pairs, "built": len(ok), "accepted": len(accepted), "selected": len(selected),
        "p_pair": p_pair, "p_accept": p_accept, "p_usable": p_pair * p_accept,
        "retention": len(accepted) / len(ok) if ok else 0.0, "replay": cfg.mel.replay,
        "replay_tokens": sum(r["replay_tokens"] for r in out_rows),
        "gen_tokens": int(built_info["gen_tokens"]), "extract_seconds": float(built_info["seconds"]) +
        float(built_info["pair_seconds"]), "revise": built_info.get("revise"), "seconds": time.perf_counter() - t0,
    }
    artifacts.write_rows(out, out_rows, schemas.META_EXPERIENCES, **info)
    return StageResult("replay", step, out, seconds=info["seconds"], summary=_summary(info))


def _summary(info: dict) -> str:
    return (f"{info['accepted']}/{info['built']} kept by {info['replay']} replay, {info['selected']} to the NLL "
            f"term; p_pair {info['p_pair']:.2f}, p_accept {info['p_accept']:.2f}, p_usable {info['p_usable']:.2f}")
