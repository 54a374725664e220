"""Representation similarity: linear centred kernel alignment (Kornblith et al. 2019).

``CKA(X, Y) = ||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)`` for activations
``X (n, p)``, ``Y (n, q)`` of the same ``n`` inputs, columns centred. It equals
``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with linear kernels ``K = X X^T``, ``L = Y Y^T``;
it is invariant to orthogonal transforms and isotropic scaling, and 1 for identical inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["cka_matrix", "linear_cka"]


def _flat(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[0] < 2:
        raise ValueError(
            f"{name} must be activations of shape (n >= 2, ...), got {getattr(x, 'shape', x)}"
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    x = x.flatten(1).double()
    return x - x.mean(dim=0, keepdim=True)


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA between two layers' activations on the same inputs."""
    xc, yc = _flat(x, "x"), _flat(y, "y")
    if xc.shape[0] != yc.shape[0]:
        raise ValueError(f"x has {xc.shape[0]} samples but y has {yc.shape[0]}")
    cross = (yc.T @ xc).norm() ** 2
    return float(cross / ((xc.T @ xc).norm() * (yc.T @ yc).norm() + 1e-12))


def cka_matrix(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """``(len(a), len(b))`` linear CKA between every pair of layers."""
    return torch.tensor([[linear_cka(x, y) for y in b] for x in a], dtype=torch.float64)
