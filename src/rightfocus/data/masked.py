"""Datasets with explanation masks: ISIC (CDEP layout), Oxford-IIIT-Pet, SBD; registrations.

Masks follow the paper "Regularizing Explanations in Bayesian CNNs": ISIC masks are the
coloured-patch segmentations of Rieger et al. (2020); Oxford-IIIT-Pet masks are the trimap's
background; SBD masks are everything but the one bird/bus/cat/dog/horse object.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rightfocus._registry import DATASETS
from rightfocus.data.base import check_split
from rightfocus.data.folders import (
    ImageFolderDataset,
    MaskedImageFolder,
    PairedImageDataset,
    find_class_folders,
    list_images,
    open_rgb,
)
from rightfocus.data.splits import class_weights
from rightfocus.data.transforms import IMAGENET_NORMALIZATION, MASK_EXTENSIONS
from rightfocus.errors import UserError

__all__ = ["ISIC", "SBD_CLASS_IDS", "OxfordPetMasks", "SBDMasks"]

log = logging.getLogger(__name__)


class ISIC(PairedImageDataset):
    """ISIC 2018 benign vs malignant in the folder layout of the CDEP scripts (Rieger et al.).

    Layout::

        root/benign/<name>.jpg          label 0
        root/malignant/<name>.jpg       label 1
        root/segmentation/<name>.png    optional patch segmentation (or .npy), same size

    Images without a segmentation file get an all-zero mask. When ``root/train`` and
    ``root/test`` hold that layout they are used as the splits; otherwise the files are split
    stratified and seeded (``split_seed``) with ``test_fraction`` (the paper's 60/40) going to
    the test split.

    Attributes:
        class_weights: ``max count / count`` per class on this split (the paper weights
            malignant by #benign / #malignant).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        class_dirs: Sequence[str] = ("benign", "malignant"),
        segmentation_dir: str = "segmentation",
        test_fraction: float = 0.4,
        split_seed: int = 0,
        **transform_options: Any,
    ) -> None:
        super().__init__(**transform_options)
        check_split(split)
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        base = Path(root).expanduser()
        presplit = (base / split).is_dir()
        base = base / split if presplit else base
        self.classes = find_class_folders(base, list(class_dirs))
        files, labels = [], []
        for label, name in enumerate(self.classes):
            found = list_images(base / name)
            if not found:
                raise ValueError(f"class folder {base / name} holds no images")
            if not presplit:
                found = _stratified_part(found, split, test_fraction, split_seed)
            files += found
            labels += [label] * len(found)
        self.files, self.targets = files, labels
        seg_root = base / segmentation_dir
        if not seg_root.is_dir() and presplit:
            seg_root = base.parent / segmentation_dir
        self.mask_files = _index_masks(seg_root, [f.stem for f in files])
        self.class_weights = class_weights(self.targets, num_classes=len(self.classes))
        n_seg = sum(m is not None for m in self.mask_files)
        log.info("ISIC %s: %d images, %d with a patch segmentation", split, len(files), n_seg)

    def _load(self, index: int) -> tuple[Image.Image, int, np.ndarray | None]:
        mask_file = self.mask_files[index]
        mask = self._read_mask(mask_file) if mask_file is not None else None
        return open_rgb(self.files[index]), self.targets[index], mask


def _stratified_part(files: list[Path], split: str, test_fraction: float, seed: int) -> list[Path]:
    perm = np.random.default_rng(seed).permutation(len(files))
    n_test = int(round(test_fraction * len(files)))
    chosen = perm[:n_test] if split == "test" else perm[n_test:]
    return [files[i] for i in sorted(chosen)]


def _index_masks(folder: Path, stems: list[str]) -> list[Path | None]:
    if not folder.is_dir():
        return [None] * len(stems)
    by_stem: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in MASK_EXTENSIONS:
            by_stem.setdefault(p.stem, p)
    return [by_stem.get(s) for s in stems]


class _TorchvisionMasks(PairedImageDataset):
    """A dataset read through a torchvision dataset's files, with masks derived from its
    annotations: ``root``, ``split`` (``"train"`` / ``"test"``), ``download``, then the
    transform options. Subclasses build ``self.base`` and their index in :meth:`_read`."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        download: bool = False,
        **transform_options: Any,
    ) -> None:
        super().__init__(**transform_options)
        check_split(split)
        self._read(Path(root).expanduser(), split, download)

    def _read(self, root: Path, split: str, download: bool) -> None:
        """Open the torchvision dataset under ``root`` and set ``targets`` and ``classes``."""
        raise NotImplementedError


class OxfordPetMasks(_TorchvisionMasks):
    """Oxford-IIIT-Pet (37 breeds) through torchvision's files; mask = the trimap's background.

    The trimap PNGs hold 1 = pet, 2 = background, 3 = not classified (the border); the mask is
    ``trimap == 2`` (Parkhi et al. 2012; the paper masks the background). ``root`` is
    torchvision's root (holding ``oxford-iiit-pet/``) or that folder itself; ``split="train"``
    reads ``trainval.txt``, ``"test"`` reads ``test.txt``.
    """

    def _read(self, root: Path, split: str, download: bool) -> None:
        from torchvision.datasets import OxfordIIITPet  # heavy: only this dataset needs it

        if root.name == "oxford-iiit-pet" and not (root / "oxford-iiit-pet").is_dir():
            root = root.parent
        tv_split = "trainval" if split == "train" else "test"
        self.base = _torchvision_call(
            "Oxford-IIIT-Pet",
            root,
            download,
            lambda: OxfordIIITPet(str(root), tv_split, target_types="category", download=download),
        )
        self.targets = [int(v) for v in self.base._labels]
        self.classes = list(self.base.classes)

    def _load(self, index: int) -> tuple[Image.Image, int, np.ndarray | None]:
        trimap_path = self.base._segs[index]
        try:
            with Image.open(trimap_path) as im:
                trimap = np.asarray(im)
        except (OSError, SyntaxError) as err:
            if isinstance(err, FileNotFoundError | PermissionError):
                raise
            raise UserError(
                f"trimap file {trimap_path} cannot be read: it is corrupt or truncated ({err})",
                hint="restore it from the Oxford-IIIT-Pet annotations archive",
            ) from None
        if trimap.ndim != 2 or not np.isin(np.unique(trimap), (1, 2, 3)).all():
            raise ValueError(
                f"{trimap_path} is not an Oxford-IIIT-Pet trimap (values 1 = pet, "
                "2 = background, 3 = border); check the annotations folder"
            )
        return (
            open_rgb(self.base._images[index]),
            self.targets[index],
            (trimap == 2).astype(np.uint8),
        )


#: VOC class ids of the paper's SBD subset (Schramowski et al. 2020); label = position here.
SBD_CLASS_IDS: dict[str, int] = {"bird": 3, "bus": 6, "cat": 8, "dog": 12, "horse": 13}


@functools.lru_cache(maxsize=8)
def _sbd_segmentation(mat_path: str) -> np.ndarray:
    from scipy.io import loadmat  # heavy: only SBD's .mat files need it

    mat = loadmat(mat_path)
    try:
        return np.asarray(mat["GTcls"][0]["Segmentation"][0])
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(
            f"{mat_path} is not an SBD class file: expected a 'GTcls' struct with a "
            "'Segmentation' field (the benchmark_RELEASE/dataset/cls/*.mat format)"
        ) from err


@functools.lru_cache(maxsize=4)
def _sbd_index(mat_paths: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """(file index, VOC class id) of the files with exactly one of the subset's classes."""
    wanted = np.array(sorted(SBD_CLASS_IDS.values()))
    keep = []
    for i, path in enumerate(mat_paths):
        present = np.intersect1d(np.unique(_sbd_segmentation(path)), wanted)
        if present.size == 1:
            keep.append((i, int(present[0])))
    return tuple(keep)


class SBDMasks(_TorchvisionMasks):
    """SBD (PASCAL VOC 2011 images) through torchvision's ``SBDataset`` files, 5-class subset.

    Keeps the images in which exactly one of bird, bus, cat, dog, horse appears (other VOC
    classes may appear too); label = that class's index in ``classes``; mask = 1 everywhere
    except that object's pixels. ``split="train"`` reads SBD's ``train.txt``, ``"test"`` its
    ``val.txt``.
    """

    def _read(self, root: Path, split: str, download: bool) -> None:
        from torchvision.datasets import SBDataset  # heavy: only this dataset needs it

        image_set = "train" if split == "train" else "val"
        if not download and not (root / f"{image_set}.txt").is_file():
            raise ValueError(
                f"no SBD files under {root} (expected {image_set}.txt, img/, cls/ as in "
                "benchmark_RELEASE/dataset); point root= there, or download=True when online"
            )
        self.base = _torchvision_call(
            "SBD",
            root,
            download,
            lambda: SBDataset(str(root), image_set, mode="segmentation", download=download),
        )
        self.classes = list(SBD_CLASS_IDS)
        index = _sbd_index(tuple(self.base.masks))
        ids = {v: k for k, v in enumerate(SBD_CLASS_IDS.values())}
        self.files = [Path(self.base.images[i]) for i, _ in index]
        self.mat_files = [self.base.masks[i] for i, _ in index]
        self.voc_ids = [c for _, c in index]
        self.targets = [ids[c] for c in self.voc_ids]
        if not self.targets:
            raise ValueError(f"no SBD image under {root} has exactly one of {self.classes}")
        log.info("SBD %s: kept %d of %d images", image_set, len(self.targets), len(self.base))

    def _load(self, index: int) -> tuple[Image.Image, int, np.ndarray | None]:
        seg = _sbd_segmentation(self.mat_files[index])
        mask = (seg != self.voc_ids[index]).astype(np.uint8)
        return open_rgb(self.files[index]), self.targets[index], mask


def _torchvision_call(name: str, root: Path, download: bool, make: Any) -> Any:
    """Build a torchvision dataset, turning missing files and failed downloads into advice."""
    try:
        return make()
    except Exception as err:
        if download:
            raise RuntimeError(
                f"Could not download {name} into {root} ({type(err).__name__}: {err}). This "
                f"machine may be offline: download the {name} files elsewhere, copy them under "
                "root= in torchvision's layout, and use download=False."
            ) from err
        if isinstance(err, (RuntimeError, FileNotFoundError)):
            raise ValueError(
                f"{name} files not found under {root} ({err}). Point root= at the folder in "
                "torchvision's layout, or pass download=True when online."
            ) from err
        raise


# ------------------------------------------------------------------ registrations

_RGB: dict[str, Any] = dict(in_channels=3, normalization=IMAGENET_NORMALIZATION)


def _transform_options(
    image_size: int | None, options: dict[str, Any], default: int = 224
) -> dict[str, Any]:
    """Pop the transform options; ``image_size=None`` means the dataset's default size.

    Option ``native_size=True`` keeps every file's own size (no resize).
    """
    keys = ("normalization", "augment", "transform", "mask_threshold")
    opts = {k: options.pop(k) for k in keys if k in options}
    native = bool(options.pop("native_size", False))
    opts["image_size"] = None if native else (image_size if image_size is not None else default)
    return opts


def _register(
    name: str,
    build: Callable[..., Any],
    *,
    needs_root: str,
    summary: str,
    own_files: str | None = None,
    **metadata: Any,
) -> None:
    """Register ``build(root, split, [download,] **options)`` as the dataset ``name`` with the
    registry's common factory signature ``(split, root, seed, image_size, download, **options)``.

    ``needs_root``: what ``root=`` must hold (said when it is missing). ``own_files``: the
    dataset reads only the user's files, and this is said when ``download=True``; otherwise
    ``download`` is passed on. The registry passes ``seed`` to every factory; these datasets
    have fixed splits (ISIC's own split is seeded by its ``split_seed`` option), so it is not
    used.
    """

    def factory(
        split: str = "train",
        root: str | None = None,
        seed: int = 0,
        image_size: int | None = None,
        download: bool = False,
        **options: Any,
    ) -> Any:
        if own_files is not None and download:
            raise ValueError(own_files)
        if root is None:
            raise ValueError(f"{name} needs root= {needs_root}")
        topts = _transform_options(image_size, options)
        passed = {} if own_files is not None else {"download": download}
        return build(root, split, **passed, **options, **topts)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = summary
    DATASETS.register(name, image_size=224, **metadata, **_RGB)(factory)


def _your_files(name: str) -> str:
    return f"{name} reads your own files and cannot download; pass download=False"


_register(
    "isic",
    ISIC,
    needs_root="the folder holding benign/ and malignant/",
    own_files="ISIC cannot be downloaded: build the CDEP folder layout and pass root=",
    summary="ISIC benign/malignant with patch masks (the split is seeded by ``split_seed``).",
    num_classes=2,
    has_masks=True,
    mask_pool="max",
)
_register(
    "oxford_pet",
    OxfordPetMasks,
    needs_root="torchvision's root holding oxford-iiit-pet/",
    summary="Oxford-IIIT-Pet with background masks.",
    num_classes=37,
    has_masks=True,
    mask_pool="min",
)
_register(
    "sbd",
    SBDMasks,
    needs_root="the SBD folder holding img/, cls/, train.txt, val.txt",
    summary="SBD bird/bus/cat/dog/horse with everything-but-the-object masks.",
    num_classes=5,
    has_masks=True,
    mask_pool="min",
)
_register(
    "masked_folder",
    MaskedImageFolder,
    needs_root="the folder holding the images",
    own_files=_your_files("masked_folder"),
    summary="Your own images + parallel mask folder (see :class:`MaskedImageFolder`).",
    num_classes=None,
    has_masks=True,
    mask_pool="max",
)
_register(
    "image_folder",
    ImageFolderDataset,
    needs_root="the folder holding the images",
    own_files=_your_files("image_folder"),
    summary="Any ImageFolder classification set (Stanford Dogs, ASL, Plant Village), zero masks.",
    num_classes=None,
    has_masks=False,
    mask_pool="max",
)
