"""Splits for the evaluation protocol: k-fold CV over the train pool, feedback fraction, weights.

The protocol of "Regularizing Explanations in Bayesian CNNs": 3-fold cross-validation over
train+val (one model per fold), each model tested on the independent test set (the dataset
factory's ``split="test"``, which never enters a fold); only 70 % of the training samples keep
their explanation mask (``remove_exp = 0.3``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

__all__ = [
    "FeedbackSubset",
    "class_balanced_weights",
    "class_weights",
    "dataset_fold",
    "dataset_labels",
    "fold_subsets",
    "kfold_split",
    "stored_labels",
]


def kfold_split(
    n: int,
    k: int,
    fold: int,
    seed: int,
    labels: Sequence[int] | np.ndarray | Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train_idx, val_idx)`` of fold ``fold`` of a seeded k-fold split of ``range(n)``.

    scikit-learn's shuffled ``KFold`` (or ``StratifiedKFold`` when ``labels`` are given, so
    every fold keeps the class proportions) with ``random_state=seed``: the folds depend only on
    ``(n, seed)`` (and the labels), the ``k`` folds of one seed are disjoint and their
    validation parts cover ``range(n)``. Fold sizes differ by at most one. Both arrays are
    sorted int64.

    Example:
        >>> tr, va = kfold_split(10, 3, 0, seed=0)
        >>> len(tr), len(va), sorted(set(tr) | set(va)) == list(range(10))
        (6, 4, True)
    """
    # heavy: scikit-learn, only the k-fold split needs it
    from sklearn.model_selection import KFold, StratifiedKFold

    for name, value in (("n", n), ("k", k), ("fold", fold), ("seed", seed)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if k < 2:
        raise ValueError(f"k must be >= 2 folds, got {k}")
    if n < k:
        raise ValueError(f"cannot split {n} samples into {k} folds: need n >= k")
    if not 0 <= fold < k:
        raise ValueError(f"fold must be in [0, {k - 1}], got {fold}")
    if labels is None:
        splits = KFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(n))
    else:
        y = _labels_array(labels)
        if y.shape[0] != n:
            raise ValueError(f"labels has {y.shape[0]} entries for {n} samples")
        smallest = int(np.bincount(y)[np.unique(y)].min())
        if smallest < k:
            raise ValueError(
                f"a class has only {smallest} samples, fewer than the {k} folds: lower the "
                "number of folds or split without labels (not stratified)"
            )
        splits = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(n), y)
    train, val = next(s for i, s in enumerate(splits) if i == fold)
    return np.sort(train).astype(np.int64), np.sort(val).astype(np.int64)


def _stratify_labels(dataset: Dataset[Any], k: int) -> np.ndarray | None:
    """The labels to stratify a k-fold split of ``dataset`` by, or None, with a warning saying
    why, when stratification is impossible: the dataset stores no labels (reading them would
    load every image), or a class has fewer samples than folds."""
    labels = stored_labels(dataset)
    if labels is None:
        reason = (
            f"the {type(dataset).__name__} dataset stores no labels (no `targets` attribute), "
            "so the folds are not stratified"
        )
    else:
        counts = np.bincount(labels)
        smallest = int(counts[counts > 0].min())
        if smallest >= k:
            return labels
        reason = (
            f"a class has only {smallest} samples, fewer than the {k} folds, so the folds "
            "are not stratified; raise data.max_train or lower data.folds to stratify"
        )
    warnings.warn(f"k-fold split by scikit-learn's KFold: {reason}", stacklevel=3)
    return None


def dataset_fold(
    dataset: Dataset[Any], k: int, fold: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, val_idx)`` of fold ``fold`` of the experiments' k-fold split of ``dataset``:
    :func:`kfold_split` stratified by the labels the dataset stores (every fold keeps the class
    proportions); unstratified, with a warning saying why, when it stores none or a class has
    fewer samples than folds. The engine and the studio both split with this."""
    n = len(dataset)  # type: ignore[arg-type]
    return kfold_split(n, k, fold, seed, _stratify_labels(dataset, k))


def fold_subsets(dataset: Dataset[Any], k: int, fold: int, seed: int) -> tuple[Subset, Subset]:
    """``(train, val)`` :class:`~torch.utils.data.Subset` views of ``dataset`` for one fold of
    :func:`dataset_fold`."""
    train, val = dataset_fold(dataset, k, fold, seed)
    return Subset(dataset, train.tolist()), Subset(dataset, val.tolist())


class FeedbackSubset(Dataset[tuple[Tensor, Tensor, Tensor]]):
    """Keep the explanation mask on a random ``keep_fraction`` of samples, zero it on the rest.

    All samples stay in the dataset (images and labels unchanged); exactly
    ``round(keep_fraction * len(dataset))`` of them keep their mask (the paper's
    ``remove_exp = 0.3`` is ``keep_fraction = 0.7``).

    Attributes:
        dataset: the wrapped ``(image, label, mask)`` dataset.
        kept: sorted int64 indices of the samples that keep their mask.
    """

    def __init__(self, dataset: Dataset[Any], keep_fraction: float = 0.7, seed: int = 0) -> None:
        if not 0.0 <= float(keep_fraction) <= 1.0:
            raise ValueError(f"keep_fraction must be in [0, 1], got {keep_fraction}")
        n = len(dataset)  # type: ignore[arg-type]
        self.dataset = dataset
        self.keep_fraction = float(keep_fraction)
        n_keep = int(round(self.keep_fraction * n))
        rng = np.random.default_rng(seed)
        self.kept = np.sort(rng.choice(n, size=n_keep, replace=False)).astype(np.int64)
        self._keep = np.zeros(n, dtype=bool)
        self._keep[self.kept] = True

    def __len__(self) -> int:
        return int(self._keep.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        image, label, mask = self.dataset[index]
        if not self._keep[index]:
            mask = torch.zeros_like(mask)
        return image, label, mask

    def __getattr__(self, name: str) -> Any:
        # Forward dataset attributes (e.g. ``targets``, ``class_weights``); ``dataset`` itself is
        # looked up in ``__dict__`` so unpickling (before it is set) cannot recurse.
        if name == "dataset" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def stored_labels(dataset: Dataset[Any]) -> np.ndarray | None:
    """Integer labels read without loading any image, or None when the dataset stores none.

    Reads a ``targets``/``labels`` attribute; looks through :class:`~torch.utils.data.Subset`
    (nested too) and through wrappers that keep the indexing of the dataset they wrap (a
    ``dataset`` attribute of the same length, e.g. the feedback overlays).
    """
    if isinstance(dataset, Subset):
        inner = stored_labels(dataset.dataset)
        return None if inner is None else inner[np.asarray(dataset.indices, dtype=np.int64)]
    for attr in ("targets", "labels"):
        value = getattr(dataset, attr, None)
        if value is not None:
            return np.asarray(value.tolist() if isinstance(value, Tensor) else value, np.int64)
    inner = vars(dataset).get("dataset")
    if isinstance(inner, Dataset) and len(inner) == len(dataset):  # type: ignore[arg-type]
        return stored_labels(inner)
    return None


def dataset_labels(dataset: Dataset[Any]) -> np.ndarray:
    """Integer labels of a dataset: :func:`stored_labels`, else by iterating over it."""
    labels = stored_labels(dataset)
    if labels is not None:
        return labels
    return np.asarray([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64)  # type: ignore[arg-type]


def _labels_array(labels: Sequence[int] | np.ndarray | Tensor) -> np.ndarray:
    arr = np.asarray(labels.tolist() if isinstance(labels, Tensor) else labels)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D sequence, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0:
        raise ValueError("labels must be non-negative integers (class indices)")
    return arr.astype(np.int64)


def class_weights(
    labels: Sequence[int] | np.ndarray | Tensor, num_classes: int | None = None
) -> Tensor:
    """Per-class loss weights ``max_c count_c / count_c`` (the largest class gets 1).

    This is the paper's ISIC weighting: malignant ``11618/1376`` = #benign / #malignant.
    Classes absent from ``labels`` get weight 0.
    """
    arr = _labels_array(labels)
    counts = np.bincount(arr, minlength=num_classes or 0).astype(np.float64)
    weights = np.where(counts > 0, counts.max() / np.maximum(counts, 1.0), 0.0)
    return torch.from_numpy(weights).to(torch.float32)


def class_balanced_weights(labels: Sequence[int] | np.ndarray | Tensor) -> Tensor:
    """Per-sample weights ``1 / count(label)`` normalised to sum 1, for ``WeightedRandomSampler``.

    Every class then has the same total sampling probability.

    Example:
        >>> class_balanced_weights([0, 0, 0, 1]).tolist()
        [0.1666666716337204, 0.1666666716337204, 0.1666666716337204, 0.5]
    """
    arr = _labels_array(labels)
    counts = np.bincount(arr)
    w = 1.0 / counts[arr]
    return torch.from_numpy(w / w.sum()).to(torch.float32)
