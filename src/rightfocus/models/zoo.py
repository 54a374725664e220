"""Registered model factories: ``MODELS.get(name)(num_classes=..., in_channels=..., ...)``.

Each entry's metadata names its ``target_layer`` (dotted name of the last conv layer, where
CAMs and the Bayesian feedback act) and its native ``input_size``; ``imagenet_init=True`` marks
a model whose papers start from ImageNet weights (the engine then refuses a random init unless
the config asks for it with ``model.weights: random``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rightfocus._registry import MODELS
from rightfocus.bayes.convert import mark_weights_loaded
from rightfocus.models.lenet import LeNet, LeNet5
from rightfocus.models.xdnn import XResNet, to_xdnn

__all__ = ["build_model", "load_weights_file"]

log = logging.getLogger(__name__)


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

    return mark_weights_loaded(model)  # to_bayesian then keeps these weights


def build_model(name: str, **kwargs: object) -> nn.Module:
    """Build a registered model by name (unknown names list the known ones)."""
    return MODELS.get(name)(**kwargs)  # type: ignore[no-any-return]


# --- ImageNet architectures and X-DNNs -----------------------------------------------------------


def _read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict read with ``weights_only=True`` (via :func:`load_weights_file`'s checks)."""
    holder = _StateHolder()
    load_weights_file(holder, path, strict=False)
    return holder.state


class _StateHolder(nn.Module):
    """Receives a whole state dict through ``load_state_dict`` (used by :func:`_read_state`)."""

    def __init__(self) -> None:
        super().__init__()
        self.state: dict[str, torch.Tensor] = {}

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        del strict, assign
        self.state = {k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
        return None


def _download_state(arch: str) -> dict[str, torch.Tensor]:
    """ImageNet weights through torchvision's download (cached under ``$TORCH_HOME``)."""
    # heavy: torchvision.models, only the torchvision-backed entries need it
    from torchvision import models as tvm

    enum = {"alexnet": tvm.AlexNet_Weights, "vgg16": tvm.VGG16_Weights}[arch]
    try:
        return enum.IMAGENET1K_V1.get_state_dict(progress=False)  # type: ignore[no-any-return]
    except Exception as err:  # offline, proxy, or a corrupt cache file
        raise RuntimeError(
            f"Could not get the pretrained {arch} ImageNet weights from {enum.IMAGENET1K_V1.url}: "
            f"{err}. Without internet access, download that file elsewhere and pass "
            f"weights='<path to the .pth file>' instead of pretrained=True."
        ) from err


def _load_partial(model: nn.Module, state: dict[str, torch.Tensor], load_biases: bool) -> None:
    """Copy every tensor of ``state`` whose name and shape match ``model`` (e.g. all but a
    classifier with another number of classes); with ``load_biases=False`` only weights, as the
    Bayesian-feedback paper did for its AlexNet weight means."""
    own = model.state_dict()
    used = {
        k: v
        for k, v in state.items()
        if k in own and own[k].shape == v.shape and (load_biases or not k.endswith(".bias"))
    }
    if not any(k.endswith(".weight") for k in used):
        raise ValueError(
            f"No weight in the given state dict matches {type(model).__name__} (its keys look "
            f"like {sorted(own)[:3]}; the file's like {sorted(state)[:3]}). Use a state dict "
            "saved from the same torchvision architecture."
        )
    skipped = sorted(k for k in state if k not in used and (load_biases or not k.endswith(".bias")))
    if skipped:
        log.info("Not loaded (missing or other shape): %s", ", ".join(skipped))
    model.load_state_dict(used, strict=False)


def _torchvision_model(
    arch: str,
    num_classes: int,
    in_channels: int,
    image_size: int,
    weights: str | Path | None,
    pretrained: bool,
    load_biases: bool,
) -> nn.Module:
    # heavy: torchvision.models, only the torchvision-backed entries need it
    from torchvision import models as tvm

    min_size = {"alexnet": 63, "vgg16": 32}[arch]
    if image_size < min_size:
        raise ValueError(f"{arch} needs images of at least {min_size}x{min_size}, got {image_size}")
    if weights is not None and pretrained:
        raise ValueError("Pass either weights=<file> or pretrained=True, not both")
    model: nn.Module = getattr(tvm, arch)(weights=None, num_classes=num_classes)
    if in_channels != 3:
        features: nn.Sequential = model.features  # type: ignore[assignment]
        first: nn.Conv2d = features[0]  # type: ignore[assignment]
        features[0] = nn.Conv2d(
            in_channels,
            first.out_channels,
            first.kernel_size,  # type: ignore[arg-type]
            first.stride,  # type: ignore[arg-type]
            first.padding,  # type: ignore[arg-type]
        )
    if weights is not None:
        _load_partial(model, _read_state(weights), load_biases)
    elif pretrained:
        _load_partial(model, _download_state(arch), load_biases)
    if weights is not None or pretrained:
        mark_weights_loaded(model)
    return model


@MODELS.register("alexnet", target_layer="features.10", input_size=224, imagenet_init=True)
def alexnet(
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 224,
    weights: str | Path | None = None,
    pretrained: bool = False,
    load_biases: bool = True,
) -> nn.Module:
    """torchvision's AlexNet with ``num_classes`` outputs (last conv ``features.10``, 256x13x13).

    ``weights``: a local state-dict file (loaded with ``weights_only=True``); ``pretrained``:
    torchvision's ImageNet weights (download; a clear error offline). Tensors whose shape does not
    fit (the classifier for another class count, the first conv for ``in_channels != 3``) keep
    their initialisation. ``load_biases=False`` loads only the weights (the Bayesian-feedback
    paper's protocol for the weight means).
    """
    return _torchvision_model(
        "alexnet", num_classes, in_channels, image_size, weights, pretrained, load_biases
    )


@MODELS.register("xalexnet", target_layer="features.10", input_size=224)
def xalexnet(
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 224,
    weights: str | Path | None = None,
    pretrained: bool = False,
) -> nn.Module:
    """X-AlexNet: AlexNet with every bias removed (Hesse et al. 2021); same weight options."""
    return to_xdnn(alexnet(num_classes, in_channels, image_size, weights, pretrained))


@MODELS.register("xvgg16", target_layer="features.28", input_size=224)
def xvgg16(
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 224,
    weights: str | Path | None = None,
    pretrained: bool = False,
) -> nn.Module:
    """X-VGG16: torchvision's VGG16 (no BatchNorm) with every bias removed (Hesse et al. 2021)."""
    model = _torchvision_model(
        "vgg16", num_classes, in_channels, image_size, weights, pretrained, True
    )
    return to_xdnn(model)


@MODELS.register("xresnet", target_layer="layer4.1.conv2", input_size=224)
def xresnet(
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 224,
    layers: tuple[int, int, int, int] = (2, 2, 2, 2),
    width: int = 64,
    zero_init: bool = True,
) -> nn.Module:
    """X-ResNet: Fixup-style ResNet without BatchNorm and biases (see ``xdnn.XResNet``).

    The registered ``target_layer`` is for the default ``layers``; in general it is
    ``f"layer4.{layers[3] - 1}.conv2"`` (also what ``_modules.last_conv`` finds).
    """
    return XResNet(num_classes, in_channels, image_size, layers, width, zero_init)


@MODELS.register("resnet18", target_layer="layer4.1.conv2", input_size=224)
def resnet18(
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 224,
    weights: str | Path | None = None,
) -> nn.Module:
    """torchvision's ResNet-18 (random init, or a local state-dict file via ``weights``; tensors
    whose shape does not fit, e.g. the classifier for another class count, keep their init).
    Used by the Proxy Attention CIFAR-100 experiment; last conv ``layer4.1.conv2``."""
    # heavy: torchvision.models, only the torchvision-backed entries need it
    from torchvision import models as tvm

    if image_size < 32:
        raise ValueError(f"resnet18 needs images of at least 32x32, got {image_size}")
    model = tvm.resnet18(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    if weights is not None:
        _load_partial(model, _read_state(weights), load_biases=True)
    return model
