"""Image datasets read from files, with their masks, through one paired transform.

:class:`PairedImageDataset` is the shared shell: a subclass lists its samples and implements
``_load(index) -> (PIL image, label, binary (H, W) mask or None)``; the shell applies the
:class:`~rightfocus.data.transforms.PairedTransform` so image and mask stay aligned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from rightfocus.data.base import check_split
from rightfocus.data.transforms import (
    IMAGE_EXTENSIONS,
    IMAGENET_NORMALIZATION,
    MASK_EXTENSIONS,
    Normalization,
    PairedTransform,
    read_mask,
)
from rightfocus.errors import UserError

__all__ = [
    "ImageFolderDataset",
    "MaskedImageFolder",
    "PairedImageDataset",
    "find_class_folders",
    "list_images",
    "split_folder",
]

log = logging.getLogger(__name__)


class PairedImageDataset(Dataset[tuple[Tensor, int, Tensor]]):
    """Base class: ``(image, label, mask)`` from files, image and mask transformed together.

    Args:
        image_size: square output side (224 in the paper); ``None`` keeps each file's size.
        normalization: ``(mean, std)`` for the image (ImageNet by default) or ``None``.
        augment: ``None`` or ``"crop_flip"`` (see :class:`PairedTransform`).
        transform: a ready :class:`PairedTransform` (or any ``(image, mask) -> (image, mask)``
            callable) replacing the one built from the three arguments above.
        mask_threshold: binarise soft mask files at this value instead of rejecting them.

    Attributes:
        targets: the label of every sample (list of int), for splits and class weights.
        classes: class names, index = label.
    """

    targets: list[int]
    classes: list[str]

    def __init__(
        self,
        image_size: int | None = 224,
        normalization: Normalization | None = IMAGENET_NORMALIZATION,
        augment: str | None = None,
        transform: Callable[..., tuple[Tensor, Tensor]] | None = None,
        mask_threshold: float | None = None,
    ) -> None:
        norm = None if normalization is None else tuple(tuple(v) for v in normalization)
        self.transform = transform or PairedTransform(image_size, norm, augment)  # type: ignore[arg-type]
        self.mask_threshold = mask_threshold

    def __len__(self) -> int:
        return len(self.targets)

    def _load(self, index: int) -> tuple[Image.Image, int, np.ndarray | None]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[Tensor, int, Tensor]:
        image, label, mask = self._load(index)
        if mask is None:
            mask = np.zeros((image.height, image.width), dtype=np.uint8)
        elif tuple(mask.shape[-2:]) != (image.height, image.width):
            raise UserError(
                f"mask {self._mask_name(index)} is {mask.shape[-1]}x{mask.shape[-2]} pixels but "
                f"its image {self._image_name(index)} is {image.width}x{image.height}",
                hint="masks must have their image's width and height",
            )
        x, m = self.transform(image, mask)
        return x, int(label), m

    def _image_name(self, index: int) -> str:
        files = getattr(self, "files", None)
        return str(files[index]) if files is not None else f"#{index}"

    def _mask_name(self, index: int) -> str:
        masks = getattr(self, "mask_files", None)
        return str(masks[index]) if masks is not None else f"of sample #{index}"

    def _read_mask(self, path: Path) -> np.ndarray:
        """Read a mask file; a corrupt or truncated file is an error naming it."""
        try:
            return read_mask(path, self.mask_threshold)
        except (UnidentifiedImageError, OSError, SyntaxError, EOFError, ValueError) as err:
            if isinstance(err, FileNotFoundError | PermissionError):
                raise
            if isinstance(err, ValueError) and str(path) in str(err):
                raise  # already names the file (e.g. non-binary values)
            raise UserError(
                f"mask file {path} cannot be read: it is corrupt or truncated ({err})",
                hint="replace or delete it",
            ) from None


def open_rgb(path: str | Path) -> Image.Image:
    """Open an image file as RGB (loaded, file closed).

    Raises:
        UserError: the file is not a readable image (corrupt or truncated), naming it.
    """
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        if isinstance(err, FileNotFoundError | PermissionError):
            raise
        raise UserError(
            f"image file {path} cannot be read: it is corrupt or truncated ({err})",
            hint="replace or delete it",
        ) from None


def list_images(folder: Path, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Sorted image files directly in ``folder`` (by extension, case-insensitive)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in extensions)


def find_class_folders(base: Path, classes: Sequence[str] | None = None) -> list[str]:
    """Class folder names under ``base`` (sorted), or check that the given ``classes`` exist.

    Raises:
        ValueError: ``base`` is missing or has no class folders, or a requested class folder
            is missing.
    """
    if not base.is_dir():
        raise ValueError(f"dataset folder {base} does not exist; check root=")
    found = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        if not found:
            raise ValueError(
                f"{base} has no class folders; expected one sub-folder per class "
                "(e.g. root/cat/001.jpg, root/dog/002.jpg)"
            )
        return found
    missing = [c for c in classes if c not in found]
    if missing:
        raise ValueError(
            f"missing class folder(s) {missing} in {base} (found {found}); create them or "
            "pass the classes present"
        )
    return list(classes)


def split_folder(root: str | Path | None, split: str) -> Path:
    """The folder of ``split``: ``root/<split>`` when it exists, else ``root`` for ``"train"``.

    Raises:
        ValueError: no ``root``; or ``split="test"`` without a ``root/test`` folder.
    """
    check_split(split)
    if root is None:
        raise ValueError("this dataset is read from disk: pass root= the folder holding it")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise ValueError(f"root folder {base} does not exist")
    if (base / split).is_dir():
        return base / split
    if split == "train":
        return base
    raise ValueError(
        f"no test folder {base / 'test'}: put the independent test set there "
        "(same class sub-folders as root/train), or use split='train' with k-fold splits"
    )


def _scan_classes(
    base: Path, classes: Sequence[str], allow_empty: bool = False
) -> tuple[list[Path], list[int]]:
    """Image files and labels of every class folder; an empty class folder is an error (it
    would become a class the model can never see) unless ``allow_empty`` (a test split whose
    classes come from the train folder: a class absent from the test set is logged)."""
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        found = list_images(base / name)
        if not found and allow_empty:
            log.warning("class folder %s holds no images: class %r is absent", base / name, name)
        elif not found:
            raise UserError(
                f"class folder {base / name} holds no images ({', '.join(IMAGE_EXTENSIONS)})",
                hint="add images or remove the folder",
            )
        files += found
        labels += [label] * len(found)
    if not files:
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found under {base}")
    return files, labels


def _train_classes(root: str | Path | None, split: str) -> list[str] | None:
    """When a ``root/train`` folder exists, its classes fix the labels of every split."""
    if split == "test" and root is not None and (Path(root) / "train").is_dir():
        return find_class_folders(Path(root) / "train")
    return None


class ImageFolderDataset(PairedImageDataset):
    """An ``ImageFolder`` layout (``<base>/<class>/<image>``) with all-zero masks.

    For classification sets without explanation feedback (Stanford Dogs, ASL, Plant Village,
    ...), so every guidance method runs on them. ``<base>`` is ``root/<split>`` when that
    exists, else ``root`` (train only).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        classes: Sequence[str] | None = None,
        **transform_options: Any,
    ) -> None:
        super().__init__(**transform_options)
        base = split_folder(root, split)
        from_train = classes is None and _train_classes(root, split) is not None
        classes = classes or _train_classes(root, split)
        self.classes = find_class_folders(base, classes)
        self.files, self.targets = _scan_classes(base, self.classes, allow_empty=from_train)
        log.info("ImageFolder %s: %d images, %d classes", base, len(self.files), len(self.classes))

    def _load(self, index: int) -> tuple[Image.Image, int, np.ndarray | None]:
        return open_rgb(self.files[index]), self.targets[index], None


class MaskedImageFolder(PairedImageDataset):
    """Images plus a parallel mask folder, for users' own data.

    Layout (``<base>`` = ``root/<split>`` when it exists, else ``root`` for train)::

        <base>/images/<class>/<name>.jpg
        <base>/masks/<class>/<name>.png     (or .npy; 1/255 = must not be used, 0 = free)

    An image without a mask file gets an all-zero mask (no feedback) unless
    ``require_masks=True``. Masks must have their image's size and binary values (see
    ``mask_threshold``).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        classes: Sequence[str] | None = None,
        image_dir: str = "images",
        mask_dir: str = "masks",
        require_masks: bool = False,
        **transform_options: Any,
    ) -> None:
        super().__init__(**transform_options)
        base = split_folder(root, split)
        if not (base / image_dir).is_dir():
            raise ValueError(f"no image folder {base / image_dir}; expected {image_dir}/<class>/")
        from_train = classes is None and _folder_train_classes(root, split, image_dir) is not None
        classes = classes or _folder_train_classes(root, split, image_dir)
        self.classes = find_class_folders(base / image_dir, classes)
        self.files, self.targets = _scan_classes(
            base / image_dir, self.classes, allow_empty=from_train
        )
        self.mask_files: list[Path | None] = []
        for f in self.files:
            self.mask_files.append(_match_mask(base / mask_dir / f.parent.name, f.stem))
        n_missing = sum(m is None for m in self.mask_files)
        if n_missing and require_masks:
            first = next(f for f, m in zip(self.files, self.mask_files, strict=True) if m is None)
            raise ValueError(f"{n_missing} images have no mask file (first: {first})")
        log.info(
            "MaskedImageFolder %s: %d images, %d with masks", base, len(self), len(self) - n_missing
        )

    def _load(self, index: int) -> tuple[Image.Image, int, np.ndarray | None]:
        mask_file = self.mask_files[index]
        mask = self._read_mask(mask_file) if mask_file is not None else None
        return open_rgb(self.files[index]), self.targets[index], mask


def _folder_train_classes(root: str | Path, split: str, image_dir: str) -> list[str] | None:
    train = Path(root) / "train" / image_dir
    return find_class_folders(train) if split == "test" and train.is_dir() else None


def _match_mask(folder: Path, stem: str) -> Path | None:
    for ext in MASK_EXTENSIONS:
        candidate = folder / f"{stem}{ext}"
        if candidate.is_file():
            return candidate
    return None


def labels_tensor(dataset: PairedImageDataset) -> Tensor:
    """The dataset's labels as an int64 tensor."""
    return torch.as_tensor(dataset.targets, dtype=torch.int64)
