"""Base RL algorithms (MEL section 4.4 composes meta-experience learning with each), registered by name.

A base algorithm is a choice of advantage estimator (``ADVANTAGE_ESTIMATORS``), per-token policy loss
(``POLICY_LOSSES``) and sample filter; the update (``mel.update.policy_update``) looks everything up from here.

    grpo           group-normalized advantages, PPO clipped surrogate (Shao et al., 2024)
    reinforce_pp   batch-normalized advantages, PPO clipped surrogate (REINFORCE++, Hu 2025)
    rft            rejection sampling fine-tuning: NLL of the passing samples only (advantage 1, no ratio)

Departures from the papers:
- REINFORCE++: outcome reward only; its KL to the reference policy is the k3 loss term (``kl_coef``, shared by all
  algorithms), not a per-token penalty folded into the reward; see ``mel.algos.advantages`` for the normalization.
- RFT: rejection sampling is done over the step's on-policy rollouts (no separate offline sampling round), and the
  passing samples' NLL is aggregated by the configured ``loss_agg`` (token-mean by default) over the kept samples
  only; the optional KL term and the epochs/mini-batch schedule are the same as for the RL algorithms.
"""
from __future__ import annotations

from dataclasses import dataclass

from mel.registry import Registry


@dataclass(frozen=True)
class BaseAlgorithm:
    advantage: str
    """Advantage estimator (``ADVANTAGE_ESTIMATORS``)."""
    policy_loss: str
    """Per-token policy loss (``POLICY_LOSSES``)."""
    passing_only: bool
    """Drop samples with reward <= 0 before anything else (rejection sampling): the loss normalizers count only the
    kept samples, and with none kept the RL term is zero."""


BASE_ALGORITHMS: Registry[BaseAlgorithm] = Registry("base algorithm")
BASE_ALGORITHMS.register("grpo")(BaseAlgorithm(advantage="grpo", policy_loss="clipped", passing_only=False))
BASE_ALGORITHMS.register("reinforce_pp")(
    BaseAlgorithm(advantage="reinforce_pp", policy_loss="clipped", passing_only=False))
BASE_ALGORITHMS.register("rft")(BaseAlgorithm(advantage="rejection", policy_loss="nll", passing_only=True))
