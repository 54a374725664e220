"""rightfocus.data: datasets yielding ``(image, label, mask)`` and the evaluation splits.

Importing this package registers every built-in dataset in :data:`rightfocus.DATASETS`.
"""

from rightfocus.data import decoy_mnist as _decoy_mnist  # noqa: F401  (registers datasets)
from rightfocus.data.base import MaskedTensorDataset
from rightfocus.data.decoy_mnist import DecoyMNIST, make_decoy_mnist
from rightfocus.data.mnist import bundled_mnist, load_mnist
from rightfocus.data.splits import (
    FeedbackSubset,
    class_balanced_weights,
    class_weights,
    fold_subsets,
    kfold_split,
)

__all__ = [
    "DecoyMNIST",
    "FeedbackSubset",
    "MaskedTensorDataset",
    "bundled_mnist",
    "class_balanced_weights",
    "class_weights",
    "fold_subsets",
    "kfold_split",
    "load_mnist",
    "make_decoy_mnist",
]
