"""Class activation maps on a target layer: the CAM family.

Every CAM here is ``ReLU(sum_k w_k^c A^k)`` over the target layer's activation maps ``A^k``;
a method only says how it weighs them (:meth:`_CAM._weights`, one small function each).
Output: ``(B, 1, H, W)`` upsampled (bilinear) to the input unless ``upsample=False``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rightfocus import hooks
from rightfocus._modules import resolve_layer
from rightfocus.attribution.base import Attribution, register_method
from rightfocus.attribution.targets import Target, select

__all__ = ["GradCAM", "layer_forward", "postprocess_map"]


def postprocess_map(
    cam: Tensor,
    size: tuple[int, int] | None,
    relu: bool = True,
    normalize: bool = False,
    interpolation: str = "bilinear",
) -> Tensor:
    """ReLU, upsample a ``(B, 1, h, w)`` map to ``size`` and optionally min-max normalise it."""
    if relu:
        cam = F.relu(cam)
    if size is not None and tuple(cam.shape[-2:]) != tuple(size):
        kwargs = {"align_corners": False} if interpolation in ("bilinear", "bicubic") else {}
        cam = F.interpolate(cam, size=size, mode=interpolation, **kwargs)
    if normalize:
        flat = cam.flatten(1)
        lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
        hi = flat.max(dim=1).values.view(-1, 1, 1, 1)
        cam = (cam - lo) / (hi - lo + 1e-8)
    return cam


def layer_forward(
    model: nn.Module, x: Tensor, layer: nn.Module, create_graph: bool
) -> tuple[Tensor, Tensor]:
    """Run ``model`` on ``x``; return ``(outputs, activation of layer)`` connected by autograd."""
    inp = x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)
    with hooks.capture_activations(model, [layer]) as cap:
        outputs = model(inp)
        act = cap[layer]
    if act.dim() != 4:
        raise ValueError(
            f"CAM methods need a layer with (B, K, h, w) output; {type(layer).__name__} gives "
            f"{tuple(act.shape)}. Choose a convolutional layer."
        )
    return outputs, act


class _CAM(Attribution):
    """Shared CAM pipeline: capture ``A`` and ``dS_c/dA`` at the layer, weigh, sum, post-process.

    Args:
        layer: target layer (module or dotted name); default the last Conv2d.
        relu: apply ReLU to the map (default True). upsample: resize to the input (default True).
        interpolation: ``bilinear`` (default), ``nearest`` or ``bicubic``.
        normalize: min-max normalise each map to [0, 1] (default False).
        create_graph: keep the map differentiable w.r.t. the model parameters.
    """

    needs_layer = True
    differentiable = True
    output = "map"

    def __init__(
        self,
        *,
        layer: nn.Module | str | None = None,
        relu: bool = True,
        upsample: bool = True,
        interpolation: str = "bilinear",
        normalize: bool = False,
        create_graph: bool = False,
        eval_mode: bool | None = None,
    ) -> None:
        super().__init__(eval_mode=eval_mode)
        if interpolation not in ("bilinear", "nearest", "bicubic"):
            raise ValueError(
                f"interpolation must be 'bilinear', 'nearest' or 'bicubic', got {interpolation!r}"
            )
        self.layer = layer
        self.relu = relu
        self.upsample = upsample
        self.interpolation = interpolation
        self.normalize = normalize
        self._create_graph = bool(create_graph)

    def _weights(self, acts: Tensor, grads: Tensor) -> Tensor:
        """Per-channel (``(B, K, 1, 1)``) or per-position (``(B, K, h, w)``) weights."""
        raise NotImplementedError

    def _raw_map(self, model: nn.Module, x: Tensor, target: Target, layer: nn.Module) -> Tensor:
        outputs, acts = layer_forward(model, x, layer, self.create_graph)
        scores = select(outputs, target)
        (grads,) = torch.autograd.grad(scores.sum(), acts, create_graph=self.create_graph)
        return (self._weights(acts, grads) * acts).sum(dim=1, keepdim=True)

    def _attribute(self, model: nn.Module, x: Tensor, target: Target) -> Tensor:
        layer = resolve_layer(model, self.layer)
        cam = self._raw_map(model, x, target, layer)
        size = tuple(x.shape[-2:]) if self.upsample else None
        return postprocess_map(cam, size, self.relu, self.normalize, self.interpolation)  # type: ignore[arg-type]


@register_method("gradcam")
class GradCAM(_CAM):
    """Grad-CAM (Selvaraju et al. 2017): ``w_k^c = mean_{ij} dS_c/dA^k_{ij}``."""

    def _weights(self, acts: Tensor, grads: Tensor) -> Tensor:
        return grads.mean(dim=(2, 3), keepdim=True)
