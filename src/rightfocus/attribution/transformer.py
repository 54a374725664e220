"""Explanations read from a vision transformer's attention: rollout and gradient x attention.

Both record the attention probabilities ``A^(l) = softmax(q k^T / sqrt(d))`` of every block,
shape ``(B, heads, N, N)`` over the ``N`` tokens (:func:`rightfocus.hooks.attention_probabilities`,
timm ViT / DeiT), combine them over the layers into a token-to-token matrix ``R`` (``N x N``)
and read the row of the class token over the patch tokens (for models without a class token,
the mean over all rows), reshaped to the patch grid and upsampled to the input:
``(B, 1, H, W)``. Windowed attention (Swin) has no global token-to-token matrix and is refused.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from rightfocus import hooks
from rightfocus._modules import token_grid
from rightfocus.attribution.base import Attribution, register_method
from rightfocus.attribution.cam import _INTERPOLATIONS, postprocess_map
from rightfocus.attribution.targets import Target, select

__all__ = ["AttentionGradient", "AttentionRollout", "token_map"]

_FUSIONS = ("mean", "max", "min")


def _stacked(model: nn.Module, maps: list[Tensor], batch: int) -> list[Tensor]:
    """Check the recorded maps: one ``(B, heads, N, N)`` map per block, the same ``N``."""
    if not maps:
        raise RuntimeError("The forward pass called no attention block; nothing was recorded")
    n = maps[0].shape[-1]
    for a in maps:
        if a.dim() != 4 or a.shape[0] != batch or a.shape[-1] != n or a.shape[-2] != n:
            raise ValueError(
                f"{type(model).__name__} has attention maps of shape {tuple(a.shape)} for a batch "
                f"of {batch}: windowed attention (Swin) or token pruning has no global "
                "token-to-token matrix to roll out. Use a CAM ('gradcam') for such models."
            )
    return maps


def token_map(model: nn.Module, relevance: Tensor) -> Tensor:
    """``(B, N, N)`` token relations -> ``(B, 1, h, w)``: the class token's row over the patch
    grid (the mean row when the model has no class/prefix token)."""
    n = relevance.shape[-1]
    found = token_grid(model, n)
    if found is None:
        raise ValueError(
            f"{n} tokens do not form a patch grid after 0-2 class/distillation tokens; "
            "the attention map cannot be put on the image"
        )
    prefix, (h, w) = found
    rows = relevance[:, 0] if prefix > 0 else relevance.mean(dim=1)
    return rows[:, prefix:].reshape(relevance.shape[0], 1, h, w)


class _AttentionMap(Attribution):
    output = "map"
    needs_attention: ClassVar[bool] = True  # reads attention probabilities: transformers only

    def __init__(
        self,
        *,
        upsample: bool = True,
        interpolation: str = "bilinear",
        normalize: bool = False,
        eval_mode: bool | None = None,
    ) -> None:
        super().__init__(eval_mode=eval_mode)
        if interpolation not in _INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be 'bilinear', 'nearest' or 'bicubic', got {interpolation!r}"
            )
        self.upsample, self.interpolation, self.normalize = upsample, interpolation, normalize

    def _finish(self, model: nn.Module, relevance: Tensor, x: Tensor) -> Tensor:
        grid = token_map(model, relevance).to(x.dtype)
        size = (x.shape[-2], x.shape[-1]) if self.upsample else None
        return postprocess_map(grid, size, False, self.normalize, self.interpolation)


@register_method("attention_rollout")
class AttentionRollout(_AttentionMap):
    """Attention rollout (Abnar & Zuidema 2020, "Quantifying attention flow in transformers").

    Heads are fused (``mean``, the paper; or ``max`` / ``min``), the residual connection is
    added and rows re-normalised, ``Â^(l) = norm_rows(0.5 A^(l) + 0.5 I)``, and the layers are
    multiplied, ``R = Â^(L) Â^(L-1) ... Â^(1)``. The class token's row of ``R`` over the patch
    tokens is the map. Class-agnostic: ``target`` does not change the result.

    Args:
        head_fusion: ``"mean"`` (default), ``"max"`` or ``"min"`` over the heads.
        upsample, interpolation, normalize: as for the CAMs.
    """

    def __init__(self, *, head_fusion: str = "mean", **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        if head_fusion not in _FUSIONS:
            raise ValueError(f"head_fusion must be one of {_FUSIONS}, got {head_fusion!r}")
        self.head_fusion = head_fusion

    def _attribute(self, model: nn.Module, x: Tensor, target: Target) -> Tensor:
        with torch.no_grad(), hooks.attention_probabilities(model) as maps:
            select(model(x), target)  # validated, although the map does not depend on it
            stacked = _stacked(model, list(maps), x.shape[0])
        rollout: Tensor | None = None
        for a in stacked:
            fused = getattr(a, self.head_fusion)(dim=1)
            fused = fused if isinstance(fused, Tensor) else fused.values
            eye = torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
            a_hat = 0.5 * fused + 0.5 * eye
            a_hat = a_hat / a_hat.sum(dim=-1, keepdim=True)
            rollout = a_hat if rollout is None else a_hat @ rollout
        assert rollout is not None
        return self._finish(model, rollout, x)


@register_method("attention_gradient")
class AttentionGradient(_AttentionMap):
    """Gradient-weighted attention (Chefer, Gur & Wolf 2021): the gradient x attention rule.

    Chefer et al. 2021, "Transformer interpretability beyond attention visualization" (CVPR),
    weigh each block's attention by its gradient and keep the positive part,
    ``Ā^(l) = E_h[(∇A^(l) ⊙ A^(l))^+]``, and accumulate over the blocks with the identity for
    the skip connection, ``R ← R + Ā^(l) R`` from ``R = I`` (the rule as stated for
    self-attention in Chefer, Gur & Wolf 2021, "Generic attention-model explainability for
    interpreting bi-modal and encoder-decoder transformers", Eqs. 5-6; the CVPR paper's Eq. 13
    uses the LRP relevance of ``A`` in place of ``A``). ``∇A = dS_target / dA``. The class
    token's row of ``R`` over the patch tokens is the map; class-specific.
    """

    def _attribute(self, model: nn.Module, x: Tensor, target: Target) -> Tensor:
        inp = x.detach().requires_grad_(True)
        with torch.enable_grad(), hooks.attention_probabilities(model) as maps:
            scores = select(model(inp), target)
            stacked = _stacked(model, list(maps), x.shape[0])
            grads = torch.autograd.grad(scores.sum(), stacked)
        n = stacked[0].shape[-1]
        relevance = torch.eye(n, dtype=x.dtype, device=x.device).expand(x.shape[0], n, n)
        for a, g in zip(stacked, grads):
            a_bar = (g * a.detach()).clamp(min=0).mean(dim=1)
            relevance = relevance + a_bar @ relevance
        return self._finish(model, relevance, x)
