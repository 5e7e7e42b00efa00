"""The meta-experience internalization term (MEL eq. 7; MEL-Code eq. 2-3) and its weight.

For K meta-experiences M_k, each scored after its retrospective context C_retro_k,

    L_NLL = - 1/K * sum_k [ 1/|M_k| * sum_t log pi(M_k,t | C_retro_k, M_k,<t) ]

(each experience token-averaged by its own length, then averaged over experiences), and the step minimizes
``L_RL + lambda * L_NLL``. ``lambda`` is either fixed (``mel.nll_coef``) or calibrated per optimizer step so that the
NLL gradient's norm is a fixed fraction of the RL gradient's (``calibrated_coef``); the modes are registered in
``NLL_COEF_MODES``.

Departures from the papers: the calibrated lambda is ours (the papers use a fixed lambda: MEL 1, MEL-Code 0.004);
it falls back to the fixed value when either gradient is zero. An experience with no M tokens contributes 0 here
(``mel.update`` drops such experiences before they are counted).
"""
from __future__ import annotations

from typing import Callable

import torch

from mel.registry import Registry


def sequence_nll(
    logprobs: torch.Tensor,  # [K, L] log pi of each target token (anything where mask is 0)
    mask: torch.Tensor,  # [K, L] 1 on the target (M) tokens
) -> torch.Tensor:  # [K]
    """Each experience's token-mean NLL (0 for an experience with no tokens)."""
    mask = mask.to(logprobs.dtype)  # [K, L]
    lengths = mask.sum(-1).clamp(min=1)  # [K]
    return -(logprobs * mask).sum(-1) / lengths  # [K]


def nll_token_weights(
    mask: torch.Tensor,  # [m, L] target mask of this micro-batch of experiences
    num_experiences: int,  # experiences in the whole optimizer step
) -> torch.Tensor:  # [m, L]
    """Weights w with ``sum(-(logprobs * w))`` over a step's micro-batches == mean of ``sequence_nll`` over the step."""
    mask = mask.to(torch.float32)  # [m, L]
    lengths = mask.sum(-1, keepdim=True).clamp(min=1)  # [m, 1]
    return mask / lengths / max(num_experiences, 1)  # [m, L]


def calibrated_coef(rl_grad_norm: float, nll_grad_norm: float, ratio: float, fallback: float) -> float:
    """lambda with ``lambda * nll_grad_norm == ratio * rl_grad_norm``; ``fallback`` when either norm is 0."""
    if rl_grad_norm == 0 or nll_grad_norm == 0:
        return float(fallback)
    return float(ratio * rl_grad_norm / nll_grad_norm)


CoefFn = Callable[[float, float, float, float], float]
NLL_COEF_MODES: Registry[CoefFn] = Registry("nll coefficient mode")
"""``(rl_grad_norm, nll_grad_norm, ratio, nll_coef) -> lambda`` for one optimizer step."""


@NLL_COEF_MODES.register("fixed")
def _fixed_coef(rl_grad_norm: float, nll_grad_norm: float, ratio: float, nll_coef: float) -> float:
    return float(nll_coef)


@NLL_COEF_MODES.register("calibrated")
def _calibrated(rl_grad_norm: float, nll_grad_norm: float, ratio: float, nll_coef: float) -> float:
    return calibrated_coef(rl_grad_norm, nll_grad_norm, ratio, fallback=nll_coef)
