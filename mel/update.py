"""The policy update of one RL step: GRPO's clipped surrogate (+ optional k3 KL), AdamW, grad clipping, mini-batches.

``policy_update`` takes the step's samples (prompt ids, completion ids, rewards, group ids), computes advantages
(``mel.algos``), and runs ``epochs`` passes of shuffled mini-batches, each split into micro-batches for gradient
accumulation, with per-token loss weights chosen so that the accumulated gradient equals the whole mini-batch's.

Departures from the GRPO paper, all standard in its implementations:
- pi_old is the policy that sampled the step; when the update is a single optimizer step (one epoch, one
  mini-batch), pi_old's log-probs are the detached log-probs of the same forward pass (identical values), which saves
  a forward pass.
- Samples with advantage 0 (groups whose samples all got the same reward) contribute exactly zero policy loss; when
  there is no KL term their forward/backward is skipped, while their tokens still count in the loss normalizers, so
  the gradient is unchanged.
- Log-probs are computed at the sampling temperature (logits / T), as the sampler drew them.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from mel.algos import clipped_policy_loss, compute_advantages, kl_k3, loss_token_weights
from mel.config import AlgorithmConfig, OptimizerConfig

OPTIMIZER_FILE = "optimizer.pt"


@dataclass(frozen=True)
class UpdateBatch:
    prompt_ids: Sequence[Sequence[int]]
    completion_ids: Sequence[Sequence[int]]
    rewards: Sequence[float]
    group_ids: Sequence[int]


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
    path = Path(checkpoint_dir) / OPTIMIZER_FILE
    if not path.exists():
        return False
    optimizer.load_state_dict(torch.load(path, weights_only=True))
    return True


def save_checkpoint(model, tokenizer, optimizer: torch.optim.Optimizer | None, out_dir: str | Path) -> None:
    """A Hugging Face model folder (loadable by transformers and vLLM) plus the optimizer state for resuming."""
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    if optimizer is not None:
        torch.save(optimizer.state_dict(), Path(out_dir) / OPTIMIZER_FILE)


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
) -> dict[str, float]:
    """Run the step's optimizer steps on ``model`` in place; returns the step's loss and diagnostics."""
    n = len(batch.rewards)
    rewards = torch.tensor(batch.rewards, dtype=torch.float32)  # [N]
    advantages = compute_advantages(algo.advantage, rewards, torch.tensor(batch.group_ids),
                                    norm_by_std=algo.norm_by_std)  # [N]
    input_ids, attention, positions, comp_mask = pad_batch(batch.prompt_ids, batch.completion_ids, pad_id)
    use_kl = algo.kl_coef > 0
    if use_kl and ref_model is None:
        raise ValueError("algorithm.kl_coef > 0 needs a reference model")
    generator = torch.Generator().manual_seed(seed)
    single_step = algo.epochs == 1 and n <= algo.mini_batch_size

    model.train()
    old_logprobs = ref_logprobs = None
    with torch.no_grad():
        if not single_step:
            old_logprobs = torch.cat([
                _micro_logprobs(model, input_ids, attention, positions, comp_mask, m, temperature)
                for m in _chunks(list(range(n)), algo.micro_batch_size)
            ])  # [N, Lc]
        if use_kl:
            ref_logprobs = torch.cat([
                _micro_logprobs(ref_model, input_ids, attention, positions, comp_mask, m, temperature)
                for m in _chunks(list(range(n)), algo.micro_batch_size)
            ])  # [N, Lc]

    totals = {"loss": 0.0, "pg_loss": 0.0, "kl": 0.0, "clip_frac": 0.0, "entropy": 0.0, "grad_norm": 0.0}
    token_total = entropy_tokens = 0.0
    opt_steps = 0
    trained_tokens = 0
    t0 = time.perf_counter()
    for _ in range(algo.epochs):
        order = torch.randperm(n, generator=generator).tolist()
        for mini in _chunks(order, algo.mini_batch_size):
            optimizer.zero_grad(set_to_none=False)  # zeros, not None: AdamW still steps (momentum) on a batch with no signal
            num_tokens = float(comp_mask[mini].sum())
            active = [i for i in mini if use_kl or advantages[i] != 0]
            step_loss = 0.0
            for micro in _chunks(active, algo.micro_batch_size):
                ids, att, pos, mask, lc = _micro_batch(input_ids, attention, positions, comp_mask, micro)
                logprobs, entropy = token_logprobs(model, ids, att, pos, lc, temperature, with_entropy=True)  # [m, lc]
                old = logprobs.detach() if single_step else old_logprobs[micro, -lc:]  # [m, lc]
                pg_mat, clip_frac = clipped_policy_loss(logprobs, old, advantages[micro], mask, algo.clip_eps)
                loss_mat = pg_mat  # [m, lc]
                if use_kl:
                    kl_mat = kl_k3(logprobs, ref_logprobs[micro, -lc:])  # [m, lc]
                    loss_mat = loss_mat + algo.kl_coef * kl_mat
                    totals["kl"] += float((kl_mat.detach() * mask).sum())
                weights = loss_token_weights(algo.loss_agg, mask, len(mini), num_tokens, max_len)  # [m, lc]
                loss = (loss_mat * weights).sum()
                loss.backward()
                step_loss += float(loss.detach())
                totals["pg_loss"] += float((pg_mat.detach() * weights).sum())
                micro_tokens = float(mask.sum())
                totals["clip_frac"] += float(clip_frac) * micro_tokens
                totals["entropy"] += float((entropy * mask).sum())
                entropy_tokens += micro_tokens
                trained_tokens += int(att.sum())
            token_total += num_tokens
            params = [p for p in model.parameters() if p.requires_grad]
            grad_norm = torch.nn.utils.clip_grad_norm_(params, opt.grad_clip if opt.grad_clip > 0 else math.inf)
            optimizer.step()
            totals["grad_norm"] += float(grad_norm)
            totals["loss"] += step_loss
            opt_steps += 1
    elapsed = time.perf_counter() - t0
    model.eval()
    return {
        "loss": totals["loss"] / opt_steps,
        "pg_loss": totals["pg_loss"] / opt_steps,
        "kl": totals["kl"] / max(token_total, 1.0) if use_kl else 0.0,
        "clip_frac": totals["clip_frac"] / max(entropy_tokens, 1.0),
        "grad_norm": totals["grad_norm"] / opt_steps,
        "entropy": totals["entropy"] / max(entropy_tokens, 1.0),
        "lr": optimizer.param_groups[0]["lr"],
        "train_tokens_per_s": trained_tokens / elapsed if elapsed > 0 else 0.0,
    }
