"""The LightningDataModule: k-fold train/val over the train pool, feedback subset, test split.

Training batches come from :class:`EpochBatchSampler`: epoch ``e``'s order is a permutation
drawn from ``(seed, e)`` alone, so it is the same whether or not the run was interrupted, and
the sampler can skip the batches a resumed run already trained on. :class:`ResumableDataLoader`
sets the sampler's epoch from the trainer's epoch counter every time an epoch's iteration
starts (Lightning's own ``set_epoch`` calls only reach ``loader.sampler`` and
``loader.batch_sampler.sampler``) and exposes the skip as Lightning's loader ``state_dict``
protocol (mid-epoch resume). The skip applies only to the epoch it was saved in, so resuming
from an epoch-end checkpoint starts the next epoch at its first batch. Under DDP each global
batch is split across the ranks (rank ``r`` takes items ``r::world`` of every batch of the
epoch's permutation), so two processes see exactly the batches one process would, half each.

Small in-memory datasets whose samples never change (:class:`~rightfocus.data.base.
MaskedTensorDataset` under ``Subset`` / ``FeedbackSubset``) are gathered once into stacked
tensors (:func:`in_memory`), so a batch is one index operation per tensor instead of one
``__getitem__`` chain per sample plus a collate: the batches are the same tensors.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

import rightfocus.data  # noqa: F401  (registers the datasets)
from rightfocus._registry import DATASETS
from rightfocus.data.base import MaskedTensorDataset
from rightfocus.data.feedback import FeedbackOverlay
from rightfocus.data.splits import FeedbackSubset, class_weights, dataset_fold, dataset_labels
from rightfocus.engine.config import Config
from rightfocus.guidance.base import Guidance

__all__ = [
    "EpochBatchSampler",
    "ExperimentData",
    "InMemoryDataset",
    "ResumableDataLoader",
    "build_dataset",
    "collate",
    "in_memory",
]

#: Datasets larger than this (bytes of their stacked tensors) are read sample by sample.
IN_MEMORY_LIMIT = 1 << 30


class Batch(list):  # type: ignore[type-arg]
    """A batch ``[images, labels, masks]`` gathered at once (passes :func:`collate` as is)."""


def collate(samples: Any) -> Any:
    """The engine's collate function: a :class:`Batch` as is, else PyTorch's default."""
    return samples if isinstance(samples, Batch) else default_collate(samples)


class InMemoryDataset(Dataset[tuple[Tensor, ...]]):
    """Samples held as stacked tensors; ``__getitems__`` gathers a whole batch (a
    :class:`Batch`, for :func:`collate`) with one index operation per tensor."""

    def __init__(self, tensors: Sequence[Tensor]) -> None:
        self.tensors = tuple(tensors)

    def __len__(self) -> int:
        return int(self.tensors[0].shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        return tuple(t[index] for t in self.tensors)

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return Batch(t.index_select(0, idx) for t in self.tensors)  # copies, like a collate


def _static_tensors(dataset: Dataset[Any]) -> tuple[Tensor, ...] | None:
    """``(images, labels, masks)`` of every sample of a dataset whose samples are fixed
    tensors (a ``MaskedTensorDataset`` that keeps its ``__getitem__``, under ``Subset`` and
    ``FeedbackSubset``), else None (anything else may transform or change its samples)."""
    if isinstance(dataset, Subset):
        base = _static_tensors(dataset.dataset)
        if base is None:
            return None
        idx = torch.as_tensor(list(dataset.indices), dtype=torch.long)
        return tuple(t.index_select(0, idx) for t in base)
    if isinstance(dataset, FeedbackSubset):
        base = _static_tensors(dataset.dataset)
        if base is None:
            return None
        images, labels, masks = base
        keep = torch.zeros(len(images), dtype=torch.bool)
        keep[torch.from_numpy(dataset.kept)] = True
        return images, labels, torch.where(keep.view(-1, 1, 1, 1), masks, 0.0)
    if (
        isinstance(dataset, MaskedTensorDataset)
        and type(dataset).__getitem__ is MaskedTensorDataset.__getitem__
    ):
        return dataset.images, dataset.labels, dataset.masks
    return None


def in_memory(dataset: Dataset[Any], limit: int = IN_MEMORY_LIMIT) -> Dataset[Any]:
    """``dataset`` as an :class:`InMemoryDataset` when its samples are fixed tensors of at most
    ``limit`` bytes in total (see :func:`_static_tensors`), else ``dataset`` itself."""
    if isinstance(dataset, InMemoryDataset):
        return dataset
    if isinstance(dataset, Subset | FeedbackSubset | MaskedTensorDataset):
        size = _nbytes(dataset)
        if size is not None and size <= limit:
            tensors = _static_tensors(dataset)
            if tensors is not None:
                return InMemoryDataset(tensors)
    return dataset


def _nbytes(dataset: Dataset[Any]) -> int | None:
    """Bytes of one sample times the number of samples (None unless the samples are fixed
    in-memory tensors: a ``MaskedTensorDataset`` keeping its ``__getitem__``, under ``Subset``
    and ``FeedbackSubset``)."""
    base: Any = dataset
    while isinstance(base, Subset | FeedbackSubset):
        base = base.dataset
    if (
        not isinstance(base, MaskedTensorDataset)
        or type(base).__getitem__ is not MaskedTensorDataset.__getitem__
    ):
        return None
    per_sample = sum(t[0].numel() * t.element_size() for t in (base.images, base.masks))
    return per_sample * len(dataset)  # type: ignore[arg-type]


class EpochBatchSampler:
    """Shuffled batches whose order depends only on ``(seed, epoch)``; resumable mid-epoch.

    Args:
        n: dataset size. batch_size: global batch size (all ranks together).
        seed: base seed. rank, world_size: this process's share of each global batch.
        drop_last: drop a last batch smaller than ``batch_size`` (with several ranks a last
            batch smaller than ``world_size`` is always dropped so no rank gets an empty batch).
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        if n < 1 or batch_size < 1:
            raise ValueError(f"need n >= 1 and batch_size >= 1, got n={n}, batch_size={batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0
        self.skip = 0
        self.skip_epoch: int | None = None  # None: ``skip`` applies to the next iteration

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume(self, epoch: int, batches_done: int) -> None:
        """Skip the first ``batches_done`` batches of ``epoch`` (only of that epoch, once)."""
        self.skip, self.skip_epoch = int(batches_done), int(epoch)

    def _num_full(self) -> int:
        full = self.n // self.batch_size
        rest = self.n % self.batch_size
        keep_rest = rest > 0 and not self.drop_last and rest >= self.world_size
        return full + int(keep_rest)

    def __len__(self) -> int:
        return self._num_full()

    def order(self, epoch: int) -> list[int]:
        """The epoch's permutation of ``range(n)`` (same on every rank)."""
        gen = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(epoch))
        return torch.randperm(self.n, generator=gen).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        order = self.order(self.epoch)
        skip = self.skip if self.skip_epoch in (None, self.epoch) else 0
        self.skip, self.skip_epoch = 0, None
        for b in range(skip, len(self)):
            batch = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield batch[self.rank :: self.world_size]


class ResumableDataLoader(DataLoader):
    """A DataLoader over an :class:`EpochBatchSampler` that Lightning can save and restore.

    ``epoch()`` returns the epoch about to be iterated (the Trainer's count; None outside a
    Trainer keeps the sampler's own epoch) and is read each time an iteration starts;
    ``progress()`` returns how many batches of the current epoch were trained (the Trainer's own
    count); :meth:`load_state_dict` makes that epoch's next iteration skip them.
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        sampler: EpochBatchSampler,
        progress: Callable[[], int],
        epoch: Callable[[], int | None] = lambda: None,
        **kw: Any,
    ) -> None:
        super().__init__(dataset, batch_sampler=sampler, **kw)
        self.epoch_sampler = sampler
        self._progress = progress
        self._epoch = epoch

    def __iter__(self) -> Any:
        epoch = self._epoch()
        if epoch is not None:
            self.epoch_sampler.set_epoch(epoch)
        return super().__iter__()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch_sampler.epoch, "batches_done": int(self._progress())}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch_sampler.set_epoch(int(state["epoch"]))
        self.epoch_sampler.resume(int(state["epoch"]), int(state["batches_done"]))


def _subset(dataset: Dataset[Any], limit: int | None, seed: int) -> Dataset[Any]:
    n = len(dataset)  # type: ignore[arg-type]
    if limit is None or limit >= n:
        return dataset
    idx = np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
    return Subset(dataset, idx.tolist())


#: The last few in-memory datasets built in this process, by what they were built from: the
#: runs of one reproduction (methods, folds) share their train pool and test set.
_BUILT: OrderedDict[str, Dataset[Any]] = OrderedDict()
_BUILT_MAX, _BUILT_BYTES = 4, IN_MEMORY_LIMIT // 4


def build_dataset(config: Config, split: str) -> Dataset[Any]:
    """The dataset's ``split`` ("train" pool or "test"), limited by max_train / max_test.

    A dataset of fixed in-memory samples (see :func:`in_memory`) is built once per process for
    the same data settings and split, and shared (nothing in the engine changes a dataset)."""
    d = config.data
    options = dict(d.options)
    store = options.pop("feedback_store", None)  # masks from `rightfocus studio` (train only)
    if d.variant is not None:
        options["variant"] = d.variant
    limit = d.max_train if split == "train" else d.max_test
    root = None if d.root is None else str(Path(d.root).expanduser().resolve())
    key = json.dumps(
        [d.dataset, split, root, d.seed, d.image_size, d.download, options, limit],
        sort_keys=True,
        default=str,
    )
    dataset = _BUILT.get(key)
    if dataset is None:
        factory = DATASETS.get(d.dataset)
        dataset = factory(
            split=split,
            root=d.root,
            seed=d.seed,
            image_size=d.image_size,
            download=d.download,
            **options,
        )
        dataset = _subset(dataset, limit, d.seed)
        size = _nbytes(dataset)
        if size is not None and size <= _BUILT_BYTES:  # fixed in-memory samples: keep them
            _BUILT[key] = dataset
            while len(_BUILT) > _BUILT_MAX:
                _BUILT.popitem(last=False)
    else:
        _BUILT.move_to_end(key)
    if store is not None and split == "train":
        dataset = FeedbackOverlay(dataset, store)
    return dataset


class ExperimentData(pl.LightningDataModule):
    """Train / val / test data of one experiment (see the module docstring).

    Attributes:
        train_dataset: the training part of fold ``fold`` (a ``FeedbackSubset``: masks kept on
            ``feedback_fraction`` of the samples), then wrapped by every guidance method's
            ``wrap_train_dataset`` (e.g. Proxy Attention's proxy store).
            val_dataset: the held-out fold (None when ``folds: 1``).
        test_dataset: the independent test split. normalization: None or ``(mean, std)``.
        batch_size: the global training batch size (the batch-size finder may change it).
    """

    def __init__(
        self,
        config: Config,
        batch_size: int | None = None,
        guidance: Sequence[Guidance] = (),
    ) -> None:
        super().__init__()
        self.guidance = list(guidance)

        self.config = config
        meta = DATASETS.metadata(config.data.dataset)
        self.meta = meta
        self.normalization: tuple[list[float], list[float]] | None = meta.get("normalization")
        bs = config.data.batch_size
        self.batch_size: int = batch_size or (bs if isinstance(bs, int) else 32)
        self.train_dataset: Dataset[Any] | None = None
        self.val_dataset: Dataset[Any] | None = None
        self.test_dataset: Dataset[Any] | None = None
        self._train_loader: ResumableDataLoader | None = None
        self._gathered: dict[int, tuple[Dataset[Any], Dataset[Any]]] = {}

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", None) and self.train_dataset is None:
            self._setup_fit()
        if stage in ("test", None) and self.test_dataset is None:
            self.test_dataset = build_dataset(self.config, "test")

    def _setup_fit(self) -> None:
        d = self.config.data
        pool = build_dataset(self.config, "train")
        if d.folds > 1:
            train_idx, val_idx = dataset_fold(pool, d.folds, d.fold, d.seed)
            train: Dataset[Any] = Subset(pool, train_idx.tolist())
            self.val_dataset = Subset(pool, val_idx.tolist())
        else:
            train = pool
        train = FeedbackSubset(train, keep_fraction=d.feedback_fraction, seed=d.seed)
        for g in self.guidance:
            train = g.wrap_train_dataset(train)
        self.train_dataset = train

    def class_weights(self, num_classes: int) -> Tensor | None:
        """Loss weights per class from ``data.class_weights`` (None: unweighted)."""
        spec = self.config.data.class_weights
        if spec == "none":
            return None
        if isinstance(spec, list):
            if len(spec) != num_classes:
                raise ValueError(
                    f"data.class_weights lists {len(spec)} weights for {num_classes} classes"
                )
            return torch.tensor(spec, dtype=torch.float32)

        assert self.train_dataset is not None
        base = getattr(self.train_dataset, "base", self.train_dataset)
        return class_weights(dataset_labels(getattr(base, "dataset", base)), num_classes)

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _progress(self) -> int:
        trainer = self.trainer
        if trainer is None:
            return 0
        current = trainer.fit_loop.epoch_loop.batch_progress.current
        return int(getattr(current, "processed", current.completed))

    def _epoch(self) -> int | None:
        """The epoch the fit loop is in or about to start (counted as Lightning's
        ``set_epoch`` calls count it: epochs whose training part ended)."""
        trainer = self.trainer
        if trainer is None:
            return None
        current = trainer.fit_loop.epoch_progress.current
        return int(getattr(current, "processed", current.completed))

    def train_dataloader(self) -> ResumableDataLoader:
        assert self.train_dataset is not None, "call setup('fit') first"
        rank, world = self._rank_world()
        sampler = EpochBatchSampler(
            len(self.train_dataset),  # type: ignore[arg-type]
            self.batch_size,
            seed=self.config.data.seed,
            rank=rank,
            world_size=world,
        )
        epoch = self._epoch()
        if epoch is not None:
            sampler.set_epoch(epoch)
        self._train_loader = ResumableDataLoader(
            self._in_memory(self.train_dataset),
            sampler,
            self._progress,
            self._epoch,
            **self._loader_kwargs(),
        )
        return self._train_loader

    def _loader_kwargs(self) -> dict[str, Any]:
        workers = self.config.data.num_workers
        return {
            "num_workers": workers,
            "persistent_workers": workers > 0,
            "generator": torch.Generator().manual_seed(self.config.data.seed),
            "collate_fn": collate,
        }

    def _in_memory(self, dataset: Dataset[Any]) -> Dataset[Any]:
        """:func:`in_memory` of ``dataset``, gathered once per dataset object."""
        key = id(dataset)
        cached = self._gathered.get(key)
        if cached is None or cached[0] is not dataset:
            cached = (dataset, in_memory(dataset))
            self._gathered[key] = cached
        return cached[1]

    def eval_loader(self, dataset: Dataset[Any], batch_size: int | None = None) -> DataLoader:
        """A sequential loader (every rank sees the whole set)."""
        return DataLoader(
            self._in_memory(dataset),
            batch_size=batch_size or self.config.evaluation.batch_size,
            shuffle=False,
            **self._loader_kwargs(),
        )

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        if self.val_dataset is None:
            return []
        return self.eval_loader(self.val_dataset)

    def test_dataloader(self) -> DataLoader:
        if self.test_dataset is None:
            self.setup("test")
        assert self.test_dataset is not None
        return self.eval_loader(self.test_dataset)
