"""Finding layers in a model: by module, by dotted name, or the last convolution."""

from __future__ import annotations

from torch import nn

__all__ = ["conv_layers", "is_conv", "last_conv", "resolve_layer"]


def is_conv(module: nn.Module) -> bool:
    """True for 2-d convolutions, including Bayesian ones (class attribute ``conv_like``)."""
    return isinstance(module, nn.Conv2d) or bool(getattr(module, "conv_like", False))


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(dotted name, module) of every 2-d convolution in definition order."""
    return [(name, m) for name, m in model.named_modules() if is_conv(m)]


def last_conv(model: nn.Module) -> nn.Module:
    """The last 2-d convolution registered in ``model`` (the usual CAM target layer)."""
    convs = conv_layers(model)
    if not convs:
        raise ValueError(
            f"{type(model).__name__} has no Conv2d layer, so a CAM method has no default target "
            "layer. Pass layer=<a module or dotted name> of a layer with (B, K, h, w) output."
        )
    return convs[-1][1]


def resolve_layer(model: nn.Module, layer: nn.Module | str | None) -> nn.Module:
    """Turn ``layer`` (module, dotted name, or None = last conv) into a module of ``model``."""
    if layer is None:
        return last_conv(model)
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise ValueError(
                f"The layer {type(layer).__name__} passed is not a submodule of the model."
            )
        return layer
    if isinstance(layer, str):
        named = dict(model.named_modules())
        if layer in named and layer != "":
            return named[layer]
        convs = [name for name, _ in conv_layers(model)]
        raise ValueError(
            f"The model has no layer named {layer!r}. Its conv layers are: "
            f"{', '.join(convs) if convs else '(none)'}; "
            "see model.named_modules() for every name."
        )
    raise TypeError(
        f"layer must be an nn.Module, a dotted name or None, not {type(layer).__name__}"
    )
