"""Max pooling with a fast no-gradient path on the CPU.

On the CPU, ``torch.nn.functional.max_pool2d`` computes the argmax indices even when no gradient
is needed (it dispatches to ``max_pool2d_with_indices``); for LeNet's pools on 28x28 digits that
kernel takes more time than the convolutions in an evaluation pass. Without padding and
dilation, a max pool of kernel ``k`` and stride ``s`` is the element-wise maximum of the ``k*k``
strided views ``x[..., i::s, j::s]`` (cropped to the output size), which needs no indices and
is more than 10x faster for LeNet's shapes in this project's benchmark
(``benchmarks/pooling.py``). The values are identical (max is exact, NaN propagates in both).

With gradients the class is ``nn.MaxPool2d`` unchanged, so the backward pass routes each
window's gradient to the first maximum exactly as PyTorch does, and every ``isinstance(m,
nn.MaxPool2d)`` rule (LRP, DeepLIFT, receptive-field projection) still applies.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["MaxPool2d", "strided_max_pool2d"]


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[-1]))


def strided_max_pool2d(
    x: Tensor, kernel_size: int | tuple[int, int], stride: int | tuple[int, int]
) -> Tensor:
    """``max_pool2d(x, kernel_size, stride)`` (no padding, dilation 1, floor mode) as the maximum
    of ``kh*kw`` strided views: ``out[h, w] = max_{i<kh, j<kw} x[h*sh + i, w*sw + j]``."""
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride)
    h, w = x.shape[-2], x.shape[-1]
    if h < kh or w < kw:
        raise ValueError(
            f"max pooling with kernel {kh}x{kw} needs an input of at least that size, got {h}x{w}"
        )
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    out: Tensor | None = None
    for i in range(kh):
        for j in range(kw):
            view = x[..., i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]
            out = view if out is None else torch.maximum(out, view)
    assert out is not None
    return out if kh * kw > 1 else out.clone()


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` that evaluates no-gradient CPU calls by :func:`strided_max_pool2d`.

    The fast path applies when no gradient flows (``torch.no_grad`` / inference mode, or an
    input that does not require grad), the input is a 3-d or 4-d CPU tensor and the layer has no
    padding, dilation 1, floor mode and no ``return_indices``; every other call is
    ``nn.MaxPool2d.forward``.
    """

    def _fast(self, x: Tensor) -> bool:
        return (
            not (torch.is_grad_enabled() and x.requires_grad)
            and x.device.type == "cpu"
            and x.dim() in (3, 4)
            and x.is_floating_point()
            and not self.return_indices
            and not self.ceil_mode
            and _pair(self.padding) == (0, 0)
            and _pair(self.dilation) == (1, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(x, Tensor) and self._fast(x):
            stride = self.stride if self.stride is not None else self.kernel_size
            return strided_max_pool2d(x, self.kernel_size, stride)  # type: ignore[arg-type]
        return super().forward(x)
