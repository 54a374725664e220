"""The model-zoo contract, checked for EVERY registered model: it builds for a small input and
a given class count, its forward gives ``(B, num_classes)`` logits, and the ``target_layer``
named in its registry metadata exists in the built model."""

from __future__ import annotations

import pytest
import torch

from rightfocus import MODELS
from rightfocus._modules import resolve_layer
from rightfocus.attribution.outputs import select_output

NAMES = MODELS.names()
# The large timm / torchvision families take seconds each to build: slow (``make test`` runs them).
CASES = [
    pytest.param(n, marks=pytest.mark.slow) if MODELS.metadata(n).get("family") else n
    for n in NAMES
]
# Smallest input each architecture family accepts, to keep the test cheap (native 224 otherwise).
SMALL = {28: 28, 224: 64}
EXTRA = {"xresnet": {"width": 4}}


def _size(name: str) -> int:
    native = int(MODELS.metadata(name)["input_size"])
    return int(MODELS.metadata(name).get("min_input_size", SMALL.get(native, native)))


@pytest.mark.parametrize("name", CASES)
def test_model_builds_and_declares_an_existing_target_layer(name: str) -> None:
    meta = MODELS.metadata(name)
    assert isinstance(meta.get("target_layer"), str) and meta["target_layer"], name
    size = _size(name)
    channels = 1 if int(meta["input_size"]) == 28 else 3
    kwargs = {"num_classes": 5, "in_channels": channels, "image_size": size, **EXTRA.get(name, {})}
    model = MODELS.get(name)(**kwargs).eval()
    layer = resolve_layer(model, meta["target_layer"])
    assert any(layer is m for m in model.modules()), name
    seen: list[tuple[int, ...]] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape)))
    with torch.no_grad():
        out = select_output(model(torch.rand(2, channels, size, size)))  # e.g. .logits
    handle.remove()
    assert out.shape == (2, 5), name
    assert seen and seen[0][0] == 2, f"{name}: target layer {meta['target_layer']} not used"
