"""What a trained state is, in a few bytes: the fingerprint a step records when it keeps its weights in memory
instead of writing a checkpoint (``run.checkpoint_every``), and that a resume checks when it recomputes that step.

On the CPU the kernels are deterministic, so the fingerprint is exact: a SHA-256 of every weight's bytes, and one of
the optimizer state's (AdamW's moments and step counts), in parameter order (each tensor hashed on its own, on torch's
threads, then the list of their hashes). CUDA kernels are not bit-reproducible
(atomics in reductions), so there it is the float64 norm of each weight and each optimizer tensor (computed on the
GPU, no copy to the host) and two fingerprints are compared by their largest relative difference.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

__all__ = ["Fingerprint", "fingerprint"]


@dataclass(frozen=True)
class Fingerprint:
    weights: str | list[float]  # SHA-256 hex (exact) or per-tensor norms
    optimizer: str | list[float]

    @property
    def exact(self) -> bool:
        return isinstance(self.weights, str)

    def to_record(self) -> dict:
        return {"weights": self.weights, "optimizer": self.optimizer}

    @classmethod
    def from_record(cls, record: dict) -> "Fingerprint":
        return cls(weights=record["weights"], optimizer=record["optimizer"])

    def difference(self, other: "Fingerprint") -> float:
        """0.0 when equal; exact fingerprints that differ give ``inf``; norms give their largest relative
        difference (``inf`` when they are not the same list of tensors)."""
        if self.exact or other.exact:
            return 0.0 if self == other else float("inf")
        mine, theirs = [*self.weights, *self.optimizer], [*other.weights, *other.optimizer]  # type: ignore[misc]
        if len(mine) != len(theirs) or len(self.weights) != len(other.weights):
            return float("inf")
        return max((abs(a - b) / max(abs(a), abs(b), 1e-30) for a, b in zip(mine, theirs)), default=0.0)


def _tensors(optimizer: torch.optim.Optimizer | None) -> list[torch.Tensor]:
    if optimizer is None:
        return []
    state = optimizer.state_dict()["state"]
    return [v for i in sorted(state) for _, v in sorted(state[i].items()) if isinstance(v, torch.Tensor)]


def _sha_one(t: torch.Tensor) -> bytes:
    return hashlib.sha256(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().data).digest()


def _sha(tensors: list[torch.Tensor]) -> str:
    """SHA-256 over the tensors' own SHA-256s, in order (hashed on torch's threads: hashlib lets go of the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
        return hashlib.sha256(b"".join(pool.map(_sha_one, tensors))).hexdigest()


def _norms(tensors: list[torch.Tensor]) -> list[float]:
    return [float(torch.linalg.vector_norm(t.detach(), dtype=torch.float64)) for t in tensors]


def fingerprint(model, optimizer: torch.optim.Optimizer | None) -> Fingerprint:
    """The fingerprint of ``model``'s weights and ``optimizer``'s state: exact on the CPU, norms on an accelerator."""
    weights = [p for _, p in model.named_parameters()]
    moments = _tensors(optimizer)
    if all(t.device.type == "cpu" for t in weights):
        return Fingerprint(weights=_sha(weights), optimizer=_sha([t.cpu() for t in moments]))
    return Fingerprint(weights=_norms(weights), optimizer=_norms(moments))
