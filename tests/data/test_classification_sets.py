"""torchvision classification sets (Proxy Attention): all-zero masks, real-layout fixtures."""

from __future__ import annotations

import urllib.error
from pathlib import Path
from typing import Any

import pytest

from rightfocus import DATASETS


def test_imagenette_layout(tmp_path: Path, write_dataset: Any) -> None:
    write_dataset("imagenette", tmp_path)
    ds = DATASETS.get("imagenette")(split="test", root=str(tmp_path), image_size=16)
    assert ds.classes == ["tench", "parachute"] and ds.targets == [0, 1]
    x, y, m = ds[1]
    assert x.shape == (3, 16, 16) and y == 1 and m.shape == (1, 16, 16) and float(m.sum()) == 0


def test_food101_layout(tmp_path: Path, write_dataset: Any) -> None:
    write_dataset("food101", tmp_path)
    ds = DATASETS.get("food101")(split="train", root=str(tmp_path), image_size=8)
    assert ds.targets == [0, 1, 1] and ds.classes == ["apple_pie", "baklava"]
    assert ds[2][0].shape == (3, 8, 8) and float(ds[2][2].sum()) == 0


def test_missing_offline_and_bad_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"CIFAR-100 files not found.*download=True"):
        DATASETS.get("cifar100")(root=str(tmp_path))
    with pytest.raises(ValueError, match="root="):
        DATASETS.get("food101")()
    with pytest.raises(TypeError, match="unknown option"):
        DATASETS.get("cifar100")(root=str(tmp_path), colour=True)
    import torchvision.datasets.cifar as cifar

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("Network is unreachable")

    monkeypatch.setattr(cifar, "download_and_extract_archive", offline)
    with pytest.raises(RuntimeError, match="offline"):
        DATASETS.get("cifar100")(root=str(tmp_path), download=True)


def test_cifar100_pickled_layout(tmp_path: Path, write_dataset: Any) -> None:
    write_dataset("cifar100", tmp_path)
    ds = DATASETS.get("cifar100")(split="train", root=str(tmp_path))
    assert len(ds) == 6 and ds.targets == [0, 1, 2, 3, 4, 5] and ds.classes[3] == "class3"
    x, y, m = ds[5]
    assert x.shape == (3, 32, 32) and y == 5 and m.shape == (1, 32, 32) and float(m.sum()) == 0
