"""Network dissection (light): how well each unit of a layer segments each concept.

Bau, Zhou, Khosla, Oliva & Torralba 2017, "Network Dissection: Quantifying Interpretability
of Deep Visual Representations" (CVPR), section 3.1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rightfocus._modules import conv_layers, resolve_layer
from rightfocus.hooks import capture_activations, eval_mode

if TYPE_CHECKING:
    # heavy: pandas, only for the result table
    import pandas as pd

__all__ = ["Dissection", "dissect", "unit_quantiles"]

# Largest number of mask-sized values (batch x units x H x W) binarised at once.
_CHUNK_VALUES = 1 << 24

Pair = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class Dissection:
    """What :func:`dissect` measured.

    Attributes:
        table: one row per (unit, concept) pair with columns ``unit``, ``concept``, ``iou``,
            ``threshold``, sorted by ``iou`` descending (ties keep unit, then concept order).
        iou: ``(U, K)`` float64 IoU of unit ``u`` with concept ``k`` over the dataset.
        thresholds: ``(U,)`` the activation threshold ``T_u`` of each unit.
        concepts: the ``K`` concept names, in mask-channel order.
        intersection: ``(U, K)`` float64 pixel counts ``sum_x |M_u(x) ∩ L_k(x)|``.
        union: ``(U, K)`` float64 pixel counts ``sum_x |M_u(x) ∪ L_k(x)|``.
    """

    table: pd.DataFrame
    iou: Tensor
    thresholds: Tensor
    concepts: tuple[str, ...]
    intersection: Tensor
    union: Tensor


def dissect(
    model: nn.Module,
    layer: nn.Module | str | None,
    data: Tensor | Iterable[Sequence[Tensor]],
    concept_masks: Tensor | None = None,
    *,
    concepts: Sequence[str] | None = None,
    quantile: float = 0.99,
    batch_size: int = 32,
    sample_size: int | None = None,
    seed: int = 0,
) -> Dissection:
    """Score every unit of ``layer`` as a segmenter of every concept (Bau et al. 2017).

    For unit ``u`` with activation map ``A_u(x)``, ``T_u`` is the ``quantile`` (default the
    top 1 %) of its activations over all spatial positions of all images. Each map is
    upsampled bilinearly to the mask size and binarised, ``M_u(x) = S_u(x) >= T_u``, and
    compared with each binary concept mask ``L_k(x)``::

        IoU_{u,k} = sum_x |M_u(x) ∩ L_k(x)| / sum_x |M_u(x) ∪ L_k(x)|

    (0 where the union is empty). The model runs in eval mode under ``torch.no_grad``; its
    train/eval flags are restored and no hook is left behind.

    Thresholds are exact by default (``sample_size=None``): the layer's activations are kept
    on the CPU (``N x U x h x w`` values) and used for both the quantile and the IoU, so the
    model runs once. For data whose activations do not fit in memory, pass ``sample_size=m``:
    ``T_u`` is then the quantile of a seeded uniform sample (without replacement, the same
    positions for every unit) of ``m`` activations per unit, whose rank error is at most
    ``sqrt(ln(2/δ) / (2m))`` with probability ``1 - δ`` (Dvoretzky–Kiefer–Wolfowitz), and
    the model runs twice over the data (which must then be re-iterable and deterministic).

    Args:
        model: the network; ``layer`` must output ``(B, U, h, w)``.
        layer: a submodule, its dotted name, or None for the last convolution.
        data: images ``(N, C, H, W)`` with ``concept_masks``, or an iterable of batches
            (a DataLoader) whose first element is the images and last the masks, as the
            rightfocus datasets' ``(image, label, mask)`` batches.
        concept_masks: ``(N, K, H, W)`` binary masks (1 = concept), same ``H, W`` as the
            images; only with a tensor ``data``.
        concepts: ``K`` distinct names (default ``concept_0``, ``concept_1``, ...).
        quantile: in (0, 1); ``T_u`` is this quantile of unit ``u``'s activations.
        batch_size: images per forward pass when ``data`` is a tensor.
        sample_size: None for exact thresholds, or the per-unit sample size (see above).
        seed: seed of the sample when ``sample_size`` is given.
    """
    module = resolve_layer(model, layer)
    _check_options(quantile, batch_size, sample_size)
    if isinstance(data, Tensor):
        _check_pair(data, concept_masks, "data")
        _concept_names(concepts, int(concept_masks.shape[1]))  # type: ignore[union-attr]
    elif concept_masks is not None:
        raise TypeError(
            "concept_masks is only for tensor data; a loader's batches carry their masks as "
            "the last element (image, ..., mask)"
        )
    with eval_mode(model), torch.no_grad(), capture_activations(model, [module]) as cap:

        def run() -> Iterator[Pair]:
            return _activations(model, module, cap, _batches(data, concept_masks, batch_size))

        if sample_size is None:
            stored = [(a.cpu(), m.cpu()) for a, m in run()]
            thresholds = unit_quantiles([a for a, _ in stored], quantile)
            counts = _iou_counts(stored, thresholds)
        else:
            _check_reiterable(data)
            thresholds = _sampled_quantiles(run(), quantile, sample_size, seed)
            counts = _iou_counts(run(), thresholds)
    return _result(*counts, thresholds, _concept_names(concepts, counts[0].shape[1]))


def unit_quantiles(activations: Sequence[Tensor], quantile: float) -> Tensor:
    """Exact per-unit ``quantile`` of ``(B, U, h, w)`` activation batches, as ``(U,)``.

    Linear interpolation between order statistics, as ``torch.quantile``: with ``n`` values
    and ``p = quantile * (n - 1)``, ``T = v_(floor p) + (p - floor p)(v_(floor p + 1) -
    v_(floor p))``. Uses ``kthvalue``, so there is no size limit beyond memory.
    """
    values = torch.cat([a.detach().transpose(0, 1).reshape(a.shape[1], -1) for a in activations], 1)
    return _row_quantile(values, quantile)


def _row_quantile(values: Tensor, quantile: float) -> Tensor:
    n = values.shape[1]
    pos = quantile * (n - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    v_lo = values.kthvalue(lo + 1, dim=1).values
    v_hi = values.kthvalue(hi + 1, dim=1).values
    return v_lo + (pos - lo) * (v_hi - v_lo)


def _sampled_quantiles(pairs: Iterable[Pair], quantile: float, size: int, seed: int) -> Tensor:
    """Quantile of a uniform sample of ``size`` positions per unit (bottom-k random keys)."""
    gen = torch.Generator().manual_seed(int(seed))
    sample: Tensor | None = None
    keys = torch.empty(0)
    for acts, _ in pairs:
        values = acts.detach().cpu().transpose(0, 1).reshape(acts.shape[1], -1)
        new_keys = torch.rand(values.shape[1], generator=gen)
        sample = values if sample is None else torch.cat([sample, values], 1)
        keys = torch.cat([keys, new_keys])
        if keys.numel() > size:
            keep = keys.topk(size, largest=False).indices
            sample, keys = sample[:, keep], keys[keep]
    assert sample is not None  # _batches raises on empty data
    return _row_quantile(sample, quantile)


def _iou_counts(pairs: Iterable[Pair], thresholds: Tensor) -> tuple[Tensor, Tensor]:
    """Summed ``(U, K)`` intersections and unions of the binarised units with the concepts."""
    inter: Tensor | None = None
    unit_area = torch.zeros(len(thresholds), dtype=torch.float64)
    concept_area = torch.zeros(0, dtype=torch.float64)
    for acts, masks in pairs:
        concepts = masks.to(acts.device, torch.float64).flatten(2)
        if inter is None:
            inter = torch.zeros(len(thresholds), masks.shape[1], dtype=torch.float64)
            concept_area = torch.zeros(masks.shape[1], dtype=torch.float64)
        elif masks.shape[1] != inter.shape[1]:
            raise ValueError(
                f"a batch has {masks.shape[1]} concept masks but earlier ones had "
                f"{inter.shape[1]}; every batch needs the same K concepts"
            )
        concept_area += concepts.sum((0, 2)).cpu()
        b, (h, w) = acts.shape[0], masks.shape[-2:]
        chunk = max(1, _CHUNK_VALUES // max(1, b * h * w))
        for u0 in range(0, acts.shape[1], chunk):
            unit = _binarise(acts[:, u0 : u0 + chunk], thresholds[u0 : u0 + chunk], (h, w))
            inter[u0 : u0 + chunk] += torch.bmm(unit, concepts.transpose(1, 2)).sum(0).cpu()
            unit_area[u0 : u0 + chunk] += unit.sum((0, 2)).cpu()
    assert inter is not None  # _batches raises on empty data
    return inter, unit_area[:, None] + concept_area[None, :] - inter


def _binarise(acts: Tensor, thresholds: Tensor, size: tuple[int, int]) -> Tensor:
    """``(B, u, h, w)`` maps -> bilinear upsampling to ``size`` -> ``>= T_u`` as ``(B, u, HW)``."""
    if tuple(acts.shape[-2:]) != size:
        acts = F.interpolate(acts, size=size, mode="bilinear", align_corners=False)
    above = acts >= thresholds.to(acts.device, acts.dtype).view(1, -1, 1, 1)
    return above.to(torch.float64).flatten(2)


def _activations(
    model: nn.Module, module: nn.Module, capture: Any, batches: Iterable[Pair]
) -> Iterator[Pair]:
    """Forward each batch and yield the layer's ``(B, U, h, w)`` output with its masks."""
    param = next(model.parameters(), None)
    for x, masks in batches:
        model(x if param is None else x.to(param.device))
        acts = capture[module]
        if acts.dim() != 4:
            convs = ", ".join(name for name, _ in conv_layers(model)) or "(none)"
            raise ValueError(
                f"dissection needs a layer whose output is (B, units, h, w), but this layer "
                f"returned shape {tuple(acts.shape)}. The model's conv layers are: {convs}"
            )
        yield acts.detach(), masks


def _batches(
    data: Tensor | Iterable[Sequence[Tensor]], masks: Tensor | None, batch_size: int
) -> Iterator[Pair]:
    """``(images, masks)`` pairs from tensors (sliced) or from a loader's batches (checked)."""
    if isinstance(data, Tensor):
        assert masks is not None
        for i in range(0, data.shape[0], batch_size):
            yield data[i : i + batch_size], masks[i : i + batch_size]
        return
    seen = False
    for batch in data:
        if not isinstance(batch, Sequence) or len(batch) < 2:
            raise TypeError(
                "each batch must be a tuple (images, ..., masks), e.g. the (image, label, mask) "
                f"batches of the rightfocus datasets; got {type(batch).__name__}"
            )
        x, m = batch[0], batch[-1]
        _check_pair(x, m, "a batch's images")
        seen = True
        yield x, m
    if not seen:
        raise ValueError("data yielded no batches; pass at least one image")


def _check_pair(x: object, masks: object, what: str) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{what} must be a floating (N, C, H, W) tensor, got {got}")
    if x.shape[0] == 0:
        raise ValueError(f"{what} is empty; pass at least one image")
    if not isinstance(masks, Tensor) or masks.dim() != 4:
        got = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
        raise ValueError(
            f"concept masks must be a (N, K, H, W) tensor (K concepts; use masks[:, None] for "
            f"(N, H, W) masks), got {got}"
        )
    if masks.shape[0] != x.shape[0] or masks.shape[-2:] != x.shape[-2:]:
        raise ValueError(
            f"concept masks {tuple(masks.shape)} do not match the images {tuple(x.shape)}: "
            "they need the same number of images and the same H x W (resize masks with "
            "nearest-neighbour interpolation)"
        )
    if not bool(((masks == 0) | (masks == 1)).all()):
        raise ValueError("concept masks must be binary (0/1 or bool); threshold them first")


def _check_options(quantile: float, batch_size: int, sample_size: int | None) -> None:
    if isinstance(quantile, bool) or not isinstance(quantile, int | float):
        raise TypeError(f"quantile must be a float in (0, 1), got {quantile!r}")
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1) (0.99 = top 1 %), got {quantile!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if sample_size is not None and (
        isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 1
    ):
        raise ValueError(f"sample_size must be None (exact) or a positive int, got {sample_size!r}")


def _check_reiterable(data: object) -> None:
    if not isinstance(data, Tensor) and iter(data) is data:  # type: ignore[call-overload]
        raise TypeError(
            "with sample_size the data is read twice, but an iterator can be read only once; "
            "pass a DataLoader or a list of batches"
        )


def _concept_names(names: Sequence[str] | None, k: int) -> tuple[str, ...]:
    if names is None:
        return tuple(f"concept_{i}" for i in range(k))
    out = (names,) if isinstance(names, str) else tuple(names)
    if len(out) != k or len(set(out)) != k or not all(isinstance(n, str) for n in out):
        raise ValueError(
            f"concepts must be {k} distinct names (one per mask channel), got {names!r}"
        )
    return out


def _result(inter: Tensor, union: Tensor, thresholds: Tensor, names: tuple[str, ...]) -> Dissection:
    # heavy: pandas, only for the result table
    import pandas as pd

    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))
    units, k = iou.shape
    table = pd.DataFrame(
        {
            "unit": [u for u in range(units) for _ in range(k)],
            "concept": [names[c] for _ in range(units) for c in range(k)],
            "iou": iou.reshape(-1).tolist(),
            "threshold": [float(t) for t in thresholds for _ in range(k)],
        }
    )
    table = table.sort_values("iou", ascending=False, kind="mergesort").reset_index(drop=True)
    return Dissection(table, iou, thresholds.cpu(), names, inter, union)
