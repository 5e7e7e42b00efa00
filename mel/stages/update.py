"""Update stage: one policy update (GRPO / REINFORCE++ / RFT, plus lambda * the NLL of the step's selected
meta-experiences when MEL is on) on the step's scored rollouts, then a checkpoint and the step's metrics.

Outputs: ``metrics`` (``step_NNNN/update.parquet``: the step's ``schemas.METRICS`` row, built by ``metrics_row`` from
the stats of every stage of the step; its manifest keeps them all as ``step_stats``, including those of stages that
have no METRICS column) and ``checkpoint`` (``step_NNNN/checkpoint/``: Hugging Face model folder + optimizer state;
its manifest records the ``device`` that trained it, ``model.device`` resolved: ``cpu`` or ``cuda:0``). With
``run.checkpoint_every = k`` only every k-th step and the last write the folder; the others write a *resident*
checkpoint, a manifest with the trained state's fingerprint (`mel.stages.policy`). Either way the trained state stays
in this process for the next step, with an engine on it.
The metrics artifact is written after the checkpoint, so its manifest marks the whole stage complete.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from mel import artifacts, schemas
from mel.config import Config
from mel.engines.base import ENGINE_CACHE, RolloutEngine
from mel.experience import group_outcomes
from mel.fingerprint import fingerprint
from mel.stages.common import set_threads
from mel.stages.extract import ExtractStats
from mel.stages.pair import PairStats
from mel.stages.replay import ReplayStats
from mel.stages.revise import ReviseStats
from mel.stages.rollout import RolloutStats
from mel.stages.policy import (
    TRAINER,
    ResidentRecord,
    TrainerState,
    UpdateInputs,
    build_engine,
    engine_key,
    is_resident,
    read_update_rows,
    state_key,
    train_on,
    trainer_state,
    weights_folder,
    with_optimizer,
    writes_checkpoint,
)
from mel.stages.step import StageContext, StageStats, StepStats
from mel.stages.verify import VerifyStats
from mel.update import model_device, save_checkpoint


@dataclass(frozen=True)
class UpdateStats(StageStats):
    reward_mean: float  # over the step's samples
    reward_std: float
    pass_rate: float
    prompt_pass_rate: float
    mixed_group_rate: float
    all_negative_rate: float
    loss: float
    pg_loss: float
    kl: float
    clip_frac: float
    grad_norm: float
    entropy: float
    lr: float
    train_tokens_per_s: float
    nll_loss: float
    nll_coef: float
    grad_norm_rl: float
    grad_norm_nll: float
    nll_rl_grad_ratio: float | None  # ||lambda * g_NLL|| / ||g_RL|| (None: no step had both gradients)
    logprob_drift_max: float | None  # max |trainer's pi_old log-prob - rollout engine's| (None: no token scored)
    logprob_drift_mean: float | None  # its mean over the scored completion tokens
    weight_sync_s: float | None  # trained weights handed to the engine in memory (None: the engine is built anew)
    num_experiences: int
    experience_tokens: int
    seconds: float  # loading, the update and the checkpoint

    def summary(self) -> str:
        text = (f"reward {self.reward_mean:.3f}, loss {self.loss:+.4f}, kl {self.kl:.4f}, "
                f"clip {self.clip_frac:.3f}, grad norm {self.grad_norm:.3f}")
        if self.num_experiences:
            text += f", nll {self.nll_loss:.3f} on {self.num_experiences} M (lambda {self.nll_coef:.4g}"
            if self.nll_rl_grad_ratio is not None:
                text += f", NLL/RL grad norm {self.nll_rl_grad_ratio:.3g}"
            text += ")"
        if self.logprob_drift_max is not None:
            text += f", log-prob drift max {self.logprob_drift_max:.2g}"
        if self.weight_sync_s is not None:
            text += f", weights to the engine in {self.weight_sync_s:.2f} s"
        return text


def group_stats(prompt_index: list[int], passed: list[bool]) -> dict[str, float]:
    """Share of prompts with a pass, with mixed groups (both Y+ and Y-), and with all-negative groups."""
    groups = group_outcomes(prompt_index, passed)
    k = max(len(groups), 1)
    return {
        "prompt_pass_rate": sum(any(v) for v in groups.values()) / k,
        "mixed_group_rate": sum(any(v) and not all(v) for v in groups.values()) / k,
        "all_negative_rate": sum(not any(v) for v in groups.values()) / k,
    }


def policy_state(cfg: Config, checkpoint: str) -> tuple[TrainerState, RolloutEngine | None]:
    """The trainer state to train (`mel.stages.policy.trainer_state`), and the engine that takes its weights after the
    update (or None).

    The step's engine, when it holds this checkpoint: the transformers engine's model is the checkpoint's weights
    (loaded once for the step's generation, or the trainer's own model kept from the step before) and is trained in
    place (the engine is dropped: one model in memory); an engine that takes weights in memory (vLLM) is kept, its
    memory released while the update trains. What an engine can do is its ``capabilities``."""
    engine = ENGINE_CACHE.take(engine_key(cfg, checkpoint))
    receiver = engine if engine is not None and engine.capabilities.takes_weights else None
    state = TRAINER.take(state_key(checkpoint))
    if state is None and engine is not None and engine.capabilities.model_in_memory and not is_resident(checkpoint):
        state = with_optimizer(cfg, checkpoint, *engine.policy())
    del engine
    if receiver is not None:
        receiver.release_memory()
    return state or trainer_state(cfg, checkpoint), receiver


def keep_state(cfg: Config, state: TrainerState, receiver: RolloutEngine | None, checkpoint: str) -> float | None:
    """Keep the trained state resident as that of ``checkpoint`` (just written, or resident) with an engine on it
    for the next step's rollout: the transformers engine on the trained model itself, or the step's engine given the
    weights in memory (built once per run). Returns the seconds the weights took to reach an engine that takes them
    in memory (None for the transformers engine)."""
    TRAINER.put(state_key(checkpoint), state)
    if receiver is None:
        if cfg.rollout.engine == "transformers":
            ENGINE_CACHE.put(engine_key(cfg, checkpoint), build_engine(cfg, weights_folder(checkpoint),
                                                                       model=state.model, tokenizer=state.tokenizer))
        return None
    t0 = time.perf_counter()
    receiver.load_weights(state.model.named_parameters())
    ENGINE_CACHE.put(engine_key(cfg, checkpoint), receiver)
    return time.perf_counter() - t0


def run_update(cfg: Config, ctx: StageContext, checkpoint: str, rollouts: str, verdicts: str,
               meta_experiences: str | None) -> UpdateStats:
    set_threads(cfg)
    t0 = time.perf_counter()
    inputs = UpdateInputs(rollouts, verdicts, meta_experiences)
    rollout_rows, verdict_rows = read_update_rows(inputs)
    state, receiver = policy_state(cfg, checkpoint)
    trained = train_on(cfg, ctx.step, state, inputs, (rollout_rows, verdict_rows))
    ckpt_out = ctx.outputs["checkpoint"]
    if writes_checkpoint(cfg, ctx.step):
        artifacts.write_folder(ckpt_out, lambda d: save_checkpoint(state.model, state.tokenizer, state.optimizer, d),
                               step=ctx.step, device=str(model_device(state.model)))
    else:  # the state stays in memory; the manifest says how to get it back (mel.stages.policy)
        record = ResidentRecord(ctx.step, checkpoint, inputs, fingerprint(state.model, state.optimizer))
        artifacts.write_manifest(ckpt_out, **record.manifest(ckpt_out), device=str(model_device(state.model)))
    weight_sync_s = keep_state(cfg, state, receiver, ckpt_out)
    seconds = time.perf_counter() - t0

    rewards = np.array([v["reward"] for v in verdict_rows], dtype=np.float64)
    groups = group_stats([r["prompt_index"] for r in rollout_rows], [v["passed"] for v in verdict_rows])
    stats = UpdateStats(
        reward_mean=float(rewards.mean()), reward_std=float(rewards.std()),
        pass_rate=float(np.mean([v["passed"] for v in verdict_rows])), **groups,
        **{k: float(trained[k]) for k in ("loss", "pg_loss", "kl", "clip_frac", "grad_norm", "entropy", "lr",
                                          "train_tokens_per_s", "nll_loss", "nll_coef", "grad_norm_rl",
                                          "grad_norm_nll")},
        nll_rl_grad_ratio=trained["nll_rl_grad_ratio"], logprob_drift_max=trained["logprob_drift_max"],
        logprob_drift_mean=trained["logprob_drift_mean"], weight_sync_s=weight_sync_s,
        num_experiences=int(trained["num_experiences"]), experience_tokens=int(trained["experience_tokens"]),
        seconds=seconds,
    )
    step_stats = ctx.upstream.add("update", stats)
    artifacts.write_rows(ctx.outputs["metrics"], [metrics_row(ctx.step, step_stats)], schemas.METRICS,
                         **stats.manifest(), step_stats=step_stats.to_record(), checkpoint=ckpt_out)
    return stats


def metrics_row(step: int, stats: StepStats) -> dict:
    """The step's ``schemas.METRICS`` row from the stats of its stages. The columns of a stage that did not run are
    null (MEL's without meta-experience learning, R-MEL's without revision); p_pair, the mixed-group rate, every run
    has. A column no stage fills stays null, so a test checks that a run of every stage fills them all."""
    roll, ver, upd = stats.require(RolloutStats), stats.require(VerifyStats), stats.require(UpdateStats)
    row: dict = dict.fromkeys(schemas.METRICS.names)
    row.update({
        "step": step,
        "reward_mean": upd.reward_mean, "reward_std": upd.reward_std, "pass_rate": upd.pass_rate,
        "prompt_pass_rate": upd.prompt_pass_rate, "mixed_group_rate": upd.mixed_group_rate,
        "all_negative_rate": upd.all_negative_rate,
        "loss": upd.loss, "pg_loss": upd.pg_loss, "kl": upd.kl, "clip_frac": upd.clip_frac,
        "grad_norm": upd.grad_norm, "entropy": upd.entropy, "lr": upd.lr,
        "num_samples": roll.samples, "completion_tokens": roll.completion_tokens,
        "mean_completion_tokens": roll.completion_tokens / roll.samples if roll.samples else float("nan"),
        "gen_tokens_per_s": roll.gen_tokens_per_s, "train_tokens_per_s": upd.train_tokens_per_s,
        "rollout_s": roll.seconds, "verify_s": ver.seconds, "update_s": upd.seconds,
        "p_pair": upd.mixed_group_rate,
        "num_experiences": upd.num_experiences, "experience_tokens": upd.experience_tokens,
        "nll_loss": upd.nll_loss, "nll_coef": upd.nll_coef,
        "grad_norm_rl": upd.grad_norm_rl, "grad_norm_nll": upd.grad_norm_nll,
        "nll_rl_grad_ratio": upd.nll_rl_grad_ratio,
        "logprob_drift_max": upd.logprob_drift_max, "logprob_drift_mean": upd.logprob_drift_mean,
        "weight_sync_s": upd.weight_sync_s,
    })
    replay = stats.get(ReplayStats)
    if replay is not None:  # meta-experience learning ran: so did pair and extract
        pair, extract = stats.require(PairStats), stats.require(ExtractStats)
        row.update({
            "num_pairs": replay.pairs, "num_built": replay.built, "num_accepted": replay.accepted,
            "p_accept": replay.p_accept, "p_usable": replay.p_usable, "retention": replay.retention,
            "mel_gen_tokens": extract.gen_tokens + replay.replay_tokens,
            "extract_s": extract.seconds + pair.seconds, "replay_s": replay.seconds,
        })
    revise = stats.get(ReviseStats)
    if revise is not None:
        row.update({
            "revise_groups": revise.revise_groups, "rescued_groups": revise.rescued_groups,
            "revision_attempts": revise.revision_attempts, "revision_tokens": revise.revision_tokens,
            "filter_rejections": revise.filter_rejections, "token_allowance": revise.token_allowance,
            "token_match": revise.token_match, "revise_s": revise.seconds,
        })
    if list(row) != schemas.METRICS.names:
        raise AssertionError(f"not METRICS columns: {sorted(set(row) - set(schemas.METRICS.names))}")
    return row
