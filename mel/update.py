"""The policy update of one RL step: the base algorithm's policy loss (+ optional k3 KL), the meta-experience NLL
term, AdamW, grad clipping, mini-batches.

``policy_update`` takes the step's samples (prompt ids, completion ids, rewards, group ids) and, optionally, the
step's meta-experiences (``ExperienceBatch``: retrospective context ids and M's ids). The base algorithm
(``mel.algos.BASE_ALGORITHMS``: grpo, reinforce_pp, rft) picks the advantage estimator, the per-token policy loss and
whether only passing samples are kept. It runs ``epochs`` passes of shuffled mini-batches, each split into
micro-batches for gradient accumulation, with per-token loss weights chosen so that the accumulated gradient equals
the whole mini-batch's. Each optimizer step minimizes ``L_RL + lambda * L_NLL`` (MEL eq. 7, MEL-Code eq. 2-3):

- experiences are dealt round-robin over the mini-batches of each epoch (all in the one mini-batch by default);
  a step's L_NLL is the mean over its experiences of each one's token-mean NLL (``mel.algos.nll``): MEL eq. 7's
  expectation over the pool of validated M, not eq. 10's per-prompt mean added to each prompt's objective (the two
  agree when every prompt with an M has one, as with MEL-Code's one pair per prompt);
- a step with experiences backwards L_RL, sets its gradient aside, backwards L_NLL, and steps on
  ``g_RL + lambda * g_NLL`` (clipped as a whole): the two gradients are measured separately so that lambda can be
  calibrated to a target norm ratio (``nll_coef_mode=calibrated``); a step without experiences is exactly the
  plain RL step.

Departures from the papers (the first three are standard in their implementations):
- pi_old is the policy that sampled the step; when the update is a single optimizer step (one epoch, one
  mini-batch), pi_old's log-probs are the detached log-probs of the same forward pass (identical values), which saves
  a forward pass.
- Samples with advantage 0 (groups whose samples all got the same reward) contribute exactly zero policy loss; when
  there is no KL term their forward/backward is skipped, while their tokens still count in the loss normalizers, so
  the gradient is unchanged.
- Log-probs of the samples are computed at the sampling temperature (logits / T), as the sampler drew them; the NLL
  term scores M at temperature 1 (it is maximum likelihood, not a correction of the sampler).
- RFT (``passing_only``) drops the failing samples before anything else, so its normalizers count the kept samples
  only; with none kept the RL term is zero but the step (NLL term, AdamW) still runs.
- Experiences with no M tokens are dropped (their token-mean is undefined).
- The papers add the two losses; we add their gradients, which in ``fixed`` mode is the same up to float rounding.

Devices: the update runs where ``model`` is (CPU or one CUDA device, ``mel.models.load_model_and_tokenizer``). The
batch is padded and the advantages computed on the CPU, then moved once; the mini-batch shuffle draws from a CPU
generator, so another device changes the arithmetic (CUDA kernels round differently), never the mini-batches.
Checkpoints hold CPU tensors only (safetensors weights, a CPU optimizer state), so a
checkpoint written on a GPU resumes on a CPU and back.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, cast

import torch

from mel.algos import (
    BASE_ALGORITHMS,
    NLL_COEF_MODES,
    POLICY_LOSSES,
    BaseAlgorithm,
    compute_advantages,
    kl_k3,
    loss_token_weights,
    nll_token_weights,
)
from mel.checkpoints import OPTIMIZER_FILE
from mel.config import AlgorithmConfig, OptimizerConfig


@dataclass(frozen=True)
class UpdateBatch:
    prompt_ids: Sequence[Sequence[int]]
    completion_ids: Sequence[Sequence[int]]
    rewards: Sequence[float]
    group_ids: Sequence[int]
    sampling_logprobs: Sequence[Sequence[float]] | None = None
    """The engine's log-prob of each completion token as it sampled it (``Sample.logprobs``); with them the update
    measures the rollout/trainer drift (``logprob_drift_max``/``_mean``) on the log-probs it recomputes."""


@dataclass(frozen=True)
class ExperienceBatch:
    """The step's meta-experiences for the NLL term, laid out like (prompt, completion) pairs."""

    context_ids: Sequence[Sequence[int]]
    """C_retro_k's tokens: already chat-formatted, ending with the assistant header."""
    target_ids: Sequence[Sequence[int]]
    """M_k's tokens, scored after the context."""


def pad_batch(
    prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded prompt+completion batch, so every completion ends at the last column.

    Returns ``input_ids [n, S]``, ``attention_mask [n, S]``, ``position_ids [n, S]`` (counting from each
    sequence's first real token, as generation did) and ``completion_mask [n, Lc]`` over the last ``Lc`` columns
    (``Lc`` = longest completion): 1 where that column holds a completion token of the row."""
    seqs = [list(p) + list(c) for p, c in zip(prompt_ids, completion_ids)]
    width = max(len(s) for s in seqs)
    comp_width = max(max(len(c) for c in completion_ids), 1)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # [n, S]
    attention = torch.zeros((len(seqs), width), dtype=torch.long)  # [n, S]
    comp_mask = torch.zeros((len(seqs), comp_width), dtype=torch.float32)  # [n, Lc]
    for i, (c, s) in enumerate(zip(completion_ids, seqs)):
        input_ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        attention[i, width - len(s):] = 1
        comp_mask[i, comp_width - len(c):] = 1.0
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)  # [n, S]
    return input_ids, attention, position_ids, comp_mask


def token_logprobs(
    model,
    input_ids: torch.Tensor,  # [n, S] left-padded
    attention_mask: torch.Tensor,  # [n, S]
    position_ids: torch.Tensor,  # [n, S]
    comp_width: int,  # Lc: score only the last Lc tokens (the completions)
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob of each of the last ``Lc`` tokens ``[n, Lc]`` (and the policy entropy there, without grad).

    Only the ``Lc + 1`` last positions go through the LM head (``logits_to_keep``): prompt positions need no
    logits, which saves most of the vocabulary-sized work for short completions."""
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                logits_to_keep=comp_width + 1)
    logits = out.logits[:, :-1].float()  # [n, Lc, V] position t predicts token t+1
    logp_all = torch.log_softmax(logits / temperature, dim=-1)  # [n, Lc, V]
    targets = input_ids[:, -comp_width:]  # [n, Lc]
    logprobs = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [n, Lc]
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = -(logp_all.exp() * logp_all).sum(-1)  # [n, Lc]
    return logprobs, entropy


def make_optimizer(model, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


def load_optimizer_state(optimizer: torch.optim.Optimizer, checkpoint_dir: str | Path) -> bool:
    """Load a checkpoint's optimizer state (read on the CPU; ``load_state_dict`` moves each moment to its
    parameter's device)."""
    path = Path(checkpoint_dir) / OPTIMIZER_FILE
    if not path.exists():
        return False
    optimizer.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    return True


def _to_cpu(value):
    """``value`` (an optimizer state dict, nested) with every tensor on the CPU (CPU tensors as they are)."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def save_checkpoint(model, tokenizer, optimizer: torch.optim.Optimizer | None, out_dir: str | Path) -> None:
    """A Hugging Face model folder (loadable by transformers and vLLM) plus the optimizer state for resuming, both
    device-free: safetensors copies GPU weights to the CPU as it writes them, the optimizer state is copied here."""
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    if optimizer is not None:
        torch.save(_to_cpu(optimizer.state_dict()), Path(out_dir) / OPTIMIZER_FILE)


Padded = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # pad_batch's [n, S], [n, S], [n, S], [n, Lc]


@dataclass(frozen=True)
class UpdateResult:
    """What one policy update did (`policy_update`): means over its optimizer steps, the NLL ones over the steps that
    had experiences (0.0 if none)."""

    loss: float  # L_RL + lambda * L_NLL
    pg_loss: float
    kl: float
    clip_frac: float
    entropy: float
    grad_norm: float  # combined, before clipping
    grad_norm_rl: float
    grad_norm_nll: float
    nll_loss: float  # L_NLL
    nll_coef: float  # lambda
    nll_rl_grad_ratio: float | None  # ||lambda * g_NLL|| / ||g_RL|| (None: no step had both gradients)
    train_tokens_per_s: float
    logprob_drift_max: float | None  # |pi_old's log-prob as the trainer computes it - the rollout engine's|
    logprob_drift_mean: float | None  # (None: no sampling log-probs, or no token scored)
    lr: float
    num_kept_samples: int
    num_experiences: int
    experience_tokens: int
STAT_KEYS = ("loss", "pg_loss", "kl", "clip_frac", "entropy", "entropy_tokens", "tokens", "trained_tokens",
             "grad_norm", "grad_norm_rl", "grad_norm_nll", "nll_loss", "nll_coef", "steps", "nll_steps",
             "nll_rl_grad_ratio", "ratio_steps", "drift_sum", "drift_tokens", "drift_max")


@dataclass(frozen=True)
class _Samples:
    """The step's kept samples, padded (``pad_batch``), with what their loss needs."""

    padded: Padded
    advantages: torch.Tensor  # [N]
    old_logprobs: torch.Tensor | None  # [N, Lc] pi_old; None when pi_old is this very forward pass (one step)
    ref_logprobs: torch.Tensor | None  # [N, Lc] reference policy; None without a KL term
    sampling_logprobs: torch.Tensor | None = None  # [N, Lc] the rollout engine's; None when not given


def model_device(model) -> torch.device:
    """The device of ``model``'s parameters (where every tensor of its update goes)."""
    return next(model.parameters()).device


def _to_device(padded: Padded, device: torch.device) -> Padded:
    return tuple(t.to(device) for t in padded)  # type: ignore[return-value]


def _chunks(indices: list[int], size: int) -> list[list[int]]:
    return [indices[i : i + size] for i in range(0, len(indices), size)]


def _micro_batch(input_ids, attention, positions, comp_mask, rows: list[int]):
    """Rows of the padded batch, with the padding columns no row of this micro-batch uses trimmed off."""
    width = int(attention[rows].sum(-1).max())
    lc = max(int(comp_mask[rows].sum(-1).max()), 1)
    return (input_ids[rows, -width:], attention[rows, -width:], positions[rows, -width:], comp_mask[rows, -lc:], lc)


def _micro_logprobs(model, input_ids, attention, positions, comp_mask, rows: list[int], temperature: float):
    """Log-probs ``[m, Lc]`` of a micro-batch, left-padded back to the batch's full completion width."""
    ids, att, pos, _, lc = _micro_batch(input_ids, attention, positions, comp_mask, rows)
    logprobs, _ = token_logprobs(model, ids, att, pos, lc, temperature)
    return torch.nn.functional.pad(logprobs, (comp_mask.shape[1] - lc, 0))


def _kept_samples(batch: UpdateBatch, base: BaseAlgorithm) -> UpdateBatch:
    """The batch itself or, for rejection sampling (``passing_only``), only its samples with reward > 0."""
    if not base.passing_only:
        return batch
    keep = [i for i, r in enumerate(batch.rewards) if r > 0]
    sampling = None if batch.sampling_logprobs is None else [batch.sampling_logprobs[i] for i in keep]
    return UpdateBatch([batch.prompt_ids[i] for i in keep], [batch.completion_ids[i] for i in keep],
                       [batch.rewards[i] for i in keep], [batch.group_ids[i] for i in keep], sampling)


def pad_sampling_logprobs(sampling_logprobs: Sequence[Sequence[float]], comp_mask: torch.Tensor) -> torch.Tensor:
    """The engine's per-token log-probs laid out like ``comp_mask [N, Lc]`` (right-aligned, 0 in the padding)."""
    out = torch.zeros_like(comp_mask)  # [N, Lc]
    for i, row in enumerate(sampling_logprobs):
        if len(row) != int(comp_mask[i].sum()):
            raise ValueError(f"sample {i}: {len(row)} sampling log-probs for {int(comp_mask[i].sum())} completion "
                             "tokens")
        if row:
            out[i, comp_mask.shape[1] - len(row):] = torch.tensor(row, dtype=out.dtype)
    return out


def _prepare_samples(model, ref_model, batch: UpdateBatch, algo: AlgorithmConfig, base: BaseAlgorithm,
                     pad_id: int, temperature: float) -> _Samples | None:
    """Advantages, padding, and the frozen pi_old / reference log-probs of the kept samples (None if there are none)."""
    n = len(batch.rewards)
    if n == 0:
        return None
    rewards = torch.tensor(batch.rewards, dtype=torch.float32)  # [N]
    advantages = compute_advantages(base.advantage, rewards, torch.tensor(batch.group_ids),
                                    norm_by_std=algo.norm_by_std)  # [N]
    device = model_device(model)
    advantages = advantages.to(device)  # [N]
    padded = _to_device(pad_batch(batch.prompt_ids, batch.completion_ids, pad_id), device)
    single_step = algo.epochs == 1 and n <= algo.mini_batch_size
    micros = _chunks(list(range(n)), algo.micro_batch_size)
    old_logprobs = ref_logprobs = None
    with torch.no_grad():
        if not single_step:
            old_logprobs = torch.cat([_micro_logprobs(model, *padded, m, temperature) for m in micros])  # [N, Lc]
        if algo.kl_coef > 0:
            ref_logprobs = torch.cat([_micro_logprobs(ref_model, *padded, m, temperature) for m in micros])  # [N, Lc]
    sampling = None
    if batch.sampling_logprobs is not None:
        sampling = pad_sampling_logprobs(batch.sampling_logprobs, padded[3].cpu()).to(device)  # [N, Lc]
    return _Samples(padded, advantages, old_logprobs, ref_logprobs, sampling)


def _pad_experiences(experiences: ExperienceBatch | None, pad_id: int,
                     device: torch.device) -> tuple[Padded | None, int]:
    """The experiences that have M tokens, padded like (prompt, completion) pairs on ``device``, and their number of
    M tokens."""
    if experiences is None:
        return None, 0
    if len(experiences.context_ids) != len(experiences.target_ids):
        raise ValueError(f"ExperienceBatch has {len(experiences.context_ids)} contexts but "
                         f"{len(experiences.target_ids)} targets")
    keep = [k for k, t in enumerate(experiences.target_ids) if len(t) > 0]
    if not keep:
        return None, 0
    padded = pad_batch([experiences.context_ids[k] for k in keep], [experiences.target_ids[k] for k in keep], pad_id)
    return _to_device(padded, device), sum(len(experiences.target_ids[k]) for k in keep)


def _rl_backward(model, samples: _Samples, mini: list[int], algo: AlgorithmConfig, base: BaseAlgorithm,
                 temperature: float, max_len: int, totals: dict[str, float]) -> float:
    """Backward one mini-batch's RL loss over its micro-batches (gradients accumulate in ``.grad``); returns it."""
    input_ids, attention, positions, comp_mask = samples.padded
    policy_loss = POLICY_LOSSES.get(base.policy_loss)
    use_kl = algo.kl_coef > 0
    num_tokens = float(comp_mask[mini].sum())
    advantages = samples.advantages.tolist()  # one transfer, not one per sample
    active = [i for i in mini if use_kl or advantages[i] != 0]
    step_loss = 0.0
    for micro in _chunks(active, algo.micro_batch_size):
        ids, att, pos, mask, lc = _micro_batch(input_ids, attention, positions, comp_mask, micro)
        logprobs, entropy = token_logprobs(model, ids, att, pos, lc, temperature, with_entropy=True)  # [m, lc]
        old = logprobs.detach() if samples.old_logprobs is None else samples.old_logprobs[micro, -lc:]  # [m, lc]
        if samples.sampling_logprobs is not None:
            _add_drift(old, samples.sampling_logprobs[micro, -lc:], mask, totals)
        pg_mat, clip_frac = policy_loss(logprobs, old, samples.advantages[micro], mask, algo.clip_eps)  # [m, lc]
        loss_mat = pg_mat  # [m, lc]
        if use_kl:
            assert samples.ref_logprobs is not None  # computed whenever kl_coef > 0 (_prepare_samples)
            kl_mat = kl_k3(logprobs, samples.ref_logprobs[micro, -lc:], algo.kl_clamp)  # [m, lc]
            loss_mat = loss_mat + algo.kl_coef * kl_mat  # [m, lc]
            totals["kl"] += float((kl_mat.detach() * mask).sum())
        weights = loss_token_weights(algo.loss_agg, mask, len(mini), num_tokens, max_len)  # [m, lc]
        loss = (loss_mat * weights).sum()
        loss.backward()
        step_loss += float(loss.detach())
        totals["pg_loss"] += float((pg_mat.detach() * weights).sum())
        micro_tokens = float(mask.sum())
        totals["clip_frac"] += float(clip_frac) * micro_tokens
        totals["entropy"] += float((entropy * mask).sum())
        totals["entropy_tokens"] += micro_tokens
        totals["trained_tokens"] += int(att.sum())
    totals["tokens"] += num_tokens
    return step_loss


def _add_drift(trainer: torch.Tensor, engine: torch.Tensor, mask: torch.Tensor, totals: dict[str, float]) -> None:
    """Accumulate |trainer's pi_old log-prob - the engine's sampling log-prob| over the masked tokens ``[m, lc]``."""
    gap = (trainer.detach().float() - engine.float()).abs() * mask  # [m, lc]
    totals["drift_sum"] += float(gap.sum())
    totals["drift_tokens"] += float(mask.sum())
    totals["drift_max"] = max(totals["drift_max"], float(gap.max()) if gap.numel() else 0.0)


def _nll_backward(model, experiences: Padded, rows: list[int], micro_batch_size: int,
                  totals: dict[str, float]) -> float:
    """Backward L_NLL of the experiences ``rows`` (mean of their token-mean NLL) over micro-batches; returns it."""
    nll_loss = 0.0
    for micro in _chunks(rows, micro_batch_size):
        ids, att, pos, mask, lc = _micro_batch(*experiences, micro)
        logprobs, _ = token_logprobs(model, ids, att, pos, lc, temperature=1.0)  # [m, lc]
        loss = -(logprobs * nll_token_weights(mask, len(rows))).sum()
        loss.backward()
        nll_loss += float(loss.detach())
        totals["trained_tokens"] += int(att.sum())
    return nll_loss


def _global_norm(grads: list[torch.Tensor]) -> float:
    """L2 norm of all gradients together (as ``clip_grad_norm_`` measures it)."""
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g, 2.0) for g in grads]), 2.0))


def _add_nll_gradient(model, params: list[torch.Tensor], experiences: Padded, rows: list[int],
                      micro_batch_size: int, coef_fn, nll_coef: float, nll_grad_ratio: float,
                      totals: dict[str, float]) -> float:
    """Turn the RL gradient in ``.grad`` into ``g_RL + lambda * g_NLL`` of the experiences ``rows``; returns
    ``lambda * L_NLL``. The RL gradient is set aside while the NLL one accumulates, so each norm is measured alone."""
    rl_grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    for p in params:
        p.grad = None
    nll_loss = _nll_backward(model, experiences, rows, micro_batch_size, totals)
    nll_grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    rl_norm, nll_norm = _global_norm(rl_grads), _global_norm(nll_grads)
    coef = coef_fn(rl_norm, nll_norm, nll_grad_ratio, nll_coef)
    for p, g_rl, g_nll in zip(params, rl_grads, nll_grads):
        p.grad = g_nll.mul_(coef).add_(g_rl)
    totals["grad_norm_rl"] += rl_norm
    totals["grad_norm_nll"] += nll_norm
    # the measured ratio ||lambda * g_NLL|| / ||g_RL|| (what calibration sets, what a fixed lambda gets)
    if rl_norm > 0:
        totals["nll_rl_grad_ratio"] += coef * nll_norm / rl_norm
        totals["ratio_steps"] += 1
    totals["nll_loss"] += nll_loss
    totals["nll_coef"] += coef
    totals["nll_steps"] += 1
    return coef * nll_loss


def policy_update(
    model,
    optimizer: torch.optim.Optimizer,
    batch: UpdateBatch,
    algo: AlgorithmConfig,
    opt: OptimizerConfig,
    *,
    pad_id: int,
    temperature: float,
    max_len: int,
    seed: int,
    ref_model=None,
    experiences: ExperienceBatch | None = None,
    nll_coef: float = 0.0,
    nll_coef_mode: str = "fixed",
    nll_grad_ratio: float = 0.1,
) -> UpdateResult:
    """Run the step's optimizer steps on ``model`` in place; returns the step's loss and diagnostics.

    ``experiences`` adds ``lambda * L_NLL`` to the steps they are dealt to: lambda is ``nll_coef``
    (``nll_coef_mode="fixed"``) or, per step, the value that makes ``||lambda * g_NLL|| = nll_grad_ratio *
    ||g_RL||`` (``"calibrated"``, falling back to ``nll_coef`` when either gradient is zero).

    Stats (means over optimizer steps; the NLL ones over the steps that had experiences, 0.0 if none): ``loss``
    (L_RL + lambda * L_NLL), ``pg_loss``, ``kl``, ``clip_frac``, ``entropy``, ``grad_norm`` (combined, before
    clipping), ``grad_norm_rl``, ``grad_norm_nll``, ``nll_rl_grad_ratio`` (||lambda * g_NLL|| / ||g_RL||, the
    norm ratio the papers calibrate lambda by, measured in either mode; None when no step had both gradients),
    ``nll_loss`` (L_NLL), ``nll_coef`` (lambda), ``lr``,
    ``train_tokens_per_s``, ``logprob_drift_max`` and ``logprob_drift_mean`` (|pi_old's log-prob as the trainer
    computes it - the rollout engine's| over the tokens the update scores, when ``batch.sampling_logprobs`` is given:
    samples with a non-zero advantage, or all with a KL term; None otherwise), and the counts ``num_kept_samples``,
    ``num_experiences``, ``experience_tokens``."""
    base = BASE_ALGORITHMS.get(algo.name)
    coef_fn = NLL_COEF_MODES.get(nll_coef_mode)
    if algo.kl_coef > 0 and ref_model is None:
        raise ValueError("algorithm.kl_coef > 0 needs a reference model")
    kept = _kept_samples(batch, base)
    n = len(kept.rewards)
    exp_padded, exp_tokens = _pad_experiences(experiences, pad_id, model_device(model))
    num_exp = 0 if exp_padded is None else int(exp_padded[0].shape[0])
    generator = torch.Generator().manual_seed(seed)  # CPU: the same mini-batches on every device

    model.train()
    samples = _prepare_samples(model, ref_model, kept, algo, base, pad_id, temperature)
    params = [p for p in model.parameters() if p.requires_grad]
    totals = dict.fromkeys(STAT_KEYS, 0.0)
    t0 = time.perf_counter()
    for _ in range(algo.epochs):
        order = torch.randperm(n, generator=generator).tolist()
        minis = _chunks(order, algo.mini_batch_size) or [[]]  # no kept sample: one step with no RL signal
        for j, mini in enumerate(minis):
            # zeros, not None: AdamW still steps (momentum) on a batch with no signal
            optimizer.zero_grad(set_to_none=False)
            # samples is None only when no sample is kept: then the one mini-batch is empty
            step_loss = (_rl_backward(model, cast(_Samples, samples), mini, algo, base, temperature, max_len, totals)
                         if mini else 0.0)
            rows = list(range(j, num_exp, len(minis)))  # experiences dealt round-robin over the mini-batches
            if rows:
                # rows only when num_exp > 0, i.e. when exp_padded is set
                step_loss += _add_nll_gradient(model, params, cast(Padded, exp_padded), rows, algo.micro_batch_size,
                                               coef_fn, nll_coef, nll_grad_ratio, totals)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, opt.grad_clip if opt.grad_clip > 0 else math.inf)
            optimizer.step()
            if not rows:
                totals["grad_norm_rl"] += float(grad_norm)
            totals["grad_norm"] += float(grad_norm)
            totals["loss"] += step_loss
            totals["steps"] += 1
    elapsed = time.perf_counter() - t0
    model.eval()
    return UpdateResult(**_summarize(totals, algo.kl_coef > 0, elapsed), lr=optimizer.param_groups[0]["lr"],
                        num_kept_samples=n, num_experiences=num_exp, experience_tokens=exp_tokens)


def _summarize(totals: dict[str, float], use_kl: bool, elapsed: float) -> dict[str, Any]:
    """Per-step means of the accumulated totals (NLL ones over the steps that had experiences)."""
    steps, nll_steps = totals["steps"], max(totals["nll_steps"], 1.0)
    entropy_tokens = max(totals["entropy_tokens"], 1.0)
    return {
        "loss": totals["loss"] / steps,
        "pg_loss": totals["pg_loss"] / steps,
        "kl": totals["kl"] / max(totals["tokens"], 1.0) if use_kl else 0.0,
        "clip_frac": totals["clip_frac"] / entropy_tokens,
        "grad_norm": totals["grad_norm"] / steps,
        "grad_norm_rl": totals["grad_norm_rl"] / steps,
        "grad_norm_nll": totals["grad_norm_nll"] / nll_steps,
        "nll_loss": totals["nll_loss"] / nll_steps,
        "nll_coef": totals["nll_coef"] / nll_steps,
        "nll_rl_grad_ratio": (totals["nll_rl_grad_ratio"] / totals["ratio_steps"]) if totals["ratio_steps"] else None,
        "entropy": totals["entropy"] / entropy_tokens,
        "train_tokens_per_s": totals["trained_tokens"] / elapsed if elapsed > 0 else 0.0,
        # rollout/trainer drift over the tokens whose log-probs the update computed (None without them)
        "logprob_drift_max": totals["drift_max"] if totals["drift_tokens"] else None,
        "logprob_drift_mean": totals["drift_sum"] / totals["drift_tokens"] if totals["drift_tokens"] else None,
    }
