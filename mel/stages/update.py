"""Update stage: one policy update (GRPO / REINFORCE++ / RFT, plus lambda * the NLL of the step's selected
meta-experiences when MEL is on) on the step's scored rollouts, then a checkpoint and the step's metrics.

Outputs: ``step_NNNN/checkpoint/`` (Hugging Face model folder + optimizer state) and ``step_NNNN/update.parquet``
(one ``schemas.METRICS`` row). The metrics artifact is written after the checkpoint, so its manifest marks the whole
stage complete.
"""
from __future__ import annotations

import time

import numpy as np

from mel import artifacts, schemas
from mel.checkpoints import require_weights
from mel.config import Config
from mel.models import load_model_and_tokenizer, resolve_model
from mel.stages.common import StageResult, derive_seed, set_threads, step_dir
from mel.engines.base import format_chat
from mel.experience import group_outcomes
from mel.update import (
    ExperienceBatch,
    UpdateBatch,
    load_optimizer_state,
    make_optimizer,
    policy_update,
    save_checkpoint,
)


def checkpoint_uri(run_dir: str, step: int) -> str:
    return artifacts.join(step_dir(run_dir, step), "checkpoint")


def group_stats(prompt_index: list[int], passed: list[bool]) -> dict[str, float]:
    """Share of prompts with a pass, with mixed groups (both Y+ and Y-), and with all-negative groups."""
    groups = group_outcomes(prompt_index, passed)
    k = max(len(groups), 1)
    return {
        "prompt_pass_rate": sum(any(v) for v in groups.values()) / k,
        "mixed_group_rate": sum(any(v) and not all(v) for v in groups.values()) / k,
        "all_negative_rate": sum(not any(v) for v in groups.values()) / k,
    }


def experience_batch(rows: list[dict], tokenizer, cfg: Config) -> ExperienceBatch:
    """The selected meta-experiences as (C_retro, M) token ids: C_retro is the builder's retrospective context as a
    chat user turn (with the assistant header), M is its rendered text closed by the end-of-turn token."""
    end = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    context, target = [], []
    for r in rows:
        text = format_chat(tokenizer, r["retro_prompt"], cfg.rollout.use_chat_template, cfg.rollout.system_prompt)
        context.append(tokenizer(text, add_special_tokens=False)["input_ids"])
        target.append(tokenizer(r["experience_text"], add_special_tokens=False)["input_ids"] + end)
    return ExperienceBatch(context_ids=context, target_ids=target)


def run_update(
    cfg: Config, run_dir: str, step: int, checkpoint_in: str, rollouts_uri: str, verdicts_uri: str,
    meta_experiences_uri: str | None = None,
) -> StageResult:
    out = artifacts.join(step_dir(run_dir, step), "update.parquet")
    ckpt_out = checkpoint_uri(run_dir, step)
    if artifacts.is_complete(out) and artifacts.is_complete(ckpt_out):
        row = artifacts.read_table(out, schemas.METRICS).to_pylist()[0]
        return StageResult("update", step, out, reused=True, summary=_summary(row), extra={"checkpoint": ckpt_out})
    set_threads(cfg)
    t0 = time.perf_counter()
    rollouts = artifacts.read_table(rollouts_uri, schemas.ROLLOUTS).to_pylist()
    verdicts = artifacts.read_table(verdicts_uri, schemas.VERDICTS).to_pylist()
    if [(r["prompt_index"], r["sample_index"]) for r in rollouts] != [
        (v["prompt_index"], v["sample_index"]) for v in verdicts
    ]:
        raise ValueError(f"{verdicts_uri} does not line up with {rollouts_uri} (prompt_index/sample_index differ)")

    require_weights(checkpoint_in, optimizer=True)  # a step resumes from the newest checkpoint, never a pruned one
    model, tokenizer = load_model_and_tokenizer(artifacts.fetch_folder(checkpoint_in), cfg.model.dtype)
    optimizer = make_optimizer(model, cfg.optimizer)
    load_optimizer_state(optimizer, artifacts.fetch_folder(checkpoint_in))
    ref_model = None
    if cfg.algorithm.kl_coef > 0:
        ref_model, _ = load_model_and_tokenizer(resolve_model(cfg.model), cfg.model.dtype)
        ref_model.eval()
    batch = UpdateBatch(
        prompt_ids=[r["prompt_token_ids"] for r in rollouts],
        completion_ids=[r["completion_token_ids"] for r in rollouts],
        rewards=[v["reward"] for v in verdicts],
        group_ids=[r["prompt_index"] for r in rollouts],
    )
    experiences, mel_info = None, {}
    if meta_experiences_uri is not None:
        me_rows = artifacts.read_table(meta_experiences_uri, schemas.META_EXPERIENCES).to_pylist()
        experiences = experience_batch([r for r in me_rows if r["selected"]], tokenizer, cfg)
        mel_info = artifacts.read_manifest(meta_experiences_uri)
    import torch

    torch.manual_seed(derive_seed(cfg.run.seed, step, "update"))
    stats = policy_update(
        model, optimizer, batch, cfg.algorithm, cfg.optimizer,
        pad_id=tokenizer.pad_token_id, temperature=cfg.rollout.temperature, max_len=cfg.rollout.max_new_tokens,
        seed=derive_seed(cfg.run.seed, step, "minibatch"), ref_model=ref_model,
        experiences=experiences, nll_coef=cfg.mel.nll_coef, nll_coef_mode=cfg.mel.nll_coef_mode,
        nll_grad_ratio=cfg.mel.nll_grad_ratio,
    )
    artifacts.write_folder(ckpt_out, lambda d: save_checkpoint(model, tokenizer, optimizer, d), step=step)
    update_s = time.perf_counter() - t0

    roll_info = artifacts.read_manifest(rollouts_uri)
    ver_info = artifacts.read_manifest(verdicts_uri)
    rewards = np.array(batch.rewards, dtype=np.float64)
    tokens = [r["num_completion_tokens"] for r in rollouts]
    groups = group_stats([r["prompt_index"] for r in rollouts], [v["passed"] for v in verdicts])
    row = {
        "step": step,
        "reward_mean": float(rewards.mean()),
        "reward_std": float(rewards.std()),
        "pass_rate": float(np.mean([v["passed"] for v in verdicts])),
        **groups,
        **{k: stats[k] for k in ("loss", "pg_loss", "kl", "clip_frac", "grad_norm", "entropy", "lr")},
        "num_samples": len(rollouts),
        "completion_tokens": int(sum(tokens)),
        "mean_completion_tokens": float(np.mean(tokens)),
        "gen_tokens_per_s": float(roll_info["gen_tokens_per_s"]),
        "train_tokens_per_s": stats["train_tokens_per_s"],
        "rollout_s": float(roll_info["seconds"]),
        "verify_s": float(ver_info["seconds"]),
        "update_s": update_s,
        **mel_metrics(mel_info, groups, stats),
    }
    artifacts.write_rows(out, [row], schemas.METRICS, checkpoint=ckpt_out)
    return StageResult("update", step, out, seconds=update_s, summary=_summary(row), extra={"checkpoint": ckpt_out})


def mel_metrics(mel_info: dict, groups: dict, stats: dict) -> dict:
    """The METRICS columns of meta-experience learning; the pair/replay ones are null in a run without it."""
    row = {k: stats[k] for k in ("nll_loss", "nll_coef", "grad_norm_rl", "grad_norm_nll", "num_experiences",
                                 "experience_tokens")}
    row["p_pair"] = groups["mixed_group_rate"]
    keys = {"num_pairs": "pairs", "num_built": "built", "num_accepted": "accepted", "p_accept": "p_accept",
            "p_usable": "p_usable", "retention": "retention", "extract_s": "extract_seconds", "replay_s": "seconds"}
    row.update({col: mel_info.get(key) for col, key in keys.items()})
    row["mel_gen_tokens"] = (mel_info["gen_tokens"] + mel_info["replay_tokens"]) if mel_info else None
    revise = mel_info.get("revise") or {}
    for col in ("revise_groups", "rescued_groups", "revision_attempts", "revision_tokens"):
        row[col] = revise.get(col)
    row["revise_s"] = revise.get("seconds")
    return row


def _summary(row: dict) -> str:
    text = (f"reward {row['reward_mean']:.3f}, loss {row['loss']:+.4f}, kl {row['kl']:.4f}, "
            f"clip {row['clip_frac']:.3f}, grad norm {row['grad_norm']:.3f}")
    if row.get("num_experiences"):
        text += f", nll {row['nll_loss']:.3f} on {row['num_experiences']} M (lambda {row['nll_coef']:.4g})"
    return text
