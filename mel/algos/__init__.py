"""The pure RL math: advantages, policy losses, base algorithms, KL estimate, loss aggregation, the NLL term.
Tensors in, tensors out; no I/O."""
from mel.algos.advantages import (
    ADVANTAGE_ESTIMATORS,
    compute_advantages,
    grpo_advantages,
    reinforce_pp_advantages,
    rejection_advantages,
)
from mel.algos.base import BASE_ALGORITHMS, BaseAlgorithm
from mel.algos.losses import (
    LOSS_AGGREGATIONS,
    POLICY_LOSSES,
    aggregate_loss,
    clipped_policy_loss,
    kl_k3,
    loss_token_weights,
    masked_mean,
    nll_policy_loss,
)
from mel.algos.nll import NLL_COEF_MODES, calibrated_coef, nll_token_weights, sequence_nll

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "BASE_ALGORITHMS",
    "LOSS_AGGREGATIONS",
    "NLL_COEF_MODES",
    "POLICY_LOSSES",
    "BaseAlgorithm",
    "aggregate_loss",
    "calibrated_coef",
    "clipped_policy_loss",
    "compute_advantages",
    "grpo_advantages",
    "kl_k3",
    "loss_token_weights",
    "masked_mean",
    "nll_policy_loss",
    "nll_token_weights",
    "reinforce_pp_advantages",
    "rejection_advantages",
    "sequence_nll",
]
