"""rightfocus.data: datasets yielding ``(image, label, mask)`` and the evaluation splits.

Importing this package registers every built-in dataset in :data:`rightfocus.DATASETS`.
"""

from rightfocus.data import classification as _classification  # noqa: F401  (registers)
from rightfocus.data import decoy_mnist as _decoy_mnist  # noqa: F401  (registers)
from rightfocus.data import masked as _masked  # noqa: F401  (registers)
from rightfocus.data.base import MaskedTensorDataset
from rightfocus.data.decoy_mnist import DecoyMNIST, make_decoy_mnist
from rightfocus.data.folders import ImageFolderDataset, MaskedImageFolder, PairedImageDataset
from rightfocus.data.masked import ISIC, OxfordPetMasks, SBDMasks
from rightfocus.data.mnist import bundled_mnist, load_mnist
from rightfocus.data.splits import (
    FeedbackSubset,
    class_balanced_weights,
    class_weights,
    fold_subsets,
    kfold_split,
)
from rightfocus.data.transforms import IMAGENET_NORMALIZATION, PairedTransform

__all__ = [
    "IMAGENET_NORMALIZATION",
    "ISIC",
    "DecoyMNIST",
    "FeedbackSubset",
    "ImageFolderDataset",
    "MaskedImageFolder",
    "MaskedTensorDataset",
    "OxfordPetMasks",
    "PairedImageDataset",
    "PairedTransform",
    "SBDMasks",
    "bundled_mnist",
    "class_balanced_weights",
    "class_weights",
    "fold_subsets",
    "kfold_split",
    "load_mnist",
    "make_decoy_mnist",
]
