"""Revise stage (R-MEL, and its MEL+Extra control): turn all-negative groups into pairs
-> ``step_NNNN/revised_pairs.parquet`` (the step's natural pairs plus the recovered ones, ``schemas.PAIRS``) and
``step_NNNN/revisions.parquet`` (every continuation attempt, ``schemas.REVISIONS``).

``rmel``: per all-negative group, the seed y- (``revise.seed_rule``) is truncated at floor(tau * |y-|) tokens and the
policy continues exactly those prompt + prefix token ids (``engine.generate_from_ids``), at most
``rollout.max_new_tokens - prefix`` new tokens, in rounds over the groups (``mel.experience.revise.revise_batch``).
``extra``: attempt k of a group is a fresh rollout of the prompt allowed the same number of new tokens as R-MEL's
attempt k (compute matched by generated tokens, not only by count); the first passing one pairs with y-.
Both verify with the step's verifier and stop a group at its first accepted attempt.
"""
from __future__ import annotations

import time

from mel import artifacts, schemas
from mel.config import Config
from mel.experience import group_outcomes
from mel.experience.revise import (
    SEED_RULES,
    Continuation,
    FailedRollout,
    all_negative_groups,
    prefix_length,
    revise_batch,
)
from mel.stages.common import (
    StageResult,
    derive_seed,
    parse_problems,
    policy_engine,
    set_threads,
    step_dir,
    step_verifier,
)


def _continue(engine, prompt_ids: list[list[int]], caps: list[int], temperature: float, seed: int
              ) -> list[Continuation]:
    """One sample per prompt, each cut to its own token cap (sampling to the largest cap and cutting is the same
    distribution as stopping at the cap)."""
    results = engine.generate_from_ids(prompt_ids, n=1, temperature=temperature, max_tokens=max(caps), seed=seed)
    out = []
    for r, cap in zip(results, caps):
        ids = tuple(r.samples[0].token_ids[:cap])
        out.append(Continuation(ids, ""))
    return out


def run_revise(cfg: Config, run_dir: str, step: int, checkpoint_uri: str, rollouts_uri: str, verdicts_uri: str,
               pairs_uri: str) -> StageResult:
    base = step_dir(run_dir, step)
    out, rev_out = artifacts.join(base, "revised_pairs.parquet"), artifacts.join(base, "revisions.parquet")
    if artifacts.is_complete(out) and artifacts.is_complete(rev_out):
        return StageResult("revise", step, out, reused=True, summary=_summary(artifacts.read_manifest(out)),
                           extra={"revisions": rev_out})
    set_threads(cfg)
    t0 = time.perf_counter()
    rollouts = artifacts.read_table(rollouts_uri, schemas.ROLLOUTS).to_pylist()
    verdicts = {(v["prompt_index"], v["sample_index"]): v
                for v in artifacts.read_table(verdicts_uri, schemas.VERDICTS).to_pylist()}
    pairs = artifacts.read_table(pairs_uri, schemas.PAIRS).to_pylist()
    by_key = {(r["prompt_index"], r["sample_index"]): r for r in rollouts}
    groups = group_outcomes([r["prompt_index"] for r in rollouts],
                            [verdicts[(r["prompt_index"], r["sample_index"])]["passed"] for r in rollouts])
    targets = all_negative_groups(groups)
    seeds, seed_rows = [], []
    for g in targets:
        members = sorted((r for r in rollouts if r["prompt_index"] == g), key=lambda r: r["sample_index"])
        failed = [FailedRollout(r["sample_index"], tuple(r["completion_token_ids"]), tuple(r["completion_logprobs"]))
                  for r in members]
        chosen = failed[SEED_RULES.get(cfg.revise.seed_rule)(failed)]
        seeds.append(chosen)
        seed_rows.append(by_key[(g, chosen.sample_index)])
    attempts = _run_mode(cfg, step, checkpoint_uri, seeds, seed_rows, verdicts) if seeds else []
    new_pairs = _pairs_from(attempts, seed_rows, verdicts, cfg.revise.mode)
    rows = sorted(pairs + new_pairs, key=lambda r: (r["prompt_index"], r["pair_index"]))
    info = {
        "mode": cfg.revise.mode, "revise_groups": len(seeds), "rescued_groups": len(new_pairs),
        "revision_attempts": len(attempts), "revision_tokens": sum(a["generated_tokens"] for a in attempts),
        "all_negative_rate": len(targets) / max(len(groups), 1), "seconds": time.perf_counter() - t0,
    }
    artifacts.write_rows(rev_out, attempts, schemas.REVISIONS, **info)
    pairs_info = artifacts.read_manifest(pairs_uri)
    kept = {k: pairs_info[k] for k in ("p_pair", "prompts", "contrastive", "seconds")}
    artifacts.write_rows(out, rows, schemas.PAIRS, **kept, pairs=len(rows), revise=info)
    return StageResult("revise", step, out, seconds=info["seconds"], summary=_summary(info),
                       extra={"revisions": rev_out})


def _run_mode(cfg: Config, step: int, checkpoint_uri: str, seeds, seed_rows, verdicts) -> list[dict]:
    engine = policy_engine(cfg, checkpoint_uri).get()
    problems = parse_problems([r["problem_json"] for r in seed_rows])
    verify = step_verifier(cfg)
    max_new = cfg.rollout.max_new_tokens
    statuses: dict[tuple[int, int], tuple[str, str]] = {}
    texts: dict[tuple[int, int], str] = {}
    seed = derive_seed(cfg.run.seed, step, f"revise-{cfg.revise.mode}")

    def verify_batch(positions, y_revs, conts, k):
        decoded = [engine.tokenizer.decode(list(y), skip_special_tokens=True) for y in y_revs]
        result = verify([problems[i] for i in positions], decoded)
        for i, text, v in zip(positions, decoded, result):
            statuses[(i, k)] = (v.status, v.detail)
            texts[(i, k)] = text
        return [v.passed for v in result]

    if cfg.revise.mode == "rmel":
        rounds = [0]

        def continue_batch(positions, prefixes, k):
            rounds[0] = k
            ids = [list(seed_rows[i]["prompt_token_ids"]) + list(p) for i, p in zip(positions, prefixes)]
            caps = [max(max_new - len(p), 1) for p in prefixes]
            return _continue(engine, ids, caps, cfg.rollout.temperature, seed * 31 + k)

        revisions = revise_batch(seeds, cfg.revise.taus, cfg.revise.budget, cfg.revise.lcp_tau, continue_batch,
                                 lambda positions, y_revs, conts: verify_batch(positions, y_revs, conts, rounds[0]))
        per_seed = [[(a.attempt, a.tau, a.prefix_len, a.continuation_tokens, a.passed, a.lcp, a.accepted)
                     for a in rev.attempts] for rev in revisions]
    else:
        per_seed = _extra_attempts(cfg, engine, seeds, seed_rows, verify_batch, seed)
    rows = []
    for i, attempts in enumerate(per_seed):
        r, s = seed_rows[i], seeds[i]
        mean_lp = sum(s.logprobs) / len(s.logprobs) if s.logprobs else 0.0
        for k, tau, prefix, generated, passed, lcp, accepted in attempts:
            status, _ = statuses[(i, k)]
            rows.append({
                "step": step, "prompt_index": r["prompt_index"], "problem_id": r["problem_id"],
                "mode": cfg.revise.mode, "seed_sample_index": s.sample_index, "seed_tokens": len(s.token_ids),
                "seed_mean_logprob": mean_lp, "group_failed": cfg.rollout.group_size, "attempt": k, "tau": tau,
                "prefix_tokens": prefix, "generated_tokens": generated, "passed": passed, "lcp": lcp,
                "accepted": accepted, "status": status, "text": texts[(i, k)],
            })
    return rows


def _extra_attempts(cfg: Config, engine, seeds, seed_rows, verify_batch, seed: int) -> list[list[tuple]]:
    """MEL+Extra: attempt k of a group is a fresh rollout allowed R-MEL's attempt-k budget of new tokens."""
    taus = cfg.revise.taus
    attempts: list[list[tuple]] = [[] for _ in seeds]
    open_ = list(range(len(seeds)))
    for k in range(cfg.revise.budget):
        if not open_:
            break
        tau = taus[k % len(taus)]
        caps = [max(cfg.rollout.max_new_tokens - prefix_length(len(seeds[i].token_ids), tau), 1) for i in open_]
        conts = _continue(engine, [list(seed_rows[i]["prompt_token_ids"]) for i in open_], caps,
                          cfg.rollout.temperature, seed * 31 + k)
        passed = verify_batch(open_, [c.token_ids for c in conts], conts, k)
        for i, c, ok in zip(open_, conts, passed):
            attempts[i].append((k, tau, 0, len(c.token_ids), ok, None, ok))
        open_ = [i for i, ok in zip(open_, passed) if not ok]
    return attempts


def _pairs_from(attempts: list[dict], seed_rows: list[dict], verdicts: dict, mode: str) -> list[dict]:
    """A pair (y_rev, y-) for every group with an accepted attempt, in the PAIRS layout."""
    seed_of = {r["prompt_index"]: r for r in seed_rows}
    out = []
    for a in attempts:
        if not a["accepted"]:
            continue
        minus = seed_of[a["prompt_index"]]
        v = verdicts[(minus["prompt_index"], minus["sample_index"])]
        out.append({
            "step": a["step"], "prompt_index": a["prompt_index"], "pair_index": 0, "problem_id": a["problem_id"],
            "problem_json": minus["problem_json"], "origin": "revision" if mode == "rmel" else "extra",
            "plus_sample_index": -1, "minus_sample_index": minus["sample_index"], "y_plus": a["text"],
            "y_minus": minus["completion_text"], "minus_status": v["status"], "minus_detail": v["detail"],
        })
    return out


def _summary(info: dict) -> str:
    return (f"{info['mode']}: {info['rescued_groups']}/{info['revise_groups']} all-negative groups rescued, "
            f"{info['revision_attempts']} attempts, {info['revision_tokens']} tokens")
