"""The pure RL math: advantages, policy loss, KL estimate, loss aggregation. Tensors in, tensors out; no I/O."""
from mel.algos.advantages import ADVANTAGE_ESTIMATORS, compute_advantages, grpo_advantages
from mel.algos.losses import (
    LOSS_AGGREGATIONS,
    aggregate_loss,
    clipped_policy_loss,
    kl_k3,
    loss_token_weights,
    masked_mean,
)

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "LOSS_AGGREGATIONS",
    "aggregate_loss",
    "clipped_policy_loss",
    "compute_advantages",
    "grpo_advantages",
    "kl_k3",
    "loss_token_weights",
    "masked_mean",
]
