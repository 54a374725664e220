"""Class activation maps on a target layer: the CAM family.

Every CAM here is ``ReLU(sum_k w_k^c A^k)`` over the target layer's activation maps ``A^k``
(shape ``(B, K, h, w)``); a method only says how it weighs them (:meth:`_CAM._weights`, one
small function each; the weights are per channel ``(B, K, 1, 1)`` or per position
``(B, K, h, w)``). Output: ``(B, 1, H, W)``, upsampled (bilinear) to the input unless
``upsample=False``; Guided Grad-CAM returns ``(B, C, H, W)``.

The target layer is a module, a dotted name (negative indices count from the end:
``"blocks.-1.norm1"``), or ``None`` for the model family's usual layer
(:func:`rightfocus._modules.default_layer_name`: the last stage of a CNN, the last block's norm
of a ViT, the final norm of a Swin; else the last ``Conv2d``). Token outputs are put on their
spatial grid automatically (:func:`rightfocus._modules.grid_layout`): ViT/DeiT tokens
``(B, N, C)`` lose their class/distillation tokens and are reshaped to the patch grid, Swin's
channels-last ``(B, H, W, C)`` maps are permuted; no reshape function is needed.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rightfocus import hooks
from rightfocus._modules import default_layer, grid_layout, resolve_layer
from rightfocus.attribution._passes import PassLayout
from rightfocus.attribution.base import (
    Attribution,
    images_per_pass,
    pass_size_option,
    register_method,
    renamed_option,
)
from rightfocus.attribution.targets import Target, fix_target, select

__all__ = [
    "CAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "GuidedGradCAM",
    "LayerCAM",
    "ScoreCAM",
    "XGradCAM",
    "layer_forward",
    "postprocess_map",
]

_INTERPOLATIONS = ("bilinear", "nearest", "bicubic")


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
        cam = _minmax(cam)
    return cam


def _minmax(maps: Tensor, eps: float = 1e-8) -> Tensor:
    """``(M - min M) / (max M - min M + eps)`` per map over the last two dimensions."""
    lo = maps.amin(dim=(-2, -1), keepdim=True)
    hi = maps.amax(dim=(-2, -1), keepdim=True)
    return (maps - lo) / (hi - lo + eps)


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` with 0 where ``den == 0`` (and finite gradients there)."""
    nonzero = den != 0
    return torch.where(nonzero, num / torch.where(nonzero, den, torch.ones_like(den)), 0.0)


def _check_layer_output(layer: nn.Module, act: Tensor) -> None:
    if act.dim() != 4:
        raise ValueError(
            f"CAM methods need a layer with (B, K, h, w) output; {type(layer).__name__} gives "
            f"{tuple(act.shape)}. Choose a convolutional layer."
        )


def _forward_capturing(
    model: nn.Module, inp: Tensor, layers: list[nn.Module], leaf: bool = False
) -> tuple[Tensor, dict[int, Tensor]]:
    """Run ``model``; return its outputs and each layer's output by ``id(layer)``.

    The forward pass continues on a copy of each captured output, so an in-place operation
    after the layer (``nn.ReLU(inplace=True)``) cannot change what was captured. With
    ``leaf=True`` the captured outputs are detached leaves that require grad: nothing before
    them is recorded and a gradient to them only runs through the rest of the model.
    The first layer's output is captured on its spatial grid (``(B, K, h, w)``, see
    :func:`rightfocus._modules.grid_layout`) and the forward pass continues on the inverse
    reshape of that grid, so gradients with respect to the captured grid are exact.
    """
    saved: dict[int, Tensor] = {}

    def keep(module: nn.Module, out: Tensor) -> Tensor:
        if leaf:
            out = out.detach().requires_grad_(True)
        if module is layers[0]:
            layout = grid_layout(model, module, out)
            if layout.kind != "nchw":
                grid = layout.to_grid(out)
                saved[id(module)] = grid
                return layout.from_grid(grid, out)
        saved[id(module)] = out
        return out.clone()

    with hooks.capture_activations(model, layers, transform=keep) as cap:
        outputs = model(inp)
        cap[layers[0]]  # a clear error if the forward pass skipped the target layer
    return outputs, saved


def layer_forward(
    model: nn.Module, x: Tensor, layer: nn.Module, create_graph: bool
) -> tuple[Tensor, Tensor]:
    """Run ``model`` on ``x``; return ``(outputs, activation of layer)`` connected by autograd.

    With ``create_graph=False`` the activation is made a leaf of the graph: nothing before the
    layer is recorded, so ``torch.autograd.grad(score, act)`` back-propagates through the head
    only. With ``True`` the activation stays connected to the parameters (and to ``x``).
    """
    if create_graph:
        inp = x if x.requires_grad else x.detach().requires_grad_(True)
        outputs, saved = _forward_capturing(model, inp, [layer])
    else:
        outputs, saved = _forward_capturing(model, x.detach(), [layer], leaf=True)
    act = saved[id(layer)]
    _check_layer_output(layer, act)
    return outputs, act


class _CAM(Attribution):
    """Shared CAM pipeline: capture ``A`` and ``dS_c/dA`` at the layer, weigh, sum, post-process.

    Args:
        layer: target layer (module or dotted name); default the family's layer (module doc).
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
        if interpolation not in _INTERPOLATIONS:
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
        """Per-channel (``(..., K, 1, 1)``) or per-position (``(..., K, h, w)``) weights.

        ``grads`` is ``(B, K, h, w)``, or ``(B, T, K, h, w)`` for ``T`` class targets, with
        ``acts`` then ``(B, 1, K, h, w)``: reductions run over the last two axes only.
        """
        raise NotImplementedError

    def _raw_map(self, model: nn.Module, x: Tensor, target: Target, layer: nn.Module) -> Tensor:
        """``sum_k w_k^c A^k``: ``(B, 1, h, w)``, or ``(B, T, h, w)`` for ``(B, T)`` classes,
        whose T gradients come from one forward pass (batched vector-Jacobian products)."""
        outputs, acts = layer_forward(model, x, layer, self.create_graph)
        scores = select(outputs, target)
        if scores.dim() == 2:  # (B, T): one map per class target, one VJP each
            return torch.cat(
                [
                    self._map(acts, scores[:, t], retain_graph=t < scores.shape[1] - 1)
                    for t in range(scores.shape[1])
                ],
                dim=1,
            )
        return self._map(acts, scores, retain_graph=False)

    def _map(self, acts: Tensor, scores: Tensor, retain_graph: bool) -> Tensor:
        """``(B, 1, h, w)`` map of one ``(B,)`` score through the retained forward graph.

        Several targets take this path one at a time rather than as one ``(B, T, K, h, w)``
        gradient tensor: the per-target tensors stay in the CPU caches, which made Grad-CAM++
        and XGrad-CAM with 10 targets on LeNet-5 several times faster
        (``python benchmarks/multitarget.py``).
        """
        (grads,) = torch.autograd.grad(
            scores.sum(),
            acts,
            retain_graph=retain_graph or self.create_graph,
            create_graph=self.create_graph,
        )
        if not self.create_graph:
            acts = acts.detach()
        return (self._weights(acts, grads) * acts).sum(dim=-3, keepdim=True)

    def _attribute(self, model: nn.Module, x: Tensor, target: Target) -> Tensor:
        layer = default_layer(model) if self.layer is None else resolve_layer(model, self.layer)
        with torch.enable_grad():  # also inside a caller's torch.no_grad() block
            cam = self._raw_map(model, x, target, layer)
        size = (x.shape[-2], x.shape[-1]) if self.upsample else None
        return postprocess_map(cam, size, self.relu, self.normalize, self.interpolation)

    def _attribute_multi(self, model: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
        """``(B, T, 1, H, W)`` maps for ``(B, T)`` class targets from one forward pass."""
        return self._attribute(model, x, targets).unsqueeze(2)  # (B, T, h, w) maps


@register_method("gradcam")
class GradCAM(_CAM):
    """Grad-CAM (Selvaraju et al. 2017): channel weights are the mean gradient.

    "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization".

    ``w_k^c = (1/Z) sum_ij dS_c/dA^k_ij``, ``L^c = ReLU(sum_k w_k^c A^k)``.

    Args (common to the CAM family):
        layer: target layer, a module or dotted name; default the model family's usual layer
            (last CNN stage, last ViT block's ``norm1``, Swin's final norm; else the last conv).
        relu: apply ReLU to the map (default True).
        upsample: resize the map to the input (default True); else ``(B, 1, h, w)``.
        interpolation: ``bilinear`` (default, ``align_corners=False``), ``nearest``, ``bicubic``.
        normalize: min-max normalise each map to [0, 1] (default False).
        create_graph: keep the map differentiable w.r.t. the model parameters.
        eval_mode: run the model in eval mode (default: unless ``create_graph``).

    Example:
        >>> import torch
        >>> from rightfocus.models import LeNet
        >>> GradCAM(layer="features.conv2")(LeNet(), torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 1, 28, 28])
    """

    def _weights(self, acts: Tensor, grads: Tensor) -> Tensor:
        return grads.mean(dim=(-2, -1), keepdim=True)


@register_method("gradcam_plus_plus")
class GradCAMPlusPlus(_CAM):
    """Grad-CAM++ (Chattopadhay et al. 2018): closed-form higher-order pixel weights.

    Closed-form alphas with the exponential trick.

    With ``Y^c = exp(S^c)`` the higher derivatives reduce to powers of ``g = dS^c/dA^k_ij``
    (Eq. 19): ``alpha_ij^kc = g^2 / (2 g^2 + sum_ab A^k_ab g^3)`` (0 where the denominator is
    0) and ``w_k^c = sum_ij alpha_ij^kc ReLU(g)``. The paper's ``ReLU(dY^c/dA) =
    exp(S^c) ReLU(g)`` carries a positive per-sample factor ``exp(S^c)`` that only rescales
    the map; like pytorch-grad-cam we drop it (it also overflows for large scores).

    Args:
        eps: added to the alpha denominator (default 0, the paper's formula);
            pytorch-grad-cam uses ``1e-6``.
        **options: the common CAM options (see :class:`GradCAM`).
    """

    def __init__(self, *, eps: float = 0.0, **options: Any) -> None:
        super().__init__(**options)
        self.eps = float(eps)

    def _weights(self, acts: Tensor, grads: Tensor) -> Tensor:
        total = acts.sum(dim=(-2, -1), keepdim=True)
        if self.eps:
            g2 = grads * grads
            alpha = _safe_div(
                g2, g2 * torch.addcmul(torch.full_like(total, 2.0), total, grads) + self.eps
            )
            return (alpha * F.relu(grads)).sum(dim=(-2, -1), keepdim=True)
        # eps = 0: where g > 0, alpha ReLU(g) = g^3 / (g^2 (2 + S g)) = g / (2 + S g) (0 where
        # 2 + S g = 0, as alpha is); where g <= 0 the term is 0. Fewer passes over the maps.
        q = torch.addcmul(torch.full_like(total, 2.0), total, grads)
        nonzero = q != 0
        terms = torch.where(nonzero, F.relu(grads), 0.0) / torch.where(nonzero, q, 1.0)
        return terms.sum(dim=(-2, -1), keepdim=True)


@register_method("layercam")
class LayerCAM(_CAM):
    """LayerCAM (Jiang et al. 2021, IEEE TIP): one weight per position.

    ``w_ij^kc = ReLU(dS^c/dA^k_ij)``, ``M^c = ReLU(sum_k w^kc_ij A^k_ij)``; meaningful at
    shallow layers too, where channel-averaged weights are not.
    """

    def _weights(self, acts: Tensor, grads: Tensor) -> Tensor:
        return F.relu(grads)


@register_method("xgradcam")
class XGradCAM(_CAM):
    """XGrad-CAM (Fu et al. 2020, "Axiom-based Grad-CAM"): activation-weighted gradients.

    ``w_k^c = sum_ij (A^k_ij / sum_ab A^k_ab) dS^c/dA^k_ij`` (0 for a channel whose
    activations sum to 0), derived from the sensitivity and conservation axioms.

    Args:
        eps: added to ``sum_ab A^k_ab`` (default 0, the paper); pytorch-grad-cam uses ``1e-7``.
        **options: the common CAM options (see :class:`GradCAM`).
    """

    def __init__(self, *, eps: float = 0.0, **options: Any) -> None:
        super().__init__(**options)
        self.eps = float(eps)

    def _weights(self, acts: Tensor, grads: Tensor) -> Tensor:
        total = acts.sum(dim=(-2, -1), keepdim=True) + self.eps
        return _safe_div(grads * acts, total).sum(dim=(-2, -1), keepdim=True)


def _gap_linear_head(
    model: nn.Module, x: Tensor, layer: nn.Module
) -> tuple[Tensor, Tensor, nn.Linear]:
    """Find the ``Linear`` that maps the global average of the layer's maps to the outputs.

    Returns ``(outputs, feature maps f_k, linear)`` where ``outputs = linear(mean_ij f_k)`` is
    verified numerically on ``x``; ``f`` is the layer's output or its ReLU (a ReLU between the
    last conv and the pooling belongs to the conv's feature maps, as in Zhou et al.).
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    outputs, saved = _forward_capturing(model, x, [layer, *linears])
    acts = saved[id(layer)]
    _check_layer_output(layer, acts)
    for lin in linears:
        out = saved.get(id(lin))
        if lin.in_features != acts.shape[1] or out is None or out.shape != outputs.shape:
            continue
        if not torch.allclose(out, outputs):
            continue
        for feats in (acts, F.relu(acts)):
            pred = F.linear(feats.mean(dim=(2, 3)), lin.weight, lin.bias)
            tol = 1e-4 * (1.0 + float(out.detach().abs().max()))
            if torch.allclose(pred, out, rtol=1e-4, atol=tol):
                return outputs, feats, lin
    raise ValueError(
        f"cam needs a global-average-pool + Linear head directly on the target layer "
        f"({type(layer).__name__} with {acts.shape[1]} channels): outputs = "
        f"Linear(mean_ij A_ij). This model's outputs are not such a function of that layer. Pass "
        "layer=<the module whose output is pooled> (e.g. 'layer4' for a ResNet), or use "
        "'gradcam', which generalises CAM to any head."
    )


@register_method("cam")
class CAM(_CAM):
    """Class activation mapping (Zhou et al. 2016): the linear head's weights on GAP maps.

    "Learning Deep Features for Discriminative Localization".

    For a network ending in global average pooling and one linear layer,
    ``S_c = sum_k w_k^c mean_ij f_k(i, j) + b_c``; the map is ``M_c = sum_k w_k^c f_k`` with
    ``w^c`` the linear layer's row for class ``c`` (so ``mean_ij M_c = S_c - b_c``). The head
    is found and checked on the batch; ``f_k`` is the target layer's output, or its ReLU when
    a ReLU sits between the layer and the pooling. Class targets only (no callables).
    """

    def _raw_map(self, model: nn.Module, x: Tensor, target: Target, layer: nn.Module) -> Tensor:
        if callable(target) and not isinstance(target, Tensor):
            raise TypeError(
                "cam weighs maps by a class's row of the Linear head: pass class indices"
            )
        with torch.set_grad_enabled(self.create_graph):
            outputs, feats, lin = _gap_linear_head(model, x, layer)
            classes = fix_target(outputs, target)
            assert isinstance(classes, Tensor)
            w = lin.weight[classes]  # (B, K) rows, (B, T, K) for (B, T) classes
            if w.dim() == 3:  # the same sum as one class at a time, per target
                return (w[:, :, :, None, None] * feats.unsqueeze(1)).sum(dim=2)
            return (w[:, :, None, None] * feats).sum(dim=1, keepdim=True)


_SCORE_RULES = ("probability", "probability_increase", "channel_softmax")


@register_method("scorecam")
class ScoreCAM(_CAM):
    """Score-CAM (Wang et al. 2020): weights from the model's scores of masked inputs.

    "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural Networks".

    Each activation map is upsampled to the input and min-max normalised,
    ``H_k = s(Up(A^k))``; the masked input ``X o H_k`` is scored by the model and
    ``L^c = ReLU(sum_k alpha_k^c A^k)`` at the layer's resolution. ``weighting`` picks
    ``alpha_k^c``:

    - ``"probability"`` (default; the paper's and its authors' code): the softmax probability
      of class ``c`` for ``X o H_k``;
    - ``"probability_increase"``: the paper's "increase of confidence",
      ``softmax(f(X o H_k))_c - softmax(f(X_b))_c`` with the baseline ``X_b = 0``;
    - ``"channel_softmax"`` (pytorch-grad-cam): ``softmax_k`` of the target logit of
      ``X o H_k``, so the weights sum to 1 over channels; differs from the others in scale and
      in how strongly the best channels dominate.

    With a callable target, its score replaces the class probability (no softmax). All
    ``B * K`` masked forwards run under ``torch.inference_mode`` in chunks of
    ``internal_batch_size`` images (``"auto"``: about 2**18 input values and at least 32
    images per chunk, within the memory budget of
    :func:`rightfocus.attribution.base.images_per_pass`), channels-last on the CPU
    (:class:`rightfocus.attribution._passes.PassLayout`: the same values, faster). A map that
    is constant at the layer's resolution has no min-max scaling; its mask is 0 and its score
    that of the zero image, computed once. Several class targets (a ``(B, T)`` tensor) are
    scored from the same masked forwards. Forward passes only: not differentiable.

    Args:
        weighting: see above. internal_batch_size: masked images per forward pass
            (``batch_size`` is its deprecated name). memory_budget: bytes for ``auto``.
        align_corners: of the bilinear mask upsampling (default False, as the authors' code;
            pytorch-grad-cam uses True).
        precision: ``"float32"`` (default) or ``"bfloat16"``: the masked forwards under
            ``torch.autocast`` in bfloat16 (faster on CPUs with bfloat16 instructions; the
            scores change at about the third significant digit, so near-tied channel weights
            can reorder; ``benchmarks/cam_speed.py`` reports the map error).
        **options: the common CAM options (see :class:`GradCAM`; ``create_graph`` must be False).
    """

    differentiable = False

    def __init__(
        self,
        *,
        weighting: str = "probability",
        internal_batch_size: int | str | None = "auto",
        memory_budget: int | str | None = None,
        align_corners: bool = False,
        precision: str = "float32",
        **options: Any,
    ) -> None:
        if "batch_size" in options:
            internal_batch_size = renamed_option(options, "batch_size")
        if options.get("create_graph"):
            raise ValueError("scorecam uses forward passes only; it cannot take create_graph=True")
        super().__init__(**options)
        if weighting not in _SCORE_RULES:
            raise ValueError(
                f"weighting must be one of {', '.join(_SCORE_RULES)}, got {weighting!r}"
            )
        if precision not in ("float32", "bfloat16"):
            raise ValueError(f"precision must be 'float32' or 'bfloat16', got {precision!r}")
        self.weighting = weighting
        self.internal_batch_size = pass_size_option(internal_batch_size)
        self.memory_budget = memory_budget
        self.align_corners = align_corners
        self.precision = precision

    def _score(self, outputs: Tensor, target: Tensor | Any) -> Tensor:
        if self.weighting == "channel_softmax" or not isinstance(target, Tensor):
            return select(outputs, target)
        return select(outputs.softmax(dim=1), target)

    def _masks(self, acts: Tensor, size: tuple[int, int]) -> Tensor:
        """``s(Up(A^k))`` for a chunk of ``(n, 1, h, w)`` maps; the bilinear upsampling as two
        matrix products (:func:`bilinear_matrix`)."""
        if tuple(acts.shape[-2:]) != size:
            rows = bilinear_matrix(acts.shape[-2], size[0], self.align_corners, acts)
            cols = bilinear_matrix(acts.shape[-1], size[1], self.align_corners, acts)
            acts = rows @ acts @ cols.T
        return _minmax(acts)

    def _chunk(self, model: nn.Module, x: Tensor) -> int:
        """Masked images per forward pass: ``internal_batch_size`` or the ``auto`` policy with
        ~2**18 input values (>= 32 images) per pass, within the memory budget."""
        return images_per_pass(
            self.internal_batch_size, model, x[:1], self.memory_budget,
            pass_elements=2**18, min_images=32,
        )  # fmt: skip

    def _forward(self, model: nn.Module, images: Tensor, layout: PassLayout) -> Tensor:
        """``model(images)`` in the chosen precision and ``layout``'s memory layout."""
        autocast = torch.autocast(
            images.device.type, dtype=torch.bfloat16, enabled=self.precision == "bfloat16"
        )
        with autocast:
            return layout.forward(model, images)

    def _masked_scores(
        self, model: nn.Module, x: Tensor, acts: Tensor, target: Any, zero_out: Tensor
    ) -> Tensor:
        """Scores ``(B, K)`` (``(B, K, T)`` for ``(B, T)`` class targets) of every masked input
        ``X_b o H_k``, chunked over ``B * K``.

        A map that is constant at the layer's resolution gives the mask 0 (min-max scaling is
        undefined there), so its masked input is 0 and its score is that of ``zero_out``.
        """
        B, K = acts.shape[:2]
        size = (x.shape[-2], x.shape[-1])
        flat = acts.reshape(B * K, 1, *acts.shape[-2:])
        constant = flat.amax(dim=(1, 2, 3)) == flat.amin(dim=(1, 2, 3))
        extra = tuple(target.shape[1:]) if isinstance(target, Tensor) else ()
        scores = torch.empty(B * K, *extra, dtype=zero_out.dtype, device=x.device)
        if bool(constant.any()):
            idx = constant.nonzero().squeeze(1)
            outputs = zero_out.expand(idx.shape[0], *zero_out.shape[1:])
            scores[idx] = self._score(outputs, _rows(target, idx // K)).to(scores.dtype)
        varying = (~constant).nonzero().squeeze(1)
        chunk = self._chunk(model, x)
        layout = PassLayout(x)
        with torch.inference_mode():
            for start in range(0, varying.shape[0], chunk):
                idx = varying[start : start + chunk]
                owner = idx // K
                outputs = self._forward(model, x[owner] * self._masks(flat[idx], size), layout)
                outputs = outputs.to(scores.dtype)
                scores[idx] = self._score(outputs, _rows(target, owner)).to(scores.dtype)
        return scores.view(B, K, *extra)

    def _raw_map(self, model: nn.Module, x: Tensor, target: Target, layer: nn.Module) -> Tensor:
        with torch.no_grad():
            outputs, saved = _forward_capturing(model, x, [layer])
            acts = saved[id(layer)]
            _check_layer_output(layer, acts)
            fixed = fix_target(outputs, target)
            zero_out = model(torch.zeros_like(x[:1]))  # the baseline X_b = 0
            scores = self._masked_scores(model, x, acts, fixed, zero_out)
            if self.weighting == "channel_softmax":
                weights = scores.softmax(dim=1)
            elif self.weighting == "probability_increase":
                base = zero_out.expand(x.shape[0], *zero_out.shape[1:])
                weights = scores - self._score(base, fixed)[:, None]
            else:
                weights = scores
            if weights.dim() == 3:  # (B, K, T): one map per class target
                return torch.einsum("bkt,bkhw->bthw", weights.to(acts.dtype), acts)
            return (weights[:, :, None, None].to(acts.dtype) * acts).sum(dim=1, keepdim=True)

    def _attribute_multi(self, model: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
        """``(B, T, 1, H, W)`` maps for ``(B, T)`` class targets from one set of masked passes."""
        maps = self._attribute(model, x, targets)  # (B, T, h, w) -> post-processed per map
        return maps.unsqueeze(2)


def bilinear_matrix(n_in: int, n_out: int, align_corners: bool, like: Tensor) -> Tensor:
    """``(n_out, n_in)`` matrix ``M`` of 1-D linear interpolation, taken from
    ``F.interpolate`` itself (its response to each unit impulse), so that bilinear upsampling
    of ``(..., h, w)`` maps is ``M_h A M_w^T`` with ``F.interpolate``'s exact sampling
    convention: bilinear interpolation is separable. Two small matrix products ran 3x faster
    than ``F.interpolate`` on Score-CAM's mask chunks (334 maps 10x10 -> 28x28, 32 maps
    7x7 -> 224x224; equal to 1e-7)."""
    eye = torch.eye(n_in, dtype=like.dtype, device=like.device)[:, None, :]
    impulses = F.interpolate(eye, size=n_out, mode="linear", align_corners=align_corners)
    return impulses[:, 0, :].T.contiguous()


def _rows(target: Any, owner: Tensor) -> Any:
    """The targets of the samples ``owner`` (class tensors are indexed; callables pass)."""
    return target[owner] if isinstance(target, Tensor) else target


@register_method("guided_gradcam")
class GuidedGradCAM(GradCAM):
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backprop times upsampled Grad-CAM.

    ``G^c = GuidedBackprop^c(x) * Up(ReLU(sum_k w_k^c A^k))``, shape ``(B, C, H, W)``. The
    paper upsamples the Grad-CAM map bilinearly (our default); Captum's ``GuidedGradCam``
    defaults to ``interpolate_mode="nearest"`` (pass ``interpolation="nearest"`` to match it).
    ``relu`` and ``normalize`` apply to the Grad-CAM factor. Needs ``nn.ReLU`` modules for the
    guided backward rule.
    """

    output = "input"

    def __init__(self, **options: Any) -> None:
        if options.get("upsample") is False:
            raise ValueError("guided_gradcam multiplies at input resolution; upsample must be True")
        super().__init__(**options)

    def _attribute(self, model: nn.Module, x: Tensor, target: Target) -> Tensor:
        """Both factors from ONE forward pass: the ReLUs carry the guided rule behind a gate,
        closed for the (plain) gradient to the layer and open for the gradient to the input."""
        layer = default_layer(model) if self.layer is None else resolve_layer(model, self.layer)
        guiding = [False]
        cg = self.create_graph
        with torch.enable_grad(), hooks.relu_backward_rule(model, "guided", lambda: guiding[0]):
            inp = x if (cg and x.requires_grad) else x.detach().requires_grad_(True)
            outputs, saved = _forward_capturing(model, inp, [layer])
            acts = saved[id(layer)]
            _check_layer_output(layer, acts)
            scores = select(outputs, target)
            columns = (
                [scores[:, t] for t in range(scores.shape[1])] if scores.dim() == 2 else [scores]
            )
            cams, guided = [], []
            for i, score in enumerate(columns):
                (grads,) = torch.autograd.grad(
                    score.sum(), acts, retain_graph=True, create_graph=cg
                )
                held = acts if cg else acts.detach()
                cams.append((self._weights(held, grads) * held).sum(dim=-3, keepdim=True))
                guiding[0] = True
                try:
                    last = i == len(columns) - 1
                    (g,) = torch.autograd.grad(score.sum(), inp, retain_graph=cg or not last,
                                               create_graph=cg)  # fmt: skip
                finally:
                    guiding[0] = False
                guided.append(g)
        size = (x.shape[-2], x.shape[-1])
        cam = postprocess_map(torch.cat(cams, dim=1), size, self.relu, self.normalize,
                              self.interpolation)  # fmt: skip
        if scores.dim() == 2:  # (B, T, C, H, W) for (B, T) class targets; cam (B, T, H, W)
            return torch.stack(guided, dim=1) * cam.unsqueeze(2)
        return guided[0] * cam

    def _attribute_multi(self, model: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
        return self._attribute(model, x, targets)  # one forward pass for every target
