"""Modern model families: timm and torchvision CNNs, vision transformers (random weights).

Registered like the rest of the zoo (``MODELS.get(name)(num_classes=..., ...)``); each entry's
``target_layer`` metadata is the family's default CAM layer
(:func:`rightfocus._modules.default_layer_name`, negative indices count from the end) and
``rightfocus list models`` shows it. Weights are never downloaded: timm models are built with
``pretrained=False``; pass ``weights=<local state-dict file>`` to load trained ones (loaded
with ``weights_only=True``). Extra keyword arguments go to the timm / torchvision constructor,
so tiny test models are a config away (``depth``, ``embed_dim``, ``growth_rate``, ...).
The transformers are built with ``fused_attn=False`` (explicit attention, which has a double
backward for input-gradient penalties); pass ``fused_attn=True`` for faster inference.

timm is an optional dependency: ``pip install rightfocus[timm]``; so is HuggingFace
transformers (``hf_vit``): ``pip install rightfocus[hf]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from rightfocus._registry import MODELS
from rightfocus.models.zoo import _load_partial, _read_state

__all__ = ["timm_model"]


def _timm() -> Any:
    try:
        import timm  # optional and heavy: imported only when such a model is built
    except ImportError as err:  # pragma: no cover - timm is in the dev extra
        raise ImportError(
            "This model comes from timm, an optional dependency: pip install 'rightfocus[timm]'"
        ) from err
    return timm


def _transformers() -> Any:
    try:
        import transformers  # optional and heavy: imported only when such a model is built
    except ImportError as err:  # pragma: no cover - transformers is in the dev extra
        raise ImportError(
            "This model comes from HuggingFace transformers, an optional dependency: "
            "pip install 'rightfocus[hf]'"
        ) from err
    return transformers


def _unfused(model: nn.Module, fused_attn: bool) -> nn.Module:
    """Set timm's ``fused_attn`` switch on every attention block. The fused kernel
    (``scaled_dot_product_attention``) has no double backward on CPU, which input-gradient
    penalties (RRR, X-Gradient) and ``create_graph`` attributions need; the unfused path
    computes the same attention explicitly."""
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            setattr(module, "fused_attn", bool(fused_attn))  # noqa: B010
    return model


def _finish(model: nn.Module, weights: str | Path | None) -> nn.Module:
    if weights is not None:
        _load_partial(model, _read_state(weights), load_biases=True)
    return model


def timm_model(
    arch: str,
    num_classes: int = 10,
    in_channels: int = 3,
    weights: str | Path | None = None,
    **options: Any,
) -> nn.Module:
    """``timm.create_model(arch, pretrained=False, ...)`` with a local ``weights`` file."""
    model = _timm().create_model(
        arch, pretrained=False, num_classes=num_classes, in_chans=in_channels, **options
    )
    return _finish(model, weights)


def _register_timm_cnn(name: str, arch: str, layer: str, summary: str) -> None:
    def factory(
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 224,
        weights: str | Path | None = None,
        **options: Any,
    ) -> nn.Module:
        del image_size  # fully convolutional: any input size
        return timm_model(arch, num_classes, in_channels, weights, **options)

    factory.__name__ = name
    factory.__doc__ = f"{summary} (timm ``{arch}``, random init; ``weights``: a local file)."
    MODELS.register(name, target_layer=layer, input_size=224, family="timm")(factory)


for _name, _layer, _summary in (
    ("convnext_atto", "stages.-1", "ConvNeXt-Atto: LayerNorm, GELU, depthwise convs, layer scale"),
    ("convnext_tiny", "stages.-1", "ConvNeXt-T (Liu et al. 2022)"),
    ("efficientnet_b0", "bn2", "EfficientNet-B0: SiLU, squeeze-excitation"),
    ("mobilenetv3_small_050", "blocks.-1", "MobileNetV3-Small 0.5: Hardswish, squeeze-excitation"),
    ("regnetx_002", "s4", "RegNetX-200MF"),
):
    _register_timm_cnn(_name, _name, _layer, _summary)


@MODELS.register("vit", target_layer="blocks.-1.norm1", input_size=224, family="timm")
def vit(
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 224,
    patch_size: int = 16,
    embed_dim: int = 768,
    depth: int = 12,
    num_heads: int = 12,
    weights: str | Path | None = None,
    fused_attn: bool = False,
    **options: Any,
) -> nn.Module:
    """Vision transformer (Dosovitskiy et al. 2021), timm's ``VisionTransformer``; defaults are
    ViT-B/16. One class token; CAMs reshape the patch tokens to the grid automatically."""
    _timm()
    from timm.models.vision_transformer import VisionTransformer  # optional (timm extra)

    model = VisionTransformer(
        img_size=image_size, patch_size=patch_size, in_chans=in_channels, num_classes=num_classes,
        embed_dim=embed_dim, depth=depth, num_heads=num_heads, **options,
    )  # fmt: skip
    return _finish(_unfused(model, fused_attn), weights)


@MODELS.register("deit_distilled", target_layer="blocks.-1.norm1", input_size=224, family="timm")
def deit_distilled(
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 224,
    patch_size: int = 16,
    embed_dim: int = 192,
    depth: int = 12,
    num_heads: int = 3,
    weights: str | Path | None = None,
    fused_attn: bool = False,
    **options: Any,
) -> nn.Module:
    """DeiT with a distillation token (Touvron et al. 2021), timm's
    ``VisionTransformerDistilled``; defaults are DeiT-Ti. Class and distillation tokens are
    dropped by the CAMs; in eval mode the output averages the two heads."""
    _timm()
    from timm.models.deit import VisionTransformerDistilled  # optional (timm extra)

    model = VisionTransformerDistilled(
        img_size=image_size, patch_size=patch_size, in_chans=in_channels, num_classes=num_classes,
        embed_dim=embed_dim, depth=depth, num_heads=num_heads, **options,
    )  # fmt: skip
    return _finish(_unfused(model, fused_attn), weights)


@MODELS.register("swin", target_layer="norm", input_size=224, family="timm")
def swin(
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 224,
    patch_size: int = 4,
    window_size: int = 7,
    embed_dim: int = 96,
    depths: tuple[int, ...] = (2, 2, 6, 2),
    num_heads: tuple[int, ...] = (3, 6, 12, 24),
    weights: str | Path | None = None,
    fused_attn: bool = False,
    **options: Any,
) -> nn.Module:
    """Swin transformer (Liu et al. 2021), timm's ``SwinTransformer``; defaults are Swin-T.
    Its maps are channels-last ``(B, H, W, C)``; CAMs permute them automatically."""
    _timm()
    from timm.models.swin_transformer import SwinTransformer  # optional (timm extra)

    model = SwinTransformer(
        img_size=image_size, patch_size=patch_size, window_size=window_size,
        in_chans=in_channels, num_classes=num_classes, embed_dim=embed_dim,
        depths=tuple(depths), num_heads=tuple(num_heads), **options,
    )  # fmt: skip
    return _finish(_unfused(model, fused_attn), weights)


@MODELS.register("resnet50", target_layer="layer4", input_size=224, family="torchvision")
def resnet50(
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 224,
    weights: str | Path | None = None,
) -> nn.Module:
    """torchvision's ResNet-50 (bottleneck blocks), random init or a local ``weights`` file."""
    from torchvision import models as tvm  # heavy: imported only when the model is built

    del image_size
    model = tvm.resnet50(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return _finish(model, weights)


@MODELS.register("densenet", target_layer="features.-1", input_size=224, family="torchvision")
def densenet(
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 224,
    growth_rate: int = 32,
    block_config: tuple[int, ...] = (6, 12, 24, 16),
    num_init_features: int = 64,
    bn_size: int = 4,
    weights: str | Path | None = None,
) -> nn.Module:
    """torchvision's DenseNet (Huang et al. 2017; concatenation); defaults are DenseNet-121."""
    from torchvision.models.densenet import DenseNet  # heavy: only when the model is built

    del image_size
    model = DenseNet(
        growth_rate=growth_rate, block_config=tuple(block_config),  # type: ignore[arg-type]
        num_init_features=num_init_features, bn_size=bn_size, num_classes=num_classes,
    )  # fmt: skip
    if in_channels != 3:
        model.features.conv0 = nn.Conv2d(
            in_channels, num_init_features, kernel_size=7, stride=2, padding=3, bias=False
        )
    return _finish(model, weights)


@MODELS.register(
    "hf_vit", target_layer="vit.layers.-1.layernorm_before", input_size=224, family="transformers"
)
def hf_vit(
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 224,
    patch_size: int = 16,
    weights: str | Path | None = None,
    attn_implementation: str = "eager",
    **options: Any,
) -> nn.Module:
    """Vision transformer from HuggingFace transformers (``ViTForImageClassification`` built
    from a ``ViTConfig``, random init; defaults are ViT-B/16; ``hidden_size``,
    ``num_hidden_layers``, ``num_attention_heads``, ``intermediate_size``, ... go to the
    config). It returns an ``ImageClassifierOutput``, whose ``.logits`` every part of
    rightfocus picks automatically. ``attn_implementation="eager"`` computes the attention
    explicitly (double backward for input-gradient penalties; attention rollout reads it).
    """
    transformers = _transformers()
    config = transformers.ViTConfig(
        image_size=image_size, patch_size=patch_size, num_channels=in_channels,
        num_labels=num_classes, attn_implementation=attn_implementation, **options,
    )  # fmt: skip
    return _finish(transformers.ViTForImageClassification(config), weights)
