"""Mask helpers shared by the guidance methods: resizing to a layer, the empty-mask guard.

A mask is ``(B, 1, H, W)`` with 1 where the model must not look. Resizing to a layer's
``(h, w)`` follows "Regularizing Explanations in Bayesian Convolutional Neural Networks":

* ``pool="max"`` (Decoy MNIST, ISIC): ``adaptive_max_pool2d(mask, (h, w))`` - a cell is masked
  if any pixel it covers is masked;
* ``pool="min"`` (Oxford-IIIT-Pet, SBD): ``1 - adaptive_max_pool2d(1 - mask, (h, w))`` - a cell
  is masked only if every pixel it covers is masked.

Beyond the paper, ``pool="receptive_field"`` masks a cell when its receptive field overlaps the
mask. The receptive field comes from the layer geometry (:func:`receptive_field_geometry`):
composing the chain of convolutions and poolings up to the layer, output cell ``j`` of a layer
with kernel ``k``, stride ``s``, padding ``p`` and dilation ``d`` sees the input interval
``[j s - p, j s - p + d (k - 1)]`` per axis, so the intervals compose from the layer back to
the input (Araujo, Norris & Sim 2019, "Computing Receptive Fields of Convolutional Neural
Networks", Distill).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rightfocus.guidance.base import check_choice

__all__ = [
    "POOL_MODES",
    "EmptyMaskGuard",
    "check_pool",
    "receptive_field_geometry",
    "receptive_field_mask",
    "resize_mask",
]

POOL_MODES = ("max", "min", "receptive_field")
#: One spatial layer per axis: (kernel, stride, padding, dilation) for rows and for columns.
Geometry = tuple[tuple[int, int, int, int], tuple[int, int, int, int]]
_POINTWISE = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Identity,
    nn.BatchNorm2d,
    nn.GroupNorm,
    nn.InstanceNorm2d,
    nn.Dropout,
    nn.Dropout2d,
)
EMPTY_MASK_POLICIES = ("error", "warn", "ignore")


def check_pool(pool: str) -> str:
    """Validate a mask pooling mode (``"max"`` or ``"min"``)."""
    if pool not in POOL_MODES:
        raise ValueError(
            f"pool must be 'max' (a cell is masked if any pixel is), 'min' (only if all "
            f"pixels are) or 'receptive_field' (if its receptive field overlaps the mask), "
            f"got {pool!r}"
        )
    return pool


def _pair(v: int | tuple[int, ...] | str) -> tuple[int, int]:
    if isinstance(v, str):
        raise ValueError(f"padding={v!r} is not supported by the receptive-field projection")
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _layer_geometry(module: nn.Module) -> Geometry | None:
    """``(rows, cols)`` of (kernel, stride, padding, dilation); None for pointwise layers."""
    if isinstance(module, nn.Conv2d) or getattr(module, "conv_like", False):
        k, s, p, d = (
            _pair(getattr(module, a)) for a in ("kernel_size", "stride", "padding", "dilation")
        )
    elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        k, s, p = (_pair(getattr(module, a)) for a in ("kernel_size", "stride", "padding"))
        d = _pair(getattr(module, "dilation", 1))
        if getattr(module, "ceil_mode", False):
            raise ValueError(f"{module} uses ceil_mode: not supported by the receptive field")
    else:
        return None
    return (k[0], s[0], p[0], d[0]), (k[1], s[1], p[1], d[1])


def receptive_field_geometry(model: nn.Module, layer: nn.Module) -> list[Geometry]:
    """The spatial layers from the input up to and including ``layer``, in module order.

    Walks ``model.modules()`` (definition order, which is the forward order of sequential
    feature extractors such as LeNet, AlexNet or VGG): convolutions (also Bayesian ones) and
    max/avg poolings contribute their kernel, stride, padding and dilation; pointwise layers
    (activations, normalisation, dropout) none. Anything else spatial before the layer
    (adaptive pooling, upsampling, ...) is refused, as are models with branches.
    """
    chain: list[Geometry] = []
    for module in model.modules():
        if module is not layer and any(True for _ in module.children()):
            continue  # containers: their leaves are visited
        geometry = _layer_geometry(module)
        if geometry is not None:
            chain.append(geometry)
        elif not isinstance(module, _POINTWISE) and module is not layer:
            raise ValueError(
                f"pool='receptive_field' cannot follow {type(module).__name__} before the "
                "feedback layer; it supports chains of Conv2d / MaxPool2d / AvgPool2d and "
                "pointwise layers. Use pool='max' or 'min'."
            )
        if module is layer:
            return chain
    raise ValueError("the feedback layer is not a module of the model")


def _intervals(n_out: int, chain: Sequence[tuple[int, int, int, int]]) -> tuple[Tensor, Tensor]:
    """First and last input index seen by each of ``n_out`` output positions along one axis."""
    lo = torch.arange(n_out)
    hi = lo.clone()
    for k, s, p, d in reversed(chain):
        lo, hi = lo * s - p, hi * s - p + d * (k - 1)
    return lo, hi


def receptive_field_mask(mask: Tensor, size: tuple[int, int], chain: Sequence[Geometry]) -> Tensor:
    """``(B, 1, h, w)``: 1 where the cell's receptive field (``chain``, see
    :func:`receptive_field_geometry`) overlaps the ``(B, 1, H, W)`` mask."""
    b, _, height, width = mask.shape
    r_lo, r_hi = _intervals(size[0], [g[0] for g in chain])
    c_lo, c_hi = _intervals(size[1], [g[1] for g in chain])
    r_lo, r_hi = r_lo.clamp(0, height), (r_hi + 1).clamp(0, height)
    c_lo, c_hi = c_lo.clamp(0, width), (c_hi + 1).clamp(0, width)
    # integral image: the masked pixel count of any rectangle in four lookups
    ii = F.pad((mask > 0).to(torch.float64).cumsum(-2).cumsum(-1), (1, 0, 1, 0))
    r0, r1 = r_lo.to(mask.device).view(-1, 1), r_hi.to(mask.device).view(-1, 1)
    c0, c1 = c_lo.to(mask.device).view(1, -1), c_hi.to(mask.device).view(1, -1)
    count = ii[..., r1, c1] - ii[..., r0, c1] - ii[..., r1, c0] + ii[..., r0, c0]
    return (count > 0.5).to(mask.dtype).view(b, 1, size[0], size[1])


def resize_mask(
    mask: Tensor, size: tuple[int, int], pool: str = "max", chain: Sequence[Geometry] = ()
) -> Tensor:
    """Resize a ``(B, 1, H, W)`` mask to ``(B, 1, h, w)`` with max- or min-pooling, or by
    receptive field (``pool="receptive_field"`` with the layer ``chain`` of
    :func:`receptive_field_geometry`).

    Example:
        >>> import torch
        >>> m = torch.zeros(1, 1, 4, 4); m[0, 0, 0, 0] = 1
        >>> resize_mask(m, (2, 2), "max")[0, 0].tolist()
        [[1.0, 0.0], [0.0, 0.0]]
        >>> resize_mask(m, (2, 2), "min")[0, 0].tolist()
        [[0.0, 0.0], [0.0, 0.0]]
    """
    check_pool(pool)
    if mask.dim() != 4:
        raise ValueError(f"mask must be (B, 1, H, W), got {tuple(mask.shape)}")
    size = (int(size[0]), int(size[1]))
    if pool == "receptive_field":
        if not chain:
            raise ValueError(
                "pool='receptive_field' needs the layer chain (receptive_field_geometry)"
            )
        return receptive_field_mask(mask, size, chain)
    if tuple(mask.shape[-2:]) == size:
        return mask
    if pool == "max":
        return F.adaptive_max_pool2d(mask, size)
    return 1.0 - F.adaptive_max_pool2d(1.0 - mask, size)


class EmptyMaskGuard:
    """Detects training on a dataset without masks (every mask all-zero).

    A method that needs masks learns nothing from samples without them. The guard counts the
    samples seen until the first non-empty mask; once ``min_samples`` samples (the first batch
    for batches of at least that size) all had empty masks, it acts on ``policy``: ``"error"``
    raises a ``ValueError`` (default), ``"warn"`` warns once, ``"ignore"`` does nothing. After the
    first non-empty mask it never checks again, so batches that happen to carry no feedback (the
    paper keeps masks for 70 % of the samples) are fine.
    """

    def __init__(self, method: str, policy: str = "error", min_samples: int = 64) -> None:
        self.method = method
        self.policy = check_choice(policy, EMPTY_MASK_POLICIES, "empty_masks")
        self.min_samples = int(min_samples)
        self.seen = 0
        self.found = False
        self._warned = False

    def update(self, mask: Tensor) -> None:
        """Record one batch of masks; act on the policy when no mask was seen yet."""
        if self.found or self.policy == "ignore":
            return
        if bool((mask > 0).any()):
            self.found = True
            return
        self.seen += int(mask.shape[0])
        if self.seen < self.min_samples:
            return
        message = (
            f"{self.method} needs explanation masks, but the first {self.seen} training samples "
            "all had empty (all-zero) masks: the dataset carries no masks. Use a dataset with "
            "masks (registry metadata has_masks=True), or pass empty_masks='warn'/'ignore' to "
            f"{self.method} if batches without feedback are intended."
        )
        if self.policy == "error":
            raise ValueError(message)
        if not self._warned:
            warnings.warn(message, stacklevel=3)
            self._warned = True
