"""k-fold splits, the feedback fraction and class-balanced weights."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, Subset, WeightedRandomSampler

from rightfocus.data import (
    FeedbackSubset,
    MaskedTensorDataset,
    class_balanced_weights,
    class_weights,
    fold_subsets,
    kfold_split,
)
from rightfocus.data.splits import _stratify_labels, dataset_labels, stored_labels
from rightfocus.engine.config import load_config_dict
from rightfocus.engine.datamodule import ExperimentData


@pytest.mark.parametrize("n,k", [(10, 3), (101, 3), (7, 7), (50, 5)])
def test_folds_disjoint_and_cover(n: int, k: int) -> None:
    vals = []
    for fold in range(k):
        tr, va = kfold_split(n, k, fold, seed=4)
        assert set(tr).isdisjoint(va)
        assert sorted(np.concatenate([tr, va]).tolist()) == list(range(n))
        vals.append(va)
    allval = np.concatenate(vals)
    assert sorted(allval.tolist()) == list(range(n))  # each sample validated exactly once
    assert max(map(len, vals)) - min(map(len, vals)) <= 1


def test_seeded() -> None:
    a = kfold_split(30, 3, 1, seed=0)
    assert all(np.array_equal(u, v) for u, v in zip(a, kfold_split(30, 3, 1, seed=0), strict=True))
    assert not np.array_equal(a[1], kfold_split(30, 3, 1, seed=1)[1])


def test_test_set_never_in_a_fold() -> None:
    from rightfocus import DATASETS

    factory = DATASETS.get("mnist")
    train, test = factory(split="train"), factory(split="test")
    test_keys = {t.numpy().tobytes() for t in test.images}
    for fold in range(3):
        tr, va = fold_subsets(train, 3, fold, seed=8434)
        for sub in (tr, va):
            idx = sub.indices[:200]
            assert not any(train.images[i].numpy().tobytes() in test_keys for i in idx)


@pytest.mark.parametrize("n,frac", [(100, 0.7), (101, 0.7), (13, 0.3), (10, 0.0), (10, 1.0)])
def test_feedback_fraction_exact(n: int, frac: float) -> None:
    ds = MaskedTensorDataset(torch.rand(n, 1, 4, 4), torch.arange(n) % 2, torch.ones(n, 1, 4, 4))
    sub = FeedbackSubset(ds, keep_fraction=frac, seed=2)
    with_mask = sum(int(sub[i][2].sum() > 0) for i in range(n))
    assert abs(with_mask - frac * n) <= 1 and with_mask == len(sub.kept)
    for i in range(n):
        assert torch.equal(sub[i][0], ds[i][0]) and int(sub[i][1]) == int(ds[i][1])
        assert bool(sub[i][2].sum() > 0) == (i in set(sub.kept.tolist()))
    assert len(sub) == n and sub.targets == ds.targets  # attributes forwarded
    other = FeedbackSubset(ds, keep_fraction=0.5, seed=3).kept
    if 0 < frac < 1 and n > 20:
        assert not np.array_equal(FeedbackSubset(ds, 0.5, seed=2).kept, other)


def test_class_weights() -> None:
    labels = [0] * 6 + [1] * 2 + [2] * 3
    w = class_balanced_weights(labels)
    per_class = [float(w[np.array(labels) == c].sum()) for c in range(3)]
    assert per_class == pytest.approx([1 / 3] * 3)
    assert float(w.sum()) == pytest.approx(1.0)
    WeightedRandomSampler(w, num_samples=5)  # accepted by torch
    cw = class_weights(torch.tensor(labels), num_classes=4)
    assert cw.tolist() == pytest.approx([1.0, 3.0, 2.0, 0.0])


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="fold"):
        kfold_split(10, 3, 3, 0)
    with pytest.raises(ValueError, match="n >= k"):
        kfold_split(2, 3, 0, 0)
    with pytest.raises(ValueError, match="k must be"):
        kfold_split(10, 1, 0, 0)
    with pytest.raises(TypeError, match="int"):
        kfold_split(10.0, 3, 0, 0)  # type: ignore[arg-type]
    ds = MaskedTensorDataset(torch.rand(4, 1, 2, 2), torch.arange(4))
    with pytest.raises(ValueError, match="keep_fraction"):
        FeedbackSubset(ds, keep_fraction=1.5)
    with pytest.raises(ValueError, match="non-negative"):
        class_balanced_weights([0, -1])


def test_stratified_folds_keep_class_proportions() -> None:
    labels = np.array([0] * 30 + [1] * 12 + [2] * 6)
    rng = np.random.default_rng(0)
    labels = labels[rng.permutation(labels.size)]
    vals = []
    for fold in range(3):
        tr, va = kfold_split(labels.size, 3, fold, seed=5, labels=labels)
        assert set(tr).isdisjoint(va) and len(tr) + len(va) == labels.size
        assert np.bincount(labels[va]).tolist() == [10, 4, 2]  # a third of every class
        vals.append(va)
    assert sorted(np.concatenate(vals).tolist()) == list(range(labels.size))
    with pytest.raises(ValueError, match="fewer than the 4 folds"):
        kfold_split(7, 4, 0, seed=0, labels=[0, 0, 0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="3 entries for 4 samples"):
        kfold_split(4, 2, 0, seed=0, labels=[0, 1, 0])


class _NoLabels(Dataset[Any]):
    """Yields (image, label, mask) but stores no labels: they would be read image by image."""

    def __init__(self, labels: list[int]) -> None:
        self._y = labels

    def __len__(self) -> int:
        return len(self._y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        return torch.zeros(1, 2, 2), self._y[index], torch.zeros(1, 2, 2)


class _Overlay(Dataset[Any]):
    """A wrapper keeping the indexing of the dataset it wraps (as the feedback overlay)."""

    def __init__(self, dataset: Dataset[Any]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]


def test_stored_labels_look_through_wrappers_and_never_load_images() -> None:
    y = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6])
    ds = MaskedTensorDataset(torch.rand(8, 1, 2, 2), y)
    sub = Subset(ds, [7, 0, 2])
    assert stored_labels(_Overlay(FeedbackSubset(sub, 0.5))).tolist() == [6, 3, 4]  # type: ignore[union-attr]
    assert stored_labels(Subset(Subset(ds, [1, 2, 3]), [2, 0])).tolist() == [1, 1]  # type: ignore[union-attr]
    assert stored_labels(_NoLabels([0, 1])) is None
    assert stored_labels(Subset(_NoLabels([0, 1, 1]), [2])) is None
    assert dataset_labels(_NoLabels([0, 1, 1])).tolist() == [0, 1, 1]  # by iterating


def test_datamodule_folds_are_stratified() -> None:
    """Every validation fold of the engine holds a third of every class of the training pool
    (floor or ceil), and the three folds partition the pool."""
    cfg = load_config_dict(
        {
            "experiment": "e",
            "run": "r",
            "data": {"dataset": "decoy_mnist", "folds": 3, "max_train": 150, "max_test": 10},
            "model": {"name": "lenet"},
        }
    )
    seen: list[int] = []
    for fold in range(3):
        dm = ExperimentData(
            cfg.model_copy(update={"data": cfg.data.model_copy(update={"fold": fold})})
        )
        dm._setup_fit()
        pool = dm.val_dataset.dataset  # type: ignore[union-attr]
        labels = np.array([int(pool[i][1]) for i in range(len(pool))])  # read image by image
        val = np.asarray(dm.val_dataset.indices)  # type: ignore[union-attr]
        per_class = np.bincount(labels[val], minlength=10)
        third = np.bincount(labels, minlength=10) / 3
        assert np.all((per_class >= np.floor(third)) & (per_class <= np.ceil(third))), per_class
        seen += val.tolist()
    assert sorted(seen) == list(range(150))


def test_unstratified_fallback_says_why() -> None:
    with pytest.warns(UserWarning, match="stores no labels.*not stratified"):
        assert _stratify_labels(_NoLabels([0, 1] * 5), 3) is None
    ds = MaskedTensorDataset(torch.rand(10, 1, 2, 2), torch.tensor([0] * 8 + [1] * 2))
    with pytest.warns(UserWarning, match="only 2 samples, fewer than the 3 folds"):
        assert _stratify_labels(ds, 3) is None
    assert _stratify_labels(ds, 2).tolist() == ds.targets  # type: ignore[union-attr]
