"""Update stage: one policy update (GRPO / REINFORCE++ / RFT, plus lambda * the NLL of the step's selected
meta-experiences when MEL is on) on the step's scored rollouts, then a checkpoint and the step's metrics.

Outputs: ``metrics`` (``step_NNNN/update.parquet``: the step's metrics row, the merge of the metrics columns that the
stats of each stage of the step declare (`mel.stages.step.StepStats.metrics_row`; only the columns of the stages that
ran); its manifest keeps every stage's stats as ``step_stats``, including those of stages with no column) and
``checkpoint`` (``step_NNNN/checkpoint/``: Hugging Face model folder + optimizer state; its manifest records the
``device`` that trained it, ``model.device`` resolved: ``cpu`` or ``cuda:0``). With ``run.checkpoint_every = k`` only
every k-th step and the last write the folder; the others write a *resident* checkpoint, a manifest with the trained
state's fingerprint (`mel.stages.policy`). Either way the trained state stays in this process for the next step, with
an engine on it.
The metrics artifact is written after the checkpoint, so its manifest marks the whole stage complete.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mel import artifacts
from mel.config import Config
from mel.engines.base import ENGINE_CACHE, RolloutEngine, engine_capabilities
from mel.experience import group_outcomes
from mel.fingerprint import fingerprint
from mel.stages.common import set_threads
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

    metric_columns = (
        pa.field("reward_mean", pa.float64()),  # mean reward over the step's samples
        pa.field("reward_std", pa.float64()),
        pa.field("pass_rate", pa.float64()),  # share of samples that passed
        pa.field("prompt_pass_rate", pa.float64()),  # share of prompts with at least one passing sample
        pa.field("mixed_group_rate", pa.float64()),  # share of groups with both passing and failing samples
        pa.field("all_negative_rate", pa.float64()),  # share of groups where every sample failed
        pa.field("loss", pa.float64()),  # total loss (policy + kl_coef * kl), mean over optimizer steps
        pa.field("pg_loss", pa.float64()),  # clipped policy-gradient term
        pa.field("kl", pa.float64()),  # k3 KL to the reference policy (0 when kl_coef = 0)
        pa.field("clip_frac", pa.float64()),  # share of completion tokens where the ratio was clipped
        pa.field("grad_norm", pa.float64()),  # global grad norm before clipping, mean over optimizer steps
        pa.field("entropy", pa.float64()),  # mean token entropy of the policy on the sampled completions
        pa.field("lr", pa.float64()),
        pa.field("train_tokens_per_s", pa.float64()),  # prompt+completion tokens through forward/backward per second
        pa.field("update_s", pa.float64()),
        # |log-prob of a sampled token as the rollout engine reported it - as the update recomputes it (pi_old)|, over
        # the tokens the update scored (verl/OpenRLHF users watch it once vLLM samples; ~2e-6 on CPU float32)
        pa.field("logprob_drift_max", pa.float64()),
        pa.field("logprob_drift_mean", pa.float64()),
        pa.field("weight_sync_s", pa.float64()),  # trained weights handed to the rollout engine (null: rebuilt)
        pa.field("p_pair", pa.float64()),  # share of prompts with both Y+ and Y- (MEL-Code 4.2): every run has it
        pa.field("num_experiences", pa.int32()),  # M in this step's NLL term (at most mel.max_experiences)
        pa.field("experience_tokens", pa.int64()),  # tokens of those M
        pa.field("nll_loss", pa.float64()),  # L_NLL: token-averaged NLL of M given C_retro (0 when no M)
        pa.field("nll_coef", pa.float64()),  # lambda used (mean over optimizer steps with M; 0 when none)
        pa.field("grad_norm_rl", pa.float64()),  # gradient norm of the RL term
        pa.field("grad_norm_nll", pa.float64()),  # gradient norm of the NLL term (before lambda; 0 when no M)
        pa.field("nll_rl_grad_ratio", pa.float64()),  # ||lambda * g_NLL|| / ||g_RL||, mean over steps with M
    )

    def metrics(self, step: StepStats) -> dict:
        # every column but two is the field of the same name
        named = {f.name: getattr(self, f.name) for f in self.metric_columns if f.name not in ("update_s", "p_pair")}
        return {**named, "update_s": self.seconds, "p_pair": self.mixed_group_rate}

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
        if engine_capabilities(cfg.rollout.engine).model_in_memory:  # the transformers engine, on the trained model
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
        loss=trained.loss, pg_loss=trained.pg_loss, kl=trained.kl, clip_frac=trained.clip_frac,
        grad_norm=trained.grad_norm, entropy=trained.entropy, lr=trained.lr,
        train_tokens_per_s=trained.train_tokens_per_s,
        nll_loss=trained.nll_loss, nll_coef=trained.nll_coef, grad_norm_rl=trained.grad_norm_rl,
        grad_norm_nll=trained.grad_norm_nll, nll_rl_grad_ratio=trained.nll_rl_grad_ratio,
        logprob_drift_max=trained.logprob_drift_max, logprob_drift_mean=trained.logprob_drift_mean,
        weight_sync_s=weight_sync_s, num_experiences=trained.num_experiences,
        experience_tokens=trained.experience_tokens, seconds=seconds,
    )
    step_stats = ctx.upstream.add("update", stats)
    artifacts.write_rows(ctx.outputs["metrics"], [step_stats.metrics_row(ctx.step)], step_stats.metrics_schema(),
                         **ctx.record(stats), step_stats=step_stats.to_record(), checkpoint=ckpt_out)
    return stats
