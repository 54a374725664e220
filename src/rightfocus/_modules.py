"""Finding layers in a model: by module, by dotted name, the family default, or the last conv.

Also how a layer's output is laid out in space (:func:`to_grid`): ``(B, K, h, w)`` maps of a
CNN, ``(B, N, C)`` tokens of a vision transformer (class / distillation tokens first, then the
patch grid in row-major order) or the channels-last ``(B, H, W, C)`` maps of a Swin
transformer, so that CAMs work on every family without a user-written reshape function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "GridLayout",
    "conv_layers",
    "default_layer",
    "default_layer_name",
    "grid_layout",
    "is_conv",
    "last_conv",
    "resolve_layer",
    "token_grid",
]


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
        found = _by_path(model, layer)
        if found is not None:
            return found
        convs = [name for name, _ in conv_layers(model)]
        raise ValueError(
            f"The model has no layer named {layer!r}. Its conv layers are: "
            f"{', '.join(convs) if convs else '(none)'}; "
            "see model.named_modules() for every name."
        )
    raise TypeError(
        f"layer must be an nn.Module, a dotted name or None, not {type(layer).__name__}"
    )


def _by_path(model: nn.Module, path: str) -> nn.Module | None:
    """``"blocks.-1.norm1"``: dotted names whose numeric parts may count from the end."""
    module: nn.Module = model
    for part in path.split("."):
        children = dict(module.named_children())
        if part in children:
            module = children[part]
        elif part.lstrip("-").isdigit() and isinstance(module, (nn.Sequential, nn.ModuleList)):
            try:
                module = module[int(part)]
            except IndexError:
                return None
        else:
            return None
    return module if module is not model else None


# (class name test, candidate paths): the first path that exists is the family's default layer.
_FAMILY_LAYERS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("Swin",), ("norm",)),
    (("VisionTransformer", "Deit", "Eva", "Beit"), ("blocks.-1.norm1", "encoder.layers.-1.ln_1")),
    (("ViTFor",), ("vit.layers.-1.layernorm_before", "vit.encoder.layer.-1.layernorm_before")),
    (("ConvNeXt",), ("stages.-1",)),
    (("EfficientNet",), ("bn2", "features.-1")),
    (("MobileNetV3", "MobileNet"), ("blocks.-1", "features.-1")),
    (("RegNet",), ("s4", "trunk_output")),
    (("DenseNet",), ("features.-1",)),
    (("ResNet",), ("layer4",)),
)


def default_layer_name(model: nn.Module) -> str:
    """Dotted name of the family's usual CAM layer, else the last conv.

    The last stage of a CNN (ConvNeXt ``stages.-1``, EfficientNet ``bn2``, MobileNetV3
    ``blocks.-1``, RegNet ``s4``, DenseNet ``features.-1``, ResNet ``layer4``); the last
    block's first norm of a ViT/DeiT (``blocks.-1.norm1``; transformers' ViT
    ``vit.layers.-1.layernorm_before``: their tokens all receive gradient,
    unlike the final norm's under class-token pooling); the final norm of a Swin (``norm``).
    Negative indices count from the end (:func:`resolve_layer` accepts them).
    """
    cls = type(model).__name__
    for keys, paths in _FAMILY_LAYERS:
        if any(cls.startswith(k) for k in keys):
            for path in paths:
                if _by_path(model, path) is not None:
                    return path
    convs = conv_layers(model)
    if not convs:
        last_conv(model)  # raises the explanatory error
    return convs[-1][0]


def default_layer(model: nn.Module) -> nn.Module:
    """The module named by :func:`default_layer_name`."""
    found = _by_path(model, default_layer_name(model))
    assert found is not None
    return found


@dataclass(frozen=True)
class GridLayout:
    """How a layer output maps to a ``(B, K, h, w)`` grid: ``kind`` is ``"nchw"``, ``"nhwc"``
    or ``"tokens"`` (with ``prefix`` leading class/distillation tokens and a ``grid``)."""

    kind: str
    prefix: int = 0
    grid: tuple[int, int] = (0, 0)

    def to_grid(self, act: Tensor) -> Tensor:
        if self.kind == "nchw":
            return act
        if self.kind == "nhwc":
            return act.permute(0, 3, 1, 2)
        h, w = self.grid
        tokens = act[:, self.prefix :]
        return tokens.transpose(1, 2).reshape(act.shape[0], act.shape[2], h, w)

    def from_grid(self, grid: Tensor, act: Tensor) -> Tensor:
        """Inverse of :meth:`to_grid` (``act`` supplies the prefix tokens); a new tensor."""
        if self.kind == "nchw":
            return grid.clone()
        if self.kind == "nhwc":
            return grid.permute(0, 2, 3, 1).contiguous()
        return torch.cat([act[:, : self.prefix], grid.flatten(2).transpose(1, 2)], dim=1)


def _patch_embed(model: nn.Module) -> nn.Module | None:
    for name, module in model.named_modules():
        if name.split(".")[-1] in ("patch_embed", "patch_embeddings"):
            return module
    return None


def token_grid(model: nn.Module, n: int) -> tuple[int, tuple[int, int]] | None:
    """``(prefix tokens, (h, w))`` for ``n`` tokens: from the patch embedding's grid and the
    model's ``num_prefix_tokens`` when it has them, else a square grid after 0-2 prefixes."""
    embed = _patch_embed(model)
    grid = getattr(embed, "grid_size", None)
    if grid is None and isinstance(getattr(embed, "image_size", None), (tuple, list)):
        # transformers' patch embeddings: (image_size, patch_size) pairs
        grid = [i // p for i, p in zip(embed.image_size, embed.patch_size, strict=True)]  # type: ignore[union-attr,arg-type]
    prefix = getattr(model, "num_prefix_tokens", None)
    if grid is not None and len(grid) == 2:
        h, w = int(grid[0]), int(grid[1])
        for p in (prefix,) if prefix is not None else (0, 1, 2):
            if p is not None and n - p == h * w:
                return p, (h, w)
    for p in (prefix,) if prefix is not None else (0, 1, 2):
        side = math.isqrt(max(n - (p or 0), 0))
        if side > 0 and side * side == n - (p or 0):
            return p or 0, (side, side)
    return None


def grid_layout(model: nn.Module, layer: nn.Module, act: Tensor) -> GridLayout:
    """The :class:`GridLayout` of ``layer``'s output ``act`` in ``model`` (clear error if none).

    4-d outputs are ``(B, K, h, w)``, except in a model whose patch embedding emits
    channels-last maps (timm Swin, ``output_fmt`` NHWC) where non-convolutional layers give
    ``(B, H, W, C)``. 3-d outputs are tokens ``(B, N, C)``: the leading class/distillation
    tokens are dropped and the rest reshaped to the patch grid.
    """
    if act.dim() == 4:
        fmt = str(getattr(_patch_embed(model), "output_fmt", ""))
        conv_like = is_conv(layer) or isinstance(layer, nn.modules.batchnorm._BatchNorm)
        return GridLayout("nhwc" if fmt.endswith("NHWC") and not conv_like else "nchw")
    if act.dim() == 3:
        found = token_grid(model, act.shape[1])
        if found is not None:
            return GridLayout("tokens", found[0], found[1])
        raise ValueError(
            f"{type(layer).__name__} gives {act.shape[1]} tokens, which do not form a patch grid "
            "after 0, 1 or 2 class/distillation tokens (and the model has no patch_embed.grid_size "
            "and num_prefix_tokens to say otherwise). Choose a layer with (B, K, h, w) maps or "
            "(B, tokens, C) outputs of the patch grid."
        )
    raise ValueError(
        f"CAM methods need a layer with (B, K, h, w) output (maps) or (B, tokens, C) tokens; "
        f"{type(layer).__name__} gives {tuple(act.shape)}. Choose a convolutional stage or a "
        "transformer block's norm."
    )
