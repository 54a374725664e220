"""Classification sets for Proxy Attention through torchvision, with all-zero masks.

CIFAR-100, Imagenette and Food-101 are read from torchvision's on-disk layout (or downloaded
with ``download=True`` when online). Their masks are all zero (no explanation feedback), so every
method runs on them. Other folder datasets (Stanford Dogs, ASL, Plant Village) go through
``image_folder``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rightfocus._registry import DATASETS
from rightfocus.data.base import check_split
from rightfocus.data.folders import PairedImageDataset
from rightfocus.data.masked import _torchvision_call, _transform_options
from rightfocus.data.transforms import IMAGENET_NORMALIZATION

__all__ = ["TorchvisionClassification"]


class TorchvisionClassification(PairedImageDataset):
    """Wrap a torchvision ``(PIL image, label)`` dataset as ``(image, label, zero mask)``.

    Args:
        base: the torchvision dataset (no transform of its own).
        targets: the label of every sample, read from the dataset's files.
        classes: class names.
    """

    def __init__(
        self, base: Any, targets: list[int], classes: list[str], **transform_options: Any
    ) -> None:
        super().__init__(**transform_options)
        self.base = base
        self.targets = [int(t) for t in targets]
        self.classes = list(classes)

    def _load(self, index: int) -> tuple[Image.Image, int, np.ndarray | None]:
        image, label = self.base[index]
        return image.convert("RGB"), int(label), None


_META: dict[str, Any] = dict(
    in_channels=3, has_masks=False, mask_pool="max", normalization=IMAGENET_NORMALIZATION
)


def _register(
    name: str,
    title: str,
    num_classes: int,
    native_size: int,
    make: Callable[[str, str, bool, dict[str, Any]], Any],
    targets_of: Callable[[Any], list[int]],
    summary: str,
    own_options: dict[str, Any] | None = None,
) -> None:
    """Register the dataset factory ``name`` with the registry's common signature.

    ``make(root, split, download, own)`` builds the torchvision dataset; ``own`` holds the
    dataset's own options (``own_options`` with the caller's values). The registry passes
    ``seed`` to every factory; these sets have fixed splits, so it is not used.
    """

    def factory(
        split: str = "train",
        root: str | None = None,
        seed: int = 0,
        image_size: int | None = None,
        download: bool = False,
        **options: Any,
    ) -> TorchvisionClassification:
        check_split(split)
        if root is None:
            raise ValueError(f"{title} needs root= (torchvision's dataset root folder)")
        own = {k: options.pop(k, v) for k, v in (own_options or {}).items()}
        topts = _transform_options(image_size, options, native_size)
        if options:
            raise TypeError(f"unknown option(s) for {title}: {sorted(options)}")
        path = Path(root).expanduser()
        base = _torchvision_call(
            title, path, download, lambda: make(str(path), split, download, own)
        )
        classes = [c[0] if isinstance(c, tuple) else str(c) for c in base.classes]
        return TorchvisionClassification(base, targets_of(base), classes, **topts)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = summary
    DATASETS.register(name, num_classes=num_classes, image_size=native_size, **_META)(factory)


# torchvision.datasets is slow to import: each builder imports its class when it is used.
def _cifar100(root: str, split: str, download: bool, own: dict[str, Any]) -> Any:
    # heavy: torchvision.datasets, only when this dataset is built
    from torchvision.datasets import CIFAR100

    return CIFAR100(root, train=split == "train", download=download)


def _imagenette(root: str, split: str, download: bool, own: dict[str, Any]) -> Any:
    # heavy: torchvision.datasets, only when this dataset is built
    from torchvision.datasets import Imagenette

    tv_split = "train" if split == "train" else "val"
    return Imagenette(root, split=tv_split, size=own["size"], download=download)


def _food101(root: str, split: str, download: bool, own: dict[str, Any]) -> Any:
    # heavy: torchvision.datasets, only when this dataset is built
    from torchvision.datasets import Food101

    return Food101(root, split=split, download=download)


_register(
    "cifar100",
    "CIFAR-100",
    100,
    32,
    _cifar100,
    lambda b: list(b.targets),
    "CIFAR-100 (``cifar-100-python/`` under ``root``).",
)
_register(
    "imagenette",
    "Imagenette",
    10,
    224,
    _imagenette,
    lambda b: [label for _, label in b._samples],
    "Imagenette (torchvision layout; option ``size`` full/320px/160px; test = its ``val``).",
    own_options={"size": "full"},
)
_register(
    "food101",
    "Food-101",
    101,
    224,
    _food101,
    lambda b: list(b._labels),
    "Food-101 (``food-101/`` under ``root``).",
)
