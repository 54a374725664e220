"""The engine's loaders gather small fixed datasets once: the same batches, no per-sample path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from rightfocus.data.base import MaskedTensorDataset
from rightfocus.data.splits import FeedbackSubset
from rightfocus.engine.config import load_config_dict
from rightfocus.engine.datamodule import (
    Batch,
    EpochBatchSampler,
    ExperimentData,
    InMemoryDataset,
    build_dataset,
    collate,
    in_memory,
)


class _Augmented(MaskedTensorDataset):
    """Changes its samples on every access: must never be gathered once."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y, m = super().__getitem__(index)
        return x + torch.rand(()), y, m


class _Wrapper(Dataset[Any]):
    def __init__(self, dataset: Dataset[Any]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]


def _base(n: int = 20) -> MaskedTensorDataset:
    gen = torch.Generator().manual_seed(0)
    masks = (torch.rand(n, 1, 6, 6, generator=gen) > 0.5).float()
    return MaskedTensorDataset(torch.rand(n, 1, 6, 6, generator=gen), torch.arange(n) % 3, masks)


def _batches(dataset: Dataset[Any], gathered: bool) -> list[Any]:
    sampler = EpochBatchSampler(len(dataset), 7, seed=3)  # type: ignore[arg-type]
    sampler.set_epoch(2)
    data = in_memory(dataset) if gathered else dataset
    return list(DataLoader(data, batch_sampler=sampler, collate_fn=collate))


def test_gathered_batches_equal_the_per_sample_batches() -> None:
    pool = _base()
    dataset = FeedbackSubset(Subset(pool, list(range(3, 19))), keep_fraction=0.5, seed=1)
    gathered = in_memory(dataset)
    assert isinstance(gathered, InMemoryDataset)
    fast, slow = _batches(dataset, True), _batches(dataset, False)
    assert len(fast) == len(slow) == 3
    for a, b in zip(fast, slow, strict=True):
        assert isinstance(a, Batch) and not isinstance(b, Batch)
        for ta, tb in zip(a, b, strict=True):
            assert ta.dtype == tb.dtype and torch.equal(ta, tb)
    # the feedback subset zeroed the masks it drops, exactly as its __getitem__ does
    dropped = [i for i in range(len(dataset)) if i not in set(dataset.kept.tolist())]
    assert dropped and all(float(gathered[i][2].abs().sum()) == 0 for i in dropped)
    assert any(float(gathered[int(i)][2].sum()) > 0 for i in dataset.kept)


def test_changing_wrapped_or_large_datasets_are_read_per_sample() -> None:
    augmented = _Augmented(torch.rand(4, 1, 6, 6), torch.arange(4))
    assert not isinstance(in_memory(Subset(augmented, [0, 1])), InMemoryDataset)
    wrapped = _Wrapper(_base())
    assert in_memory(wrapped) is wrapped
    big = Subset(_base(), [0, 1, 2])
    assert in_memory(big, limit=3 * 36 * 4 * 2 - 1) is big  # images + masks, float32
    assert isinstance(in_memory(big, limit=3 * 36 * 4 * 2), InMemoryDataset)


def test_experiment_loaders_gather_decoy_mnist(tmp_path: Path) -> None:
    cfg = load_config_dict(
        {
            "runs_dir": str(tmp_path),
            "experiment": "e",
            "run": "r",
            "data": {
                "dataset": "decoy_mnist",
                "variant": "position",
                "folds": 3,
                "max_train": 90,
                "max_test": 40,
                "batch_size": 16,
            },
            "model": {"name": "lenet"},
        }
    )
    dm = ExperimentData(cfg)
    dm.setup()
    assert dm.train_dataset is not None and dm.val_dataset is not None
    for loader, dataset in (
        (dm.train_dataloader(), dm.train_dataset),
        (dm.val_dataloader(), dm.val_dataset),
        (dm.test_dataloader(), dm.test_dataset),
    ):
        assert isinstance(loader.dataset, InMemoryDataset)
        per_sample = DataLoader(dataset, batch_sampler=loader.batch_sampler)  # type: ignore[arg-type]
        for a, b in zip(loader, per_sample, strict=True):
            assert all(torch.equal(ta, tb) for ta, tb in zip(a, b, strict=True))
    assert dm.val_dataloader().dataset is dm.val_dataloader().dataset  # gathered once


def test_runs_of_one_process_share_the_datasets_they_build_alike(tmp_path: Path) -> None:
    def config(**data: Any) -> Any:
        raw = {"dataset": "decoy_mnist", "variant": "position", "folds": 3, "max_train": 60}
        return load_config_dict(
            {
                "runs_dir": str(tmp_path),
                "experiment": "e",
                "data": {**raw, **data},
                "model": {"name": "lenet"},
            }
        )

    pool = build_dataset(config(fold=0), "train")
    assert build_dataset(config(fold=2, batch_size=7), "train") is pool  # same data, other fold
    assert build_dataset(config(), "test") is not pool
    assert build_dataset(config(variant="color"), "train") is not pool
    assert build_dataset(config(seed=1), "train") is not pool
