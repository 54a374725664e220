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


def _build(
    name: str,
    root: str | None,
    download: bool,
    make: Callable[[str], Any],
    targets_of: Callable[[Any], list[int]],
    image_size: int | None,
    options: dict[str, Any],
    default_size: int = 224,
) -> TorchvisionClassification:
    if root is None:
        raise ValueError(f"{name} needs root= (torchvision's dataset root folder)")
    topts = _transform_options(image_size, options, default_size)
    if options:
        raise TypeError(f"unknown option(s) for {name}: {sorted(options)}")
    path = Path(root).expanduser()
    base = _torchvision_call(name, path, download, lambda: make(str(path)))
    classes = [c[0] if isinstance(c, tuple) else str(c) for c in base.classes]
    return TorchvisionClassification(base, targets_of(base), classes, **topts)


_META: dict[str, Any] = dict(
    in_channels=3, has_masks=False, mask_pool="max", normalization=IMAGENET_NORMALIZATION
)


@DATASETS.register("cifar100", num_classes=100, image_size=32, **_META)
def cifar100(
    split: str = "train",
    root: str | None = None,
    seed: int = 0,
    image_size: int | None = None,
    download: bool = False,
    **options: Any,
) -> TorchvisionClassification:
    """CIFAR-100 (``cifar-100-python/`` under ``root``); ``seed`` unused."""
    from torchvision.datasets import CIFAR100

    check_split(split)
    return _build(
        "CIFAR-100",
        root,
        download,
        lambda r: CIFAR100(r, train=split == "train", download=download),
        lambda b: list(b.targets),
        image_size,
        options,
        default_size=32,
    )


@DATASETS.register("imagenette", num_classes=10, image_size=224, **_META)
def imagenette(
    split: str = "train",
    root: str | None = None,
    seed: int = 0,
    image_size: int | None = None,
    download: bool = False,
    size: str = "full",
    **options: Any,
) -> TorchvisionClassification:
    """Imagenette (torchvision layout; ``size`` full/320px/160px; test = its ``val``)."""
    from torchvision.datasets import Imagenette

    check_split(split)
    tv_split = "train" if split == "train" else "val"
    return _build(
        "Imagenette",
        root,
        download,
        lambda r: Imagenette(r, split=tv_split, size=size, download=download),
        lambda b: [label for _, label in b._samples],
        image_size,
        options,
    )


@DATASETS.register("food101", num_classes=101, image_size=224, **_META)
def food101(
    split: str = "train",
    root: str | None = None,
    seed: int = 0,
    image_size: int | None = None,
    download: bool = False,
    **options: Any,
) -> TorchvisionClassification:
    """Food-101 (``food-101/`` under ``root``); ``seed`` unused."""
    from torchvision.datasets import Food101

    check_split(split)
    return _build(
        "Food-101",
        root,
        download,
        lambda r: Food101(r, split=split, download=download),
        lambda b: list(b._labels),
        image_size,
        options,
    )
