"""Extract stage (MEL): one meta-experience M = (s*, C, H) per pair with the configured builder -> ``experiences``.

The ``llm`` and ``self_critique`` builders generate with the policy that sampled the step (the step's input
checkpoint); ``template`` generates nothing. A malformed M is written with its ``reject_reason``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import pyarrow as pa

from mel import artifacts, schemas
from mel.config import Config
from mel.experience import BUILDERS, BuildContext, PairInput
from mel.stages.common import derive_seed, parse_problems, set_threads
from mel.stages.pair import PairStats
from mel.stages.policy import policy_engine, weights_folder
from mel.stages.step import StageContext, StageStats, StepStats


@dataclass(frozen=True)
class ExtractStats(StageStats):
    pairs: int
    built: int  # well-formed M
    builder: str
    gen_tokens: int  # tokens generated to build M
    seconds: float

    metric_columns = (pa.field("extract_s", pa.float64()),)  # pairing + building M

    def metrics(self, step: StepStats) -> dict:
        return {"extract_s": self.seconds + step.require(PairStats).seconds}

    def summary(self) -> str:
        gen = f", {self.gen_tokens} tokens generated" if self.gen_tokens else ""
        return f"{self.built}/{self.pairs} well-formed ({self.builder}){gen}"


def _token_counter(checkpoint: str):
    """Tokens of a text under the step's policy tokenizer (the checkpoint's), as ``experience_batch`` encodes M."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(artifacts.fetch_folder(weights_folder(checkpoint)))
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def run_extract(cfg: Config, ctx: StageContext, checkpoint: str, pairs: str) -> ExtractStats:
    set_threads(cfg)
    t0 = time.perf_counter()
    pair_rows = artifacts.read_table(pairs, schemas.PAIRS).to_pylist()
    problems = parse_problems([r["problem_json"] for r in pair_rows])
    inputs = [PairInput(p, r["y_plus"], r["y_minus"], r["minus_status"], r["minus_detail"])
              for p, r in zip(problems, pair_rows)]
    build = BuildContext(policy_engine(cfg, checkpoint), cfg.mel, derive_seed(cfg.run.seed, ctx.step, "extract"),
                         count_tokens=_token_counter(checkpoint) if cfg.mel.builder == "template" else None)
    built = BUILDERS.get(cfg.mel.builder)(inputs, build)
    rows = []
    for r, b in zip(pair_rows, built):
        m = b.experience
        rows.append({
            **r, "builder": cfg.mel.builder, "category": m.category, "bifurcation_step": m.bifurcation_step,
            "critique": m.critique, "heuristic": m.heuristic, "experience_text": m.render(),
            "retro_prompt": b.retro_prompt, "built_ok": m.ok, "reject_reason": m.reject_reason,
            "gen_tokens": b.gen_tokens,
        })
    stats = ExtractStats(pairs=len(rows), built=sum(r["built_ok"] for r in rows), builder=cfg.mel.builder,
                         gen_tokens=sum(r["gen_tokens"] for r in rows), seconds=time.perf_counter() - t0)
    artifacts.write_rows(ctx.outputs["experiences"], rows, schemas.EXPERIENCES, **ctx.record(stats))
    return stats
