"""Modules that a rule-based method (LRP, DeepLIFT) has no correct rule for, found up front.

Both methods replace the backward pass of the layers they know; anything else keeps its
gradient. For the modules listed here the gradient is not the method's rule and the result
would be silently wrong, so the call is refused with an error naming the module instead.
"""

from __future__ import annotations

from torch import nn

__all__ = ["refuse_unsupported", "unsupported_modules"]

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.modules.instancenorm._InstanceNorm)
_GATED_ACTIVATIONS = {"GELU", "GELUTanh", "QuickGELU", "SiLU", "Swish", "HardSwish", "Hardswish",
                      "Mish", "GLU", "SwiGLU"}  # fmt: skip
# residual blocks whose sum is a functional ``x + f(x)`` inside ``forward``: LRP only has a
# canonizer for torchvision's ResNet blocks
_FUNCTIONAL_RESIDUALS = {"Bottleneck", "BasicBlock", "InvertedResidual", "DepthwiseSeparableConv",
                         "ConvNeXtBlock", "CNBlock", "MBConv", "FusedMBConv", "EdgeResidual",
                         "ResBottleneckBlock", "Block", "SwinTransformerBlock", "EncoderBlock",
                         "ResidualAttentionBlock"}  # fmt: skip


def _reason(module: nn.Module, method: str) -> str | None:
    cls = type(module).__name__
    if isinstance(module, _NORMS) or cls in ("LayerNorm2d", "RmsNorm", "RMSNorm"):
        return (
            f"{cls} divides by a data-dependent standard deviation; no {method} rule for "
            "LayerNorm-type normalisation is implemented (e.g. AttnLRP, Achtibat et al. 2024)"
        )
    if isinstance(module, nn.MultiheadAttention) or hasattr(module, "fused_attn"):
        return f"attention ({cls}) multiplies activations by input-dependent weights"
    if "SqueezeExcit" in cls or cls in ("SEModule", "SELayer", "EffectiveSEModule"):
        return f"squeeze-excitation ({cls}) multiplies activations by a gate computed from them"
    if method != "LRP":
        return None
    if cls in _GATED_ACTIVATIONS:
        return f"the self-gated activation {cls} (x * g(x)) has no LRP pass rule"
    if "NormAct" in cls:
        return f"{cls} fuses a batch norm with its activation, which the batch-norm merge cannot"
    if cls in _FUNCTIONAL_RESIDUALS and not type(module).__module__.startswith(
        "torchvision.models.resnet"
    ):
        return (
            f"the residual sum inside {cls} is a functional add that LRP cannot split "
            "(canonizers exist for torchvision ResNet blocks only)"
        )
    return None


def unsupported_modules(model: nn.Module, method: str) -> list[tuple[str, str, str]]:
    """``(dotted name, class name, reason)`` of every module ``method`` (``"LRP"`` or
    ``"DeepLIFT"``) has no correct rule for, in registration order."""
    found = []
    for name, module in model.named_modules():
        reason = _reason(module, method)
        if reason is not None:
            found.append((name, type(module).__name__, reason))
    return found


def refuse_unsupported(model: nn.Module, method: str, hint: str) -> None:
    """Raise a ``ValueError`` naming the unsupported modules of ``model`` (the first module of
    each unsupported class), if there are any."""
    first: dict[str, tuple[str, str]] = {}
    for name, cls, reason in unsupported_modules(model, method):
        first.setdefault(cls, (name, reason))
    if not first:
        return
    listed = "; ".join(f"{name or '(model)'!r}: {reason}" for name, reason in first.values())
    raise ValueError(f"{method} cannot explain {type(model).__name__} correctly: {listed}. {hint}")
