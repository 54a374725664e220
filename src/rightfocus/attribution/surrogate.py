"""Surrogate-model explanations on superpixels: Kernel SHAP and LIME.

Both explain an image through ``M`` superpixels (interpretable features). A coalition
``z in {0, 1}^M`` keeps the superpixels with ``z_j = 1`` and fills the others from a baseline
image ``b``: ``h_x(z) = b + z[seg] * (x - b)``. The model is evaluated on ``num_samples``
coalitions (batched, ``internal_batch_size`` images per forward pass, ``"auto"`` by default)
and a weighted linear model ``g(z) = phi_0 + sum_j phi_j z_j`` is fitted to ``f_c(h_x(z))``;
each superpixel's coefficient ``phi_j`` is broadcast to its pixels in every channel, so the
output has the input's shape ``(B, C, H, W)`` and ``sum_j phi_j`` counts every superpixel once.

Superpixels: ``segments="slic"`` (SLIC, Achanta et al. 2012, via
``skimage.segmentation.slic`` on the image rescaled to [0, 1]), ``"grid"`` (a regular grid of
about ``n_segments`` cells), or a label tensor of shape ``(H, W)``, ``(B or 1, H, W)`` or
``(B or 1, 1, H, W)``.

Randomness and batch independence: coalitions are drawn from a CPU ``torch.Generator``
seeded with ``seed`` alone (``None``: one seed drawn from torch's global generator per call),
re-seeded for every group of images with the same number of superpixels ``M``. An image's
coalitions therefore depend only on ``seed`` and its own ``M``, never on its position in the
batch or on the other images; results are also identical on CPU and GPU.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from rightfocus._images import gaussian_blur
from rightfocus.attribution._passes import PassLayout
from rightfocus.attribution.base import (
    Attribution,
    broadcast_baseline,
    copies_per_pass,
    images_per_pass,
    pass_options,
    positive_int,
    register_method,
)
from rightfocus.attribution.targets import Target, fix_target, select

__all__ = [
    "FILLS",
    "KernelShap",
    "Lime",
    "all_coalitions",
    "fill_baseline",
    "grid_segments",
    "kernel_shap_solve",
    "sample_kernel_coalitions",
    "shapley_kernel",
    "slic_segments",
    "weighted_ridge",
]

FILLS = ("zero", "mean", "superpixel_mean", "blur")
_MAX_EXACT_FEATURES = 20


def grid_segments(height: int, width: int, n_segments: int) -> Tensor:
    """A regular grid of about ``n_segments`` cells (at most one per pixel) as ``(H, W)`` labels.

    ``rows = round(sqrt(n * H / W))`` and ``cols = round(n / rows)``, both clamped to the image.
    """
    rows = min(height, max(1, round(math.sqrt(n_segments * height / width))))
    cols = min(width, max(1, round(n_segments / rows)))
    r = torch.arange(height) * rows // height
    c = torch.arange(width) * cols // width
    return r[:, None] * cols + c[None, :]


def slic_segments(image: Tensor, n_segments: int, options: dict[str, Any] | None = None) -> Tensor:
    """SLIC superpixels of one ``(C, H, W)`` image, as ``(H, W)`` labels on the image's device.

    The image is rescaled to [0, 1]; 3-channel images are clustered in Lab space with
    ``compactness=10``, other channel counts in their own space with ``compactness=0.1``
    (skimage's guidance for [0, 1] intensities). ``options`` override any ``slic`` argument.
    """
    from skimage.segmentation import slic  # heavy: ~1 s; only SLIC needs it

    img = image.detach().to("cpu", torch.float64)
    lo, hi = img.min(), img.max()
    img = (img - lo) / (hi - lo) if hi > lo else torch.zeros_like(img)
    channels = img.shape[0]
    kwargs: dict[str, Any] = {
        "n_segments": n_segments,
        "compactness": 10.0 if channels == 3 else 0.1,
        "start_label": 0,
        "convert2lab": channels == 3,
        "channel_axis": None if channels == 1 else -1,
    }
    kwargs.update(options or {})
    array = img[0].numpy() if channels == 1 else img.permute(1, 2, 0).numpy()
    labels = slic(array, **kwargs)
    return torch.as_tensor(labels, dtype=torch.long, device=image.device)


def fill_baseline(
    x: Tensor, labels: Tensor, fill: str | float | Tensor, blur_sigma: float = 3.0
) -> Tensor:
    """The image ``b`` that replaces switched-off superpixels.

    ``zero``; ``mean`` (each image's per-channel mean); ``superpixel_mean`` (each superpixel's
    per-channel mean, LIME's default ``hide_color=None``); ``blur`` (Gaussian, ``blur_sigma``
    pixels); or a number / tensor broadcastable to ``x``. ``labels``: ``(B, H*W)``.
    """
    if isinstance(fill, str):
        if fill == "zero":
            return torch.zeros_like(x)
        if fill == "mean":
            return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
        if fill == "blur":
            return gaussian_blur(x, blur_sigma)
        if fill == "superpixel_mean":
            B, C = x.shape[:2]
            idx = labels.unsqueeze(1).expand(B, C, -1)
            n = int(labels.max()) + 1
            sums = x.new_zeros(B, C, n).scatter_add(2, idx, x.flatten(2))
            counts = x.new_zeros(B, 1, n).scatter_add(
                2, labels.unsqueeze(1), x.new_ones(B, 1, 1).expand(B, 1, labels.shape[1])
            )
            return (sums / counts.clamp_min(1)).gather(2, idx).view_as(x)
        raise ValueError(f"baseline must be one of {', '.join(FILLS)}, a number or a tensor")
    return broadcast_baseline(fill, x)


def shapley_kernel(M: int, sizes: Tensor) -> Tensor:
    """Shapley kernel ``pi(z) = (M - 1) / (C(M, |z|) |z| (M - |z|))`` for ``0 < |z| < M``."""
    s = sizes.to(torch.float64)
    log_binom = math.lgamma(M + 1) - torch.lgamma(s + 1) - torch.lgamma(M - s + 1)
    return (M - 1) / (torch.exp(log_binom) * s * (M - s))


def all_coalitions(M: int) -> Tensor:
    """Every coalition except the empty and the full one: ``(2^M - 2, M)`` in {0, 1}."""
    if M > _MAX_EXACT_FEATURES:
        raise ValueError(
            f"Exact enumeration of 2^{M} coalitions is too large; use at most "
            f"{_MAX_EXACT_FEATURES} superpixels or exact=False"
        )
    codes = torch.arange(1, 2**M - 1)
    return ((codes[:, None] >> torch.arange(M)[None, :]) & 1).to(torch.float64)


def sample_kernel_coalitions(M: int, n: int, generator: torch.Generator) -> Tensor:
    """``n`` coalitions drawn from the Shapley kernel distribution, in antithetic pairs.

    The size ``s`` has probability ``∝ (M - 1) / (s (M - s))`` (the kernel summed over the
    ``C(M, s)`` coalitions of that size), the coalition is uniform among those of size ``s``;
    each draw ``z`` is followed by its complement ``1 - z`` (same distribution, lower variance).
    """
    if M < 2:
        raise ValueError("Sampling coalitions needs at least 2 superpixels")
    sizes = torch.arange(1, M, dtype=torch.float64)
    probs = (M - 1) / (sizes * (M - sizes))
    half = (n + 1) // 2
    s = torch.multinomial(probs, half, replacement=True, generator=generator) + 1
    ranks = torch.rand(half, M, generator=generator, dtype=torch.float64).argsort(1).argsort(1)
    z = (ranks < s[:, None]).to(torch.float64)
    return torch.stack([z, 1 - z], dim=1).reshape(2 * half, M)[:n]


def kernel_shap_solve(Z: Tensor, w: Tensor, y: Tensor, f0: Tensor, f1: Tensor) -> Tensor:
    """Weighted least squares with the efficiency constraint (Lundberg & Lee 2017, Thm. 2).

    ``min_phi sum_z w(z) (f(z) - f0 - z . phi)^2`` s.t. ``sum_j phi_j = f1 - f0``, solved by
    its KKT system ``[[Z^T W Z, 1], [1^T, 0]] [phi; lambda] = [Z^T W (y - f0); f1 - f0]`` with a
    pseudo-inverse (the minimum-norm solution when too few coalitions were evaluated).

    Args:
        Z: ``(n, M)`` coalitions; w: ``(n,)`` weights; y: ``(G, n)`` scores ``f(h_x(z))``;
        f0, f1: ``(G,)`` scores of the baseline (``z = 0``) and of the image (``z = 1``).
    """
    M = Z.shape[1]
    w = w / w.sum() if w.numel() else w
    kkt = Z.new_zeros(M + 1, M + 1)
    kkt[:M, :M] = Z.T @ (w[:, None] * Z)
    kkt[:M, M] = kkt[M, :M] = 1.0
    rhs = torch.cat([((y - f0[:, None]) * w) @ Z, (f1 - f0)[:, None]], dim=1)
    return (rhs @ torch.linalg.pinv(kkt).T)[:, :M]


def weighted_ridge(Z: Tensor, w: Tensor, y: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Weighted ridge regression with an unpenalised intercept (as scikit-learn's ``Ridge``).

    ``min sum_z w(z) (y(z) - b - z . beta)^2 + alpha |beta|^2``; returns ``(beta (G, M), b (G,))``.
    """
    total = w.sum()
    mz = (w @ Z) / total
    my = (y @ w) / total
    Zc, yc = Z - mz, y - my[:, None]
    gram = Zc.T @ (w[:, None] * Zc) + alpha * torch.eye(Z.shape[1], dtype=Z.dtype, device=Z.device)
    beta = ((yc * w) @ Zc) @ torch.linalg.pinv(gram).T
    return beta, my - beta @ mz


def _label_maps(segments: str | Tensor, x: Tensor, n_segments: int, slic: dict[str, Any]) -> Tensor:
    """``(B, H, W)`` superpixel labels for every image, not yet made consecutive."""
    B, _, H, W = x.shape
    if isinstance(segments, Tensor):
        labels = segments.to(x.device)
        if labels.dim() == 4 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.dim() == 2:
            labels = labels.unsqueeze(0)
        if labels.dim() != 3 or labels.shape[0] not in (1, B) or tuple(labels.shape[1:]) != (H, W):
            raise ValueError(
                f"segments must have shape (H, W), (B or 1, H, W) or (B or 1, 1, H, W) for x "
                f"{tuple(x.shape)}, got {tuple(segments.shape)}"
            )
        return labels.long().expand(B, H, W)
    if segments == "grid":
        return grid_segments(H, W, n_segments).to(x.device).expand(B, H, W)
    return torch.stack([slic_segments(img, n_segments, slic) for img in x])


class _Surrogate(Attribution):
    """Shared pipeline: superpixels, baseline, batched coalition scores, one fit per image.

    The options both methods share, with their defaults and checks, live here; a subclass adds
    its own and passes the rest on (documented on :class:`KernelShap`).
    """

    model_agnostic = True
    stochastic = True

    def __init__(
        self,
        *,
        segments: str | Tensor = "slic",
        n_segments: int = 50,
        baseline: str | float | Tensor = "zero",
        num_samples: int = 1000,
        internal_batch_size: int | str | None = "auto",
        memory_budget: int | str | None = None,
        seed: int | None = None,
        slic_options: dict[str, Any] | None = None,
        blur_sigma: float = 3.0,
        eval_mode: bool | None = None,
    ) -> None:
        super().__init__(eval_mode=eval_mode)
        if isinstance(segments, Tensor):
            if segments.dtype.is_floating_point or segments.dtype == torch.bool:
                raise TypeError(f"segments must be an integer label tensor, got {segments.dtype}")
        elif segments not in ("grid", "slic"):
            raise ValueError(f"segments must be 'grid', 'slic' or a label tensor, got {segments!r}")
        if isinstance(baseline, str) and baseline not in FILLS:
            raise ValueError(f"baseline must be one of {', '.join(FILLS)}, a number or a tensor")
        if not blur_sigma > 0:
            raise ValueError(f"blur_sigma must be > 0, got {blur_sigma!r}")
        self.segments = segments
        self.n_segments = positive_int(n_segments, "n_segments")
        self.baseline = baseline
        self.num_samples = positive_int(num_samples, "num_samples")
        self.internal_batch_size, self.memory_budget = pass_options(
            internal_batch_size, memory_budget
        )
        self.seed = seed
        self.slic_options = dict(slic_options or {})
        self.blur_sigma = float(blur_sigma)

    @abstractmethod
    def _coalitions(self, M: int, seed: int) -> tuple[Tensor, Tensor]:
        """``(Z (n, M), w (n,))`` in float64 on the CPU, from ``seed`` and ``M`` alone."""

    @abstractmethod
    def _fit(self, Z: Tensor, w: Tensor, y: Tensor, f0: Tensor, f1: Tensor) -> Tensor:
        """Coefficients ``(G, M)`` from scores ``y (G, n)`` of the ``G`` images of a group."""

    def _attribute(self, model: nn.Module, x: Tensor, target: Target) -> Tensor:
        return self._attribute_multi(model, x, target)

    def _attribute_multi(self, model: nn.Module, x: Tensor, targets: Target) -> Tensor:
        """Every target's coefficients come from the same coalition passes: a ``(B, K)``
        class tensor gives ``(B, K, C, H, W)``."""
        B, C, H, W = x.shape
        raw = _label_maps(self.segments, x, self.n_segments, self.slic_options).reshape(B, H * W)
        labels = torch.stack([torch.unique(r, return_inverse=True)[1] for r in raw])
        counts = [int(r.max()) + 1 for r in labels]
        base = fill_baseline(x, labels, self.baseline, self.blur_sigma)
        seed = self.seed if self.seed is not None else int(torch.randint(0, 2**62, (1,)))
        images = images_per_pass(self.internal_batch_size, model, x, self.memory_budget)
        layout = PassLayout(x)
        with torch.no_grad():
            out = model(torch.cat([x, base]))
            fixed = fix_target(out[:B], targets)
            f1, f0 = select(out[:B], fixed), select(out[B:], fixed)
            multi = f1.dim() == 2
            K = f1.shape[1] if multi else 1
            coef = x.new_zeros(B, K, max(counts))
            for M in sorted(set(counts)):
                idx = torch.tensor([i for i, m in enumerate(counts) if m == M], device=x.device)
                Z, w = (t.to(dtype=x.dtype, device=x.device) for t in self._coalitions(M, seed))
                tgt = fixed[idx] if isinstance(fixed, Tensor) else fixed
                y = self._scores(model, x[idx], base[idx], labels[idx], Z, tgt, images, layout)
                G = idx.shape[0]
                fit = self._fit(Z, w, y.reshape(G * K, -1), f0[idx].reshape(-1),
                                f1[idx].reshape(-1))  # fmt: skip
                coef[idx, :, :M] = fit.view(G, K, M)
        maps = coef.gather(2, labels.unsqueeze(1).expand(B, K, H * W)).view(B, K, 1, H, W)
        maps = maps.expand(B, K, C, H, W)
        return (maps if multi else maps[:, 0]).contiguous()

    def _scores(
        self,
        model: nn.Module,
        x: Tensor,
        base: Tensor,
        labels: Tensor,
        Z: Tensor,
        target: Any,
        images: int,
        layout: PassLayout,
    ) -> Tensor:
        """``f_c(h_x(z))`` for every image of a group and every coalition: ``(G, n)``, or
        ``(G, K, n)`` for a ``(G, K)`` class target (passes in ``layout``'s memory layout)."""
        G, n = x.shape[0], Z.shape[0]
        if images < G:  # fewer than G images fit in a pass: split the group
            return torch.cat([
                self._scores(model, x[s : s + images], base[s : s + images],
                             labels[s : s + images], Z, _rows(target, s, images), images,
                             layout)
                for s in range(0, G, images)
            ])  # fmt: skip
        per_pass = copies_per_pass(images, G, max(n, 1))
        diff = (x - base).unsqueeze(0)
        multi = isinstance(target, Tensor) and target.dim() == 2
        scores = []
        for start in range(0, n, per_pass):
            z = Z[start : start + per_pass]
            k = z.shape[0]
            masks = z[:, labels].view(k, G, 1, *x.shape[2:])
            images_k = (base.unsqueeze(0) + masks * diff).reshape(k * G, *x.shape[1:])
            if isinstance(target, Tensor):
                tgt: Any = target.repeat(k, 1) if multi else target.repeat(k)
            else:
                tgt = target
            s = select(layout.forward(model, images_k), tgt)
            scores.append(s.view(k, G, *s.shape[1:]))
        if not scores:
            shape = (G, target.shape[1], 0) if multi else (G, 0)
            return x.new_zeros(shape)
        return torch.cat(scores).movedim(0, -1)


def _rows(target: Any, start: int, size: int) -> Any:
    return target[start : start + size] if isinstance(target, Tensor) else target


@register_method("kernel_shap")
class KernelShap(_Surrogate):
    """Kernel SHAP on superpixels (Lundberg & Lee 2017, "A unified approach to interpreting
    model predictions").

    Shapley values ``phi`` of the game ``v(z) = f_c(h_x(z))`` as the weighted least-squares fit
    ``min sum_z pi(z) (v(z) - v(0) - z . phi)^2`` subject to ``sum_j phi_j = v(1) - v(0)``
    (efficiency), with the Shapley kernel ``pi(z) = (M - 1) / (C(M, |z|) |z| (M - |z|))``.
    With every coalition enumerated (``exact``; automatic when ``2^M - 2 <= num_samples``) the
    result is the exact Shapley values; otherwise ``num_samples`` coalitions are drawn from the
    kernel distribution (in antithetic pairs) and weighted equally. The empty and full
    coalitions enter as exact constraints (Captum weights them 10^6 instead).

    Args:
        segments: ``"slic"``, ``"grid"`` or an integer label tensor (module docstring).
        n_segments: about how many superpixels (SLIC / grid).
        baseline: fill of switched-off superpixels: ``zero``, ``mean``, ``superpixel_mean``,
            ``blur``, a number or a tensor broadcastable to ``x``.
        num_samples: coalitions evaluated per image (besides the empty and the full one).
        exact: enumerate all ``2^M - 2`` coalitions (``None``: when that is <= num_samples).
        internal_batch_size: images per forward pass, or ``"auto"`` (default: see
            :func:`rightfocus.attribution.base.images_per_pass`).
        memory_budget: bytes (or ``"2GB"``) for ``auto``.
        seed: seeds the coalition sampler (``None``: drawn from torch's global generator).
        slic_options: extra keyword arguments for ``skimage.segmentation.slic``.
        blur_sigma: Gaussian sigma in pixels for ``baseline="blur"``.
        eval_mode: ``False`` keeps the model's own train/eval mode (default: eval mode).
    """

    def __init__(self, *, exact: bool | None = None, **options: Any) -> None:
        super().__init__(**options)
        if exact not in (None, True, False):
            raise ValueError(f"exact must be None, True or False, got {exact!r}")
        self.exact = exact

    def _coalitions(self, M: int, seed: int) -> tuple[Tensor, Tensor]:
        exact = self.exact
        if exact is None:
            exact = M <= _MAX_EXACT_FEATURES and self.num_samples >= 2**M - 2
        if exact or M < 2:
            Z = all_coalitions(M)
            return Z, shapley_kernel(M, Z.sum(1))
        gen = torch.Generator().manual_seed(seed)
        Z = sample_kernel_coalitions(M, self.num_samples, gen)
        return Z, torch.ones(Z.shape[0], dtype=torch.float64)

    def _fit(self, Z: Tensor, w: Tensor, y: Tensor, f0: Tensor, f1: Tensor) -> Tensor:
        return kernel_shap_solve(Z, w, y, f0, f1)


@register_method("lime")
class Lime(_Surrogate):
    """LIME on superpixels (Ribeiro et al. 2016, "Why should I trust you?").

    ``num_samples`` coalitions ``z`` (the first keeps every superpixel, the others switch each
    superpixel on with probability 1/2) are weighted by the exponential kernel
    ``pi_x(z) = exp(-D(1, z)^2 / sigma^2)`` on the cosine distance ``D = 1 - |z|^{1/2} / M^{1/2}``
    (or the L2 distance ``sqrt(M - |z|)``), and a weighted ridge regression
    ``min sum_z pi_x(z) (f_c(h_x(z)) - g(z))^2 + alpha |phi|^2`` gives the coefficients. The
    ``lime`` package weighs by ``sqrt(pi_x)``, i.e. its width is ours times ``sqrt(2)``.

    Args:
        kernel_width: ``sigma`` (``None``: 0.25 for cosine as ``lime_image``, ``0.75 sqrt(M)``
            for L2 as ``lime_tabular``).
        distance: ``"cosine"`` or ``"l2"``.
        alpha: ridge penalty (``lime``'s default ``Ridge(alpha=1)``; 0 = weighted least squares).
        segments, n_segments, baseline, num_samples, internal_batch_size, memory_budget, seed,
        slic_options, blur_sigma, eval_mode: as for :class:`KernelShap` (same defaults; the
            ``lime`` package fills with each superpixel's mean, ``baseline="superpixel_mean"``).
    """

    def __init__(
        self,
        *,
        kernel_width: float | None = None,
        distance: str = "cosine",
        alpha: float = 1.0,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if distance not in ("cosine", "l2"):
            raise ValueError(f"distance must be 'cosine' or 'l2', got {distance!r}")
        if kernel_width is not None and not kernel_width > 0:
            raise ValueError(f"kernel_width must be > 0, got {kernel_width!r}")
        if not alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {alpha!r}")
        self.kernel_width = kernel_width
        self.distance = distance
        self.alpha = float(alpha)

    def _coalitions(self, M: int, seed: int) -> tuple[Tensor, Tensor]:
        gen = torch.Generator().manual_seed(seed)
        rest = torch.randint(0, 2, (self.num_samples - 1, M), generator=gen)
        Z = torch.cat([torch.ones(1, M, dtype=torch.long), rest]).to(torch.float64)
        on = Z.sum(1)
        if self.distance == "cosine":
            d, width = 1 - torch.sqrt(on / M), self.kernel_width or 0.25
        else:
            d, width = torch.sqrt(M - on), self.kernel_width or 0.75 * math.sqrt(M)
        return Z, torch.exp(-(d**2) / width**2)

    def _fit(self, Z: Tensor, w: Tensor, y: Tensor, f0: Tensor, f1: Tensor) -> Tensor:
        return weighted_ridge(Z, w, y, self.alpha)[0]
