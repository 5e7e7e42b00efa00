"""Policy-gradient loss pieces, as in the papers.

- Policy losses (``POLICY_LOSSES``), each ``(logprobs, old_logprobs, advantages, mask, clip_eps) -> (loss [N, L],
  clip_frac)``:
    clipped   ``clipped_policy_loss``: PPO's clipped surrogate used by GRPO and REINFORCE++, per token:
                  ratio = exp(logp - logp_old);  L = -min(ratio * A, clip(ratio, 1-eps, 1+eps) * A)
    nll       ``nll_policy_loss``: RFT's advantage-weighted negative log-likelihood, per token L = -A * logp (no
              ratio, no clipping: clip_frac is 0). With 0/1 advantages it is the NLL of the passing samples.
- ``kl_k3``: Schulman's k3 estimator of KL(pi || pi_ref), per token: exp(ref - logp) - (ref - logp) - 1 (>= 0).
- Aggregations over a batch of per-token losses (``LOSS_AGGREGATIONS``):
    token-mean                sum over all tokens / number of tokens (DAPO; our default)
    seq-mean-token-mean       mean over sequences of each sequence's token mean (the GRPO paper's 1/G sum 1/|o_i|)
    seq-mean-token-sum-norm   sum over all tokens / (number of sequences * max_len) (Dr.GRPO: a constant normalizer)
  Each is written as per-token weights (``loss_token_weights``) so that the loss of a mini-batch split into
  micro-batches for gradient accumulation is exactly the loss of the whole mini-batch.
Departures from the GRPO paper: the KL term is added to the loss with the same aggregation as the policy term (the
paper's formula averages both the same way, so this is the same for seq-mean-token-mean).
"""
from __future__ import annotations

from typing import Callable

import torch

from mel.registry import Registry

WeightFn = Callable[[torch.Tensor, int, float, int], torch.Tensor]
LOSS_AGGREGATIONS: Registry[WeightFn] = Registry("loss aggregation")
PolicyLossFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]
POLICY_LOSSES: Registry[PolicyLossFn] = Registry("policy loss")


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over positions where ``mask`` is 1 (0 if the mask is empty)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


@POLICY_LOSSES.register("clipped")
def clipped_policy_loss(
    logprobs: torch.Tensor,  # [N, L] log pi_theta(token) of the sampled tokens
    old_logprobs: torch.Tensor,  # [N, L] log pi_old(token), no grad
    advantages: torch.Tensor,  # [N] one advantage per sequence
    mask: torch.Tensor,  # [N, L] 1 on completion tokens
    clip_eps: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token clipped surrogate loss ``[N, L]`` and the fraction of masked tokens where clipping was active."""
    ratio = torch.exp(logprobs - old_logprobs)  # [N, L]
    adv = advantages.unsqueeze(-1)  # [N, 1]
    unclipped = ratio * adv  # [N, L]
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv  # [N, L]
    loss = -torch.minimum(unclipped, clipped)  # [N, L]
    clip_active = (clipped < unclipped).to(logprobs.dtype)  # [N, L] the min picked the clipped term
    return loss, masked_mean(clip_active.detach(), mask)


@POLICY_LOSSES.register("nll")
def nll_policy_loss(
    logprobs: torch.Tensor,  # [N, L] log pi_theta(token) of the sampled tokens
    old_logprobs: torch.Tensor,  # [N, L] ignored (no importance ratio)
    advantages: torch.Tensor,  # [N] one weight per sequence (RFT: 1 passing, 0 failing)
    mask: torch.Tensor,  # [N, L] 1 on completion tokens
    clip_eps: float = 0.2,  # ignored
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token advantage-weighted NLL ``[N, L]`` and a clip fraction of 0 (nothing is clipped)."""
    loss = -logprobs * advantages.unsqueeze(-1)  # [N, L]
    return loss, torch.zeros((), dtype=logprobs.dtype)


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, clamp: float | None = None) -> torch.Tensor:
    """k3 estimate of KL(pi || pi_ref) per token, ``[N, L]``; clamped log-ratio for numerical safety. ``clamp``: the
    estimate itself clamped to [-clamp, clamp] (verl's ``low_var_kl`` clamps it at 10; where it binds, the token's KL
    gradient is 0); None: not clamped."""
    log_ratio = torch.clamp(ref_logprobs - logprobs, -20.0, 20.0)  # [N, L]
    kl = torch.exp(log_ratio) - log_ratio - 1.0  # [N, L]
    return kl if clamp is None else torch.clamp(kl, -clamp, clamp)  # [N, L]


@LOSS_AGGREGATIONS.register("token-mean")
def _token_mean(mask: torch.Tensor, num_sequences: int, num_tokens: float, max_len: int) -> torch.Tensor:
    return mask / max(num_tokens, 1.0)  # [n, L]


@LOSS_AGGREGATIONS.register("seq-mean-token-mean")
def _seq_mean_token_mean(mask: torch.Tensor, num_sequences: int, num_tokens: float, max_len: int) -> torch.Tensor:
    lengths = mask.sum(-1, keepdim=True).clamp(min=1)  # [n, 1]
    return mask / lengths / num_sequences  # [n, L]


@LOSS_AGGREGATIONS.register("seq-mean-token-sum-norm")
def _seq_mean_token_sum_norm(mask: torch.Tensor, num_sequences: int, num_tokens: float, max_len: int) -> torch.Tensor:
    return mask / (num_sequences * max_len)  # [n, L]


def loss_token_weights(
    mode: str,
    mask: torch.Tensor,  # [n, L] mask of this micro-batch
    num_sequences: int,  # sequences in the whole mini-batch
    num_tokens: float,  # masked tokens in the whole mini-batch
    max_len: int,  # generation budget (Dr.GRPO's constant)
) -> torch.Tensor:  # [n, L]
    """Per-token weights w with ``loss = sum(w * per_token_loss)`` over the micro-batches of one mini-batch."""
    return LOSS_AGGREGATIONS.get(mode)(mask.to(torch.float32), num_sequences, float(num_tokens), max_len)


def aggregate_loss(loss_mat: torch.Tensor, mask: torch.Tensor, mode: str, max_len: int | None = None) -> torch.Tensor:
    """Aggregate per-token losses ``[N, L]`` of one whole batch into a scalar."""
    weights = loss_token_weights(mode, mask, loss_mat.shape[0], float(mask.sum()), max_len or loss_mat.shape[1])
    return (loss_mat * weights).sum()
