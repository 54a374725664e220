"""A feedback overlay: a run's training pool with the masks of a feedback store.

``data.options.feedback_store: PATH`` in any config wraps that config's training pool (after
``max_train``) in :class:`FeedbackOverlay`: image ``i`` gets the store's mask ``i`` (1 = "must
not use this pixel"), every other image an all-zero mask (no feedback). Images and labels are
untouched. Set ``data.feedback_fraction: 1.0`` to keep every stored mask.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from rightfocus.feedback.store import FeedbackStore, image_sha256

__all__ = ["FeedbackOverlay"]


class FeedbackOverlay(Dataset[tuple[Tensor, Tensor, Tensor]]):
    """``(image, label, mask)`` of ``dataset`` with masks from a feedback store.

    Every stored mask is checked when the overlay is built: its index must exist in the pool,
    its shape must be the image's and the image's SHA-256 must be the one it was painted on
    (else the store belongs to other data: ValueError naming the image).

    Args:
        dataset: the training pool. store: a :class:`rightfocus.feedback.FeedbackStore` or
            its folder.

    Attributes:
        masks: pool index -> float32 ``(1, H, W)`` mask.
    """

    def __init__(self, dataset: Dataset[Any], store: Any) -> None:
        if not isinstance(store, FeedbackStore):
            path = Path(store)
            if not path.is_dir():
                raise FileNotFoundError(
                    f"data.options.feedback_store {path} is not a folder; point it at the "
                    "feedback store of `rightfocus studio` (default <run>/feedback)"
                )
            store = FeedbackStore(path)
        self.dataset = dataset
        self.store = store
        n = len(dataset)  # type: ignore[arg-type]
        self.masks: dict[int, Tensor] = {}
        for i in store.indices():
            if i >= n:
                raise ValueError(
                    f"Feedback store {store.root} has a mask for image {i} but the training "
                    f"pool has {n} images: the store belongs to other data"
                )
            loaded = store.load(i)
            assert loaded is not None
            mask, rec = loaded
            image = dataset[i][0]
            if tuple(image.shape[-2:]) != tuple(mask.shape):
                raise ValueError(
                    f"Feedback mask {i} is {tuple(mask.shape)} but the image is "
                    f"{tuple(image.shape[-2:])}: the store belongs to other data or image_size"
                )
            if rec.image_sha256 and rec.image_sha256 != image_sha256(image):
                raise ValueError(
                    f"Feedback mask {i} was painted on a different image than the pool's image "
                    f"{i} (SHA-256 differs): the store belongs to other data"
                )
            self.masks[i] = torch.from_numpy(mask.astype("float32"))[None]

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        image, label, mask = self.dataset[index][:3]
        stored = self.masks.get(int(index))
        if stored is None:
            return image, label, torch.zeros_like(mask)
        return image, label, stored.to(mask.dtype).expand_as(mask).clone()

    def __getattr__(self, name: str) -> Any:
        if name == "dataset" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.dataset, name)
