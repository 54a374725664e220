"""Noise tunnel: SmoothGrad, SmoothGrad-squared and VarGrad around any attribution method.

The noise tunnel explains ``n`` noisy copies ``x + eps_s`` of each image with a base method
``E`` and aggregates the ``n`` attributions per pixel:

- ``smoothgrad`` (Smilkov et al. 2017): ``mean_s E(x + eps_s)``,
- ``smoothgrad_sq`` (Smilkov et al. 2017, as in Adebayo et al. 2018): ``mean_s E(x + eps_s)^2``,
- ``vargrad`` (Adebayo et al. 2018): ``mean_s (E(x + eps_s) - mean_t E(x + eps_t))^2``
  (population variance, as Captum).

Noise: ``eps_s ~ N(0, sigma^2 I)`` with ``sigma = stdev * (max(x_i) - min(x_i))`` per sample
when ``relative=True`` (the paper's noise level) or ``sigma = stdev`` otherwise.

Batch independence: the standard-normal draws have shape ``(n, C, H, W)`` and come from a
``torch.Generator`` seeded with ``seed`` on ``x``'s device; every sample of the batch reuses them
(scaled by its own ``sigma``). Sample i's noise therefore depends only on ``seed`` and the
sample itself, never on its position in the batch or on the other samples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from rightfocus._registry import METHODS
from rightfocus.attribution._entry import affine_entry, weighted_entry_gradients
from rightfocus.attribution.base import (
    PASS_ELEMENTS,
    Attribution,
    copies_per_pass,
    images_per_pass,
    parse_bytes,
    pass_size_option,
    register_method,
    renamed_option,
)
from rightfocus.attribution.gradient import Saliency
from rightfocus.attribution.targets import Target, class_target, repeat_target

__all__ = ["KINDS", "NoiseTunnel", "SmoothGrad", "SmoothGradSq", "VarGrad", "noise_tunnel"]

KINDS = ("smoothgrad", "smoothgrad_sq", "vargrad")


class _Moments:
    """Running per-pixel mean and sum of squared deviations (Chan et al.'s parallel merge)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None

    def add(self, chunk: Tensor) -> None:
        """Merge ``chunk`` of shape ``(k, B, ...)`` (k attributions per sample)."""
        k = chunk.shape[0]
        c_mean = chunk.mean(dim=0)
        c_m2 = ((chunk - c_mean) ** 2).sum(dim=0)
        if self.mean is None or self.m2 is None:
            self.count, self.mean, self.m2 = k, c_mean, c_m2
            return
        total = self.count + k
        delta = c_mean - self.mean
        self.mean = self.mean + delta * (k / total)
        self.m2 = self.m2 + c_m2 + delta**2 * (self.count * k / total)
        self.count = total


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")


def noise_tunnel(
    explain: Callable[[Tensor, Target], Tensor],
    x: Tensor,
    noise: Tensor,
    target: Target,
    kind: str = "smoothgrad",
    internal_batch_size: int | None = None,
) -> Tensor:
    """Aggregate ``explain(x + noise_s, target)`` over the noise samples ``s``.

    The pure core of :class:`NoiseTunnel`. Noisy copies are stacked sample-major into batches of
    at most ``internal_batch_size`` images (at least one noise draw per pass). A ``(B, K)``
    class target gives ``(B, K, ...)`` attributions when ``explain`` supports it.

    Args:
        explain: ``f(images, target) -> attributions`` for a batch of images.
        x: ``(B, C, H, W)`` clean images.
        noise: ``(n, B, C, H, W)`` or ``(n, 1, C, H, W)`` additive noise, already scaled.
        target: a ``(B,)`` class tensor or a callable on the outputs (``None`` is not resolved
            here: it would mean each noisy copy's own predicted class).
        kind: ``smoothgrad``, ``smoothgrad_sq`` or ``vargrad``.
        internal_batch_size: images per ``explain`` call (default: the batch or
            ``PASS_ELEMENTS`` input values, whichever is more).
    """
    _check_kind(kind)
    if noise.dim() != 5 or tuple(noise.shape[2:]) != tuple(x.shape[1:]):
        raise ValueError(
            f"noise must have shape (n, B or 1, C, H, W) for x {tuple(x.shape)}, "
            f"got {tuple(noise.shape)}"
        )
    n, B = noise.shape[0], x.shape[0]
    if internal_batch_size is None:
        internal_batch_size = max(B, PASS_ELEMENTS // max(1, x[0].numel()))
    per_pass = copies_per_pass(internal_batch_size, B, n)
    moments = _Moments()
    total: Tensor | None = None
    for start in range(0, n, per_pass):
        eps = noise[start : start + per_pass]
        k = eps.shape[0]
        noisy = (x.unsqueeze(0) + eps).reshape(k * B, *x.shape[1:])
        attr = explain(noisy, repeat_target(target, k))
        if not isinstance(attr, Tensor) or attr.shape[0] != k * B:
            raise ValueError(
                "The base method must return one attribution tensor per image; "
                f"got {type(attr).__name__}. Turn off options such as return_delta."
            )
        attr = attr.reshape(k, B, *attr.shape[1:])
        if kind == "vargrad":
            moments.add(attr)
            continue
        part = (attr if kind == "smoothgrad" else attr**2).sum(dim=0)
        total = part if total is None else total + part
    if kind == "vargrad":
        assert moments.m2 is not None
        return moments.m2 / moments.count
    assert total is not None
    return total / n


class NoiseTunnel(Attribution):
    """Noise tunnel around any method: SmoothGrad, SmoothGrad² or VarGrad.

    ``SG(x) = 1/n sum_s E(x + eps_s)``, ``SG²(x) = 1/n sum_s E(x + eps_s)^2``,
    ``VG(x) = 1/n sum_s (E(x + eps_s) - SG(x))^2`` with ``eps_s ~ N(0, sigma^2)`` and
    ``sigma = stdev * (max x - min x)`` (``relative=True``). Smilkov et al. 2017, "SmoothGrad:
    removing noise by adding noise"; Adebayo et al. 2018, "Local explanation methods for deep
    neural networks lack sensitivity to parameter values" (VarGrad).

    Args:
        base: the base method ``E``, a registered name or an :class:`Attribution` instance
            (``method=`` is the deprecated name of this option).
        kind: ``smoothgrad``, ``smoothgrad_sq`` or ``vargrad``.
        n_samples: noisy copies per image (the paper finds 50 sufficient).
        stdev: noise level; a fraction of each image's value range when ``relative``, else the
            absolute standard deviation.
        seed: seeds the noise generator (``None``: drawn from torch's global generator).
        internal_batch_size: images per base-method call, or ``"auto"`` (default: see
            :func:`rightfocus.attribution.base.images_per_pass`).
        memory_budget: bytes (or ``"2GB"``) for ``auto``; default: ``RIGHTFOCUS_MEMORY_BUDGET``
            or a share of the free memory.
        create_graph: passed to the base method (must be differentiable).
        **method_options: options for the base method when ``method`` is a name.

    ``target=None`` explains the class predicted for the clean image, in every noisy copy;
    a ``(B, K)`` class target gives ``(B, K, ...)`` (the base method's own multi-target path).
    """

    stochastic = True
    differentiable = True

    def __init__(
        self,
        base: str | Attribution = "saliency",
        *,
        kind: str = "smoothgrad",
        n_samples: int = 50,
        stdev: float = 0.15,
        relative: bool = True,
        seed: int | None = None,
        internal_batch_size: int | str | None = "auto",
        memory_budget: int | str | None = None,
        create_graph: bool = False,
        eval_mode: bool | None = None,
        **method_options: Any,
    ) -> None:
        super().__init__(eval_mode=eval_mode)
        if "method" in method_options:
            base = renamed_option(method_options, "method", "base")
        _check_kind(kind)
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
        if not stdev >= 0:
            raise ValueError(f"stdev must be >= 0, got {stdev!r}")
        if memory_budget is not None:
            parse_bytes(memory_budget)
        self.base = _make_base(base, create_graph, method_options)
        self.kind = kind
        self.n_samples = n_samples
        self.stdev = float(stdev)
        self.relative = relative
        self.seed = seed
        self.internal_batch_size = pass_size_option(internal_batch_size)
        self.memory_budget = memory_budget
        self._create_graph = bool(create_graph)

    def noise(self, x: Tensor) -> Tensor:
        """The scaled noise ``(n, B, C, H, W)`` (or ``(n, 1, C, H, W)``) this call adds to ``x``."""
        seed = self.seed
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        gen = torch.Generator(device=x.device).manual_seed(seed)
        z = torch.randn(
            (self.n_samples, *x.shape[1:]), generator=gen, dtype=x.dtype, device=x.device
        )
        if not self.relative:
            return (z * self.stdev).unsqueeze(1)
        flat = x.detach().flatten(1)
        sigma = self.stdev * (flat.amax(dim=1) - flat.amin(dim=1))
        return z.unsqueeze(1) * sigma.view(1, -1, 1, 1, 1)

    def _attribute(self, model: nn.Module, x: Tensor, target: Target) -> Tensor:
        target = class_target(model, x, target)
        K = target.shape[1] if isinstance(target, Tensor) and target.dim() == 2 else 1
        images = images_per_pass(self.internal_batch_size, model, x, self.memory_budget, K)
        noise = self.noise(x)
        explain = lambda images, tgt: self.base(model, images, tgt)  # noqa: E731
        if images >= x.shape[0]:
            entry = affine_entry(model, x[:1]) if self._mean_of_gradients() else None
            if entry is not None:  # SmoothGrad of the gradient: the entry layer's W^T once
                return self._through_entry(model, entry, x, noise, target, images)
            return noise_tunnel(explain, x, noise, target, self.kind, images)
        parts = []  # fewer than B images fit in a pass: split the batch (noise per sample)
        for start in range(0, x.shape[0], images):
            sl = slice(start, start + images)
            eps = noise[:, sl] if noise.shape[1] > 1 else noise
            tgt = target[sl] if isinstance(target, Tensor) else target
            parts.append(noise_tunnel(explain, x[sl], eps, tgt, self.kind, images))
        return torch.cat(parts)

    def _attribute_multi(self, model: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
        return self._attribute(model, x, targets)  # the base method shares its passes

    def _mean_of_gradients(self) -> bool:
        """SmoothGrad of the plain gradient (default options): linear in the gradients."""
        base = self.base
        return (
            self.kind == "smoothgrad"
            and type(base) is Saliency
            and not base.abs
            and base.reduce is None
            and not base.create_graph
            and base.eval_mode is None
        )

    def _through_entry(
        self, model: nn.Module, entry: nn.Module, x: Tensor, noise: Tensor, target: Target,
        images: int,
    ) -> Tensor:  # fmt: skip
        """``1/n sum_s dS/dx (x + eps_s)`` as ``W^T (1/n sum_s dS/dh_s)`` through the model's
        affine first layer (:mod:`rightfocus.attribution._entry`): its input gradient runs
        once instead of once per noise sample."""
        n, B = noise.shape[0], x.shape[0]
        per_pass = copies_per_pass(images, B, n)
        w = torch.full((n,), 1.0 / n, dtype=x.dtype, device=x.device)
        chunks = (
            (None, (x.unsqueeze(0) + eps).reshape(-1, *x.shape[1:]), w[s : s + per_pass])
            for s in range(0, n, per_pass)
            for eps in [noise[s : s + per_pass]]
        )
        return weighted_entry_gradients(model, entry, x, chunks, target, x.device.type == "cpu")


def _make_base(
    method: str | Attribution, create_graph: bool, options: dict[str, Any]
) -> Attribution:
    if isinstance(method, Attribution):
        if options:
            raise ValueError(
                f"Options {sorted(options)} are for a base method given by name; configure the "
                "Attribution instance you passed instead"
            )
        if create_graph and not method.create_graph:
            raise ValueError("create_graph=True needs a base method built with create_graph=True")
        return method
    if not isinstance(method, str):
        raise TypeError(
            f"The base method must be a registered name or an Attribution, not {type(method)}"
        )
    cls = METHODS.get(method)
    if create_graph:
        if not cls.differentiable:
            raise ValueError(
                f"create_graph=True needs a differentiable base method; {method!r} is not"
            )
        options = {**options, "create_graph": True}
    return cls(**options)  # type: ignore[no-any-return]


class _Registered(NoiseTunnel):
    kind_name = "smoothgrad"

    def __init__(self, base: str | Attribution = "saliency", **options: Any) -> None:
        if "kind" in options:
            raise ValueError(
                f"{self.kind_name!r} fixes kind={self.kind_name!r}; use NoiseTunnel(kind=...)"
            )
        super().__init__(base, kind=self.kind_name, **options)


@register_method("smoothgrad")
class SmoothGrad(_Registered):
    """SmoothGrad (Smilkov et al. 2017): mean of a base method over noisy copies.

    ``SG(x) = 1/n sum_s E(x + eps_s)``, ``eps_s ~ N(0, (stdev * (max x - min x))^2)``; the base
    method ``E`` is ``base=`` (default ``saliency``), any registered name. See
    :class:`NoiseTunnel` for the options.
    """

    kind_name = "smoothgrad"


@register_method("smoothgrad_sq")
class SmoothGradSq(_Registered):
    """SmoothGrad² (Smilkov et al. 2017; Adebayo et al. 2018): mean of squared attributions.

    ``SG²(x) = 1/n sum_s E(x + eps_s)^2``; base method ``base=`` (default ``saliency``).
    """

    kind_name = "smoothgrad_sq"


@register_method("vargrad")
class VarGrad(_Registered):
    """VarGrad (Adebayo et al. 2018): variance of a base method over noisy copies.

    ``VG(x) = 1/n sum_s (E(x + eps_s) - SG(x))^2``; base method ``base=`` (default ``saliency``).
    """

    kind_name = "vargrad"
