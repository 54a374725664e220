"""Registered model factories: ``MODELS.get(name)(num_classes=..., in_channels=..., ...)``.

Each entry's metadata names its ``target_layer`` (dotted name of the last conv layer, where
CAMs and the Bayesian feedback act) and its native ``input_size``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rightfocus._registry import MODELS
from rightfocus.models.lenet import LeNet, LeNet5

__all__ = ["build_model", "load_weights_file"]


@MODELS.register("lenet", target_layer="features.conv2", input_size=28)
def lenet(num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> nn.Module:
    """The Bayesian-feedback paper's LeNet (3x3 convs)."""
    return LeNet(num_classes, in_channels, image_size)


@MODELS.register("lenet5", target_layer="features.conv2", input_size=28)
def lenet5(num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> nn.Module:
    """Classic LeNet-5 (5x5 convs)."""
    return LeNet5(num_classes, in_channels, image_size)


def load_weights_file(model: nn.Module, path: str | Path, strict: bool = True) -> nn.Module:
    """Load a state dict from ``path`` with ``weights_only=True``; clear errors on bad files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt, truncated or carrying pickled code
        raise ValueError(
            f"Could not load weights from {path}: {err}. The file may be truncated or corrupt, or "
            "hold pickled objects (only plain tensors are accepted). Re-save it with "
            "torch.save(model.state_dict(), path)."
        ) from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    model.load_state_dict(state, strict=strict)
    return model


def build_model(name: str, **kwargs: object) -> nn.Module:
    """Build a registered model by name (unknown names list the known ones)."""
    return MODELS.get(name)(**kwargs)  # type: ignore[no-any-return]
