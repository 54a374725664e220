"""Input validation shared by the metric functions."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_labels", "check_probs", "check_same_batch"]


def _finite(x: Tensor, name: str) -> None:
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf values")


def check_probs(probs: Tensor, name: str = "probs", atol: float = 1e-3) -> Tensor:
    """A non-empty ``(N, K)`` tensor of probabilities whose rows sum to 1."""
    if not isinstance(probs, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, not {type(probs).__name__}")
    if probs.dim() != 2 or probs.shape[0] == 0 or probs.shape[1] < 2:
        raise ValueError(
            f"{name} must have shape (N, K) with N >= 1, K >= 2; got {tuple(probs.shape)}"
        )
    _finite(probs, name)
    if bool((probs < 0).any()) or bool((probs > 1).any()):
        raise ValueError(f"{name} must lie in [0, 1]; pass softmax probabilities, not logits")
    sums = probs.sum(dim=1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=atol):
        worst = float((sums - 1).abs().max())
        raise ValueError(
            f"{name} rows must sum to 1 (worst deviation {worst:.3g}); apply softmax first"
        )
    return probs


def check_labels(y: Tensor, n: int, num_classes: int | None = None) -> Tensor:
    """A ``(N,)`` integer label tensor matching ``n`` samples (and ``num_classes``)."""
    if not isinstance(y, Tensor):
        raise TypeError(f"labels must be a torch.Tensor, not {type(y).__name__}")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, got {y.dtype}")
    if y.dim() != 1 or y.shape[0] != n:
        raise ValueError(
            f"labels must have shape ({n},) to match the predictions, got {tuple(y.shape)}"
        )
    if num_classes is not None and n and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    return y


def check_same_batch(a: Tensor, b: Tensor, names: tuple[str, str]) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{names[0]} has {a.shape[0]} samples but {names[1]} has {b.shape[0]}")
    if a.shape[0] == 0:
        raise ValueError(f"{names[0]} is an empty batch")
