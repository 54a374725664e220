"""torchvision classification sets (Proxy Attention): all-zero masks, real-layout fixtures."""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rightfocus import DATASETS


def _jpg(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format="JPEG")


def test_imagenette_layout(tmp_path: Path) -> None:
    for split in ("train", "val"):
        for k, wnid in enumerate(("n01440764", "n03888257")):
            _jpg(tmp_path / "imagenette2" / split / wnid / f"{wnid}_{k}.JPEG", seed=k)
    ds = DATASETS.get("imagenette")(split="test", root=str(tmp_path), image_size=16)
    assert ds.classes == ["tench", "parachute"] and ds.targets == [0, 1]
    x, y, m = ds[1]
    assert x.shape == (3, 16, 16) and y == 1 and m.shape == (1, 16, 16) and float(m.sum()) == 0


def test_food101_layout(tmp_path: Path) -> None:
    base = tmp_path / "food-101"
    meta = {"apple_pie": ["apple_pie/1005649"], "baklava": ["baklava/1006121", "baklava/1014880"]}
    (base / "meta").mkdir(parents=True)
    for split in ("train", "test"):
        (base / "meta" / f"{split}.json").write_text(json.dumps(meta))
    for files in meta.values():
        for f in files:
            _jpg(base / "images" / f"{f}.jpg")
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
