"""Counterexample augmentation, the Bayesian-feedback paper's data-augmentation baseline."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rightfocus.data.transforms import Normalization, normalize
from rightfocus.guidance._masks import EmptyMaskGuard
from rightfocus.guidance.base import Guidance, GuidedBatch, register_guidance

__all__ = ["Counterexamples", "replace_with_noise"]


def replace_with_noise(
    x: Tensor,
    mask: Tensor,
    noise01: Tensor,
    normalization: Normalization | None = None,
) -> Tensor:
    """``where(mask > 0, normalise(noise01), x)``; the mask broadcasts over channels.

    ``noise01`` holds values in [0, 1] (image space); with ``normalization=(mean, std)`` (one
    value per channel) it is mapped like the images: ``(noise01 - mean) / std``.
    """
    noise = normalize(noise01.to(x), normalization)
    return torch.where(mask.to(torch.bool).expand_as(x), noise, x)


@register_guidance("counterexamples")
class Counterexamples(Guidance):
    """Data augmentation with counterexamples: fresh noise where the mask says "do not use".

    The baseline of "Regularizing Explanations in Bayesian Convolutional Neural Networks"
    (after Teso & Kersting 2019): each time a batch is seen, every masked pixel of a sample that
    kept its feedback mask is replaced by ``u ~ U(0, 1)`` (normalised like the images for RGB
    data, ``(u - mean) / std``), so the masked region carries no information about the label:

        ``x'_n = (1 - A_n) * x_n + A_n * normalise(u_n)``

    No samples are added and no loss term is produced (``loss_terms`` returns ``{}``); samples
    with an all-zero mask are left untouched.

    Args:
        normalization: ``(mean, std)`` per channel, as the dataset's normalisation; None when the
            images are in [0, 1] (MNIST).
        seed: seed of a private generator for reproducible noise; None uses torch's global RNG.
        empty_masks: policy when the data carries no masks (``"error"``/``"warn"``/``"ignore"``).
    """

    requires_mask = True

    def __init__(
        self,
        *,
        normalization: Normalization | None = None,
        seed: int | None = None,
        empty_masks: str = "error",
    ) -> None:
        if normalization is not None:
            if len(normalization) != 2 or len(normalization[0]) != len(normalization[1]):
                raise ValueError(
                    "normalization must be (mean, std) with one value per channel each, got "
                    f"{normalization!r}"
                )
            if any(float(s) <= 0 for s in normalization[1]):
                raise ValueError(f"normalization std values must be > 0, got {normalization[1]}")
        self.normalization = normalization
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._guard = EmptyMaskGuard("counterexamples", empty_masks)

    def _noise(self, x: Tensor) -> Tensor:
        if self.seed is None:
            return torch.rand(x.shape, device=x.device, dtype=x.dtype)
        if self._generator is None or self._generator.device != x.device:
            self._generator = torch.Generator(device=x.device).manual_seed(self.seed)
        return torch.rand(x.shape, generator=self._generator, device=x.device, dtype=x.dtype)

    def transform(self, batch: GuidedBatch) -> GuidedBatch:
        self._guard.update(batch.mask)
        if self.normalization is not None and len(self.normalization[0]) != batch.x.shape[1]:
            raise ValueError(
                f"normalization has {len(self.normalization[0])} channels but the images have "
                f"{batch.x.shape[1]}"
            )
        if not bool(batch.has_feedback.any()):
            return batch
        x = replace_with_noise(batch.x, batch.mask, self._noise(batch.x), self.normalization)
        return batch.with_x(x)

    def loss_terms(self, model: nn.Module, batch: GuidedBatch, logits: Tensor) -> dict[str, Tensor]:
        return {}

    def __repr__(self) -> str:
        return f"Counterexamples(normalization={self.normalization!r}, seed={self.seed})"
