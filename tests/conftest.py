"""Shared fixtures: tiny models and data, seeded."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


class TinyCNN(nn.Module):
    """Two convs, ReLU modules, global average pool + linear head (CAM-compatible)."""

    def __init__(self, in_channels: int = 1, classes: int = 4, act: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 4, 3, padding=1),
            act(),
            nn.Conv2d(4, 6, 3, padding=1),
            act(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


@pytest.fixture
def make_tiny_cnn() -> type[nn.Module]:
    """The :class:`TinyCNN` class, to build one with other channels, classes or activation."""
    return TinyCNN


@pytest.fixture
def tiny_cnn() -> nn.Module:
    return TinyCNN().double().eval()


@pytest.fixture
def tiny_batch() -> torch.Tensor:
    return torch.rand(3, 1, 8, 8, dtype=torch.float64)


# --- tiny datasets in each dataset's real on-disk format --------------------------------------


def _rgb(path: Path, h: int = 20, w: int = 24, seed: int = 0) -> np.ndarray:
    arr = np.random.default_rng(seed).integers(0, 200, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return arr


def _gray(path: Path, values: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8), mode="L").save(path)
    return path


def _box(h: int = 20, w: int = 24) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    m[2:7, 3:10] = 1
    return m


def _write_isic(root: Path) -> None:
    """CDEP layout: class folders of images, patch segmentations for some benign images."""
    for i in range(5):
        _rgb(root / "benign" / f"ISIC_{i:07d}.jpg", seed=i)
    for i in range(5, 8):
        _rgb(root / "malignant" / f"ISIC_{i:07d}.jpg", seed=i)
    for i in (0, 1, 2):
        _gray(root / "segmentation" / f"ISIC_{i:07d}.png", _box() * 255)


def _write_oxford_pet(root: Path) -> dict[str, np.ndarray]:
    """torchvision's Oxford-IIIT-Pet layout; returns the trimaps (1 pet, 2 background, 3 border)."""
    base = root / "oxford-iiit-pet"
    trimaps = {}
    rows = {
        "trainval": [("Abyssinian_1", 1, 1, 1), ("american_bulldog_10", 2, 2, 1)],
        "test": [("Abyssinian_2", 1, 1, 1)],
    }
    for split, items in rows.items():
        lines = []
        for k, (name, cls, species, breed) in enumerate(items):
            _rgb(base / "images" / f"{name}.jpg", seed=k)
            tri = np.full((20, 24), 2, dtype=np.uint8)
            tri[4:16, 6:18] = 1
            tri[4, 6:18] = 3
            _gray(base / "annotations" / "trimaps" / f"{name}.png", tri)
            trimaps[name] = tri
            lines.append(f"{name} {cls} {species} {breed}")
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return trimaps


def _write_sbd(root: Path) -> None:
    """SBD's ``cls/*.mat`` layout (read by torchvision's SBDataset too)."""
    from scipy.io import savemat
    from scipy.sparse import csc_matrix

    # (name, objects as (VOC id, rows, cols)); 15 = person, 3 bird, 8 cat, 12 dog
    items = [
        ("2008_000002", [(3, slice(2, 8), slice(2, 9))]),  # bird only: kept
        ("2008_000003", [(8, slice(2, 8), slice(2, 9)), (15, slice(10, 18), slice(10, 20))]),
        ("2008_000007", [(8, slice(2, 8), slice(2, 9)), (12, slice(10, 18), slice(10, 20))]),
        ("2008_000008", [(15, slice(2, 8), slice(2, 9))]),  # person only: dropped
    ]
    for k, (name, objects) in enumerate(items):
        _rgb(root / "img" / f"{name}.jpg", seed=k)
        seg = np.zeros((20, 24), dtype=np.uint8)
        for cid, r, c in objects:
            seg[r, c] = cid
        boundaries = np.empty((20, 1), dtype=object)
        for i in range(20):
            boundaries[i, 0] = csc_matrix(np.zeros((20, 24), dtype=np.uint8))
        present = np.array([[cid] for cid, _, _ in objects], dtype=np.uint8)
        gtcls = {"Segmentation": seg, "Boundaries": boundaries, "CategoriesPresent": present}
        (root / "cls").mkdir(parents=True, exist_ok=True)
        savemat(root / "cls" / f"{name}.mat", {"GTcls": gtcls})
    names = "\n".join(n for n, _ in items) + "\n"
    (root / "train.txt").write_text(names)
    (root / "val.txt").write_text(names)


def _write_masked_folder(root: Path) -> None:
    """``<split>/images/<class>/`` and ``<split>/masks/<class>/`` (one mask per class)."""
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            for k in range(2):
                _rgb(root / split / "images" / cls / f"{cls}{k}.png", seed=k)
                if k == 0:
                    _gray(root / split / "masks" / cls / f"{cls}{k}.png", _box() * 255)


def _write_image_folder(root: Path) -> None:
    for split in ("train", "test"):
        for cls in ("a", "b", "c"):
            _rgb(root / split / cls / "x.jpg")


def _write_imagenette(root: Path) -> None:
    for split in ("train", "val"):
        for k, wnid in enumerate(("n01440764", "n03888257")):
            _rgb(root / "imagenette2" / split / wnid / f"{wnid}_{k}.JPEG", 12, 10, seed=k)


def _write_food101(root: Path) -> None:
    base = root / "food-101"
    meta = {"apple_pie": ["apple_pie/1005649"], "baklava": ["baklava/1006121", "baklava/1014880"]}
    (base / "meta").mkdir(parents=True)
    for split in ("train", "test"):
        (base / "meta" / f"{split}.json").write_text(json.dumps(meta))
    for files in meta.values():
        for f in files:
            _rgb(base / "images" / f"{f}.jpg", 12, 10)


def _write_cifar100(root: Path) -> None:
    """The pickled ``cifar-100-python`` files (their MD5 checks must be switched off)."""
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 4)):
        entry = {
            "data": rng.integers(0, 255, (n, 3 * 32 * 32), dtype=np.uint8),
            "fine_labels": [i % 100 for i in range(n)],
        }
        (base / split).write_bytes(pickle.dumps(entry))
    names = [f"class{i}" for i in range(100)]
    (base / "meta").write_bytes(pickle.dumps({"fine_label_names": names}))


DATASET_WRITERS: dict[str, Callable[[Path], Any]] = {
    "isic": _write_isic,
    "oxford_pet": _write_oxford_pet,
    "sbd": _write_sbd,
    "masked_folder": _write_masked_folder,
    "image_folder": _write_image_folder,
    "imagenette": _write_imagenette,
    "food101": _write_food101,
    "cifar100": _write_cifar100,
}


@pytest.fixture
def write_dataset(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, Path], Any]:
    """``write_dataset(name, root)``: a tiny copy of dataset ``name`` in its real on-disk
    format under ``root`` (what the writer returns, e.g. the Pet trimaps). Datasets that need no
    files (the bundled MNIST digits) are not listed in ``DATASET_WRITERS``."""

    def write(name: str, root: Path) -> Any:
        if name == "cifar100":  # the fixture's files are not the real ones: skip the MD5 check
            import torchvision.datasets.cifar as cifar

            monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
        return DATASET_WRITERS[name](root)

    write.known = frozenset(DATASET_WRITERS)  # type: ignore[attr-defined]
    return write
