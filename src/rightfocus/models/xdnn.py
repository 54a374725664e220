"""X-DNNs: bias-free, positively homogeneous networks (Hesse, Schaub-Meyer & Roth 2021).

"Fast Axiomatic Attribution for Neural Networks" (NeurIPS 2021): a network
``f`` without additive biases built from linear maps, ReLU-like activations and max/average
pooling is positively homogeneous of degree 1, ``f(a x) = a f(x)`` for ``a > 0``. For such a
network Integrated Gradients with the zero baseline reduces to ``x * df/dx`` (X-Gradient),
computed in one backward pass.

This module turns a model into its X-DNN form (:func:`to_xdnn`), checks the property
numerically (:func:`check_homogeneous`, :func:`homogeneity_error`), and defines a Fixup-style
residual network without BatchNorm and without scalar biases (:class:`XResNet`; Zhang, Dauphin &
Ma 2019, "Fixup Initialization").
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rightfocus import hooks

__all__ = [
    "ChannelScale",
    "XBasicBlock",
    "XResNet",
    "check_homogeneous",
    "homogeneity_error",
    "to_xdnn",
]

_BIASED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear, nn.Bilinear)
_NON_HOMOGENEOUS = (
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.GELU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardtanh,
    nn.Hardsigmoid,
    nn.Hardswish,
    nn.LogSigmoid,
    nn.Softmax,
    nn.LogSoftmax,
    nn.Softsign,
    nn.Tanhshrink,
    nn.LocalResponseNorm,
    nn.LayerNorm,
    nn.GroupNorm,
)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class ChannelScale(nn.Module):
    """Per-channel multiplication ``y = s_c * x_c`` (a BatchNorm folded without its shift).

    Args:
        scale: ``(C,)`` initial scale; learnable.
    """

    def __init__(self, scale: Tensor) -> None:
        super().__init__()
        self.scale = nn.Parameter(scale.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.scale.view(shape)


def _fold(bn: nn.modules.batchnorm._BatchNorm) -> ChannelScale:
    """The eval-mode scale ``gamma / sqrt(running_var + eps)`` of a BatchNorm, without shift."""
    if bn.running_var is None:
        raise ValueError(
            "Cannot fold a BatchNorm created with track_running_stats=False (it has no fixed "
            "scale). Remove it from the model before converting to an X-DNN."
        )
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach()
    return ChannelScale(scale)


def _remove_bias(module: nn.Module) -> None:
    if isinstance(module, _BIASED) and module.bias is not None:
        module.bias = None
    elif getattr(module, "mu_bias", None) is not None and hasattr(module, "rho_bias"):
        # a Bayesian layer: drop its bias mean and its bias variance
        setattr(module, "mu_bias", None)  # noqa: B010
        setattr(module, "rho_bias", None)  # noqa: B010


def _check_module(name: str, module: nn.Module, fold_batchnorm: bool) -> None:
    if isinstance(module, _NON_HOMOGENEOUS):
        raise ValueError(
            f"Layer {name!r} ({type(module).__name__}) is not positively homogeneous, so the "
            "model cannot become an X-DNN. Replace it by ReLU/LeakyReLU (activations) or remove "
            "it (normalisation layers) first."
        )
    if isinstance(module, _BATCHNORM) and not fold_batchnorm:
        raise ValueError(
            f"Layer {name!r} ({type(module).__name__}) adds a shift (beta - gamma * mean / std), "
            "which breaks positive homogeneity. Pass fold_batchnorm=True to keep only its scale "
            "(a ChannelScale), or use a BatchNorm-free architecture such as XResNet."
        )


def to_xdnn(model: nn.Module, fold_batchnorm: bool = False) -> nn.Module:
    """A bias-free copy of ``model`` (its X-DNN form); the original is left unchanged.

    Removes the bias of every convolution and linear layer (including Bayesian layers). Refuses
    layers that break positive homogeneity (Sigmoid, Tanh, Softplus, GELU, ..., LayerNorm,
    GroupNorm, LocalResponseNorm) and BatchNorm unless ``fold_batchnorm=True``, which replaces each
    BatchNorm by a :class:`ChannelScale` holding its eval-mode scale (the shift is dropped).
    Functional operations inside ``forward`` cannot be inspected: confirm the result with
    :func:`check_homogeneous`.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: a layer that cannot be made homogeneous (the message names it).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, not {type(model).__name__}")
    for name, module in model.named_modules():
        _check_module(name or type(model).__name__, module, fold_batchnorm)
    if isinstance(model, _BATCHNORM):
        return _fold(model)
    new = copy.deepcopy(model)
    for parent in list(new.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, _BATCHNORM):
                setattr(parent, child_name, _fold(child))
    for module in new.modules():
        _remove_bias(module)
    return new


def homogeneity_error(
    model: nn.Module, x: Tensor, alphas: Sequence[float] = (0.5, 2.0, 3.0)
) -> float:
    """Largest relative deviation ``max_a max|f(a x) - a f(x)| / max|a f(x)|`` over ``alphas``.

    The model is evaluated in eval mode with Bayesian sampling off (the mean network), without
    gradients; flags are restored afterwards.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tensor, not {type(x).__name__}")
    if not alphas or any(not math.isfinite(a) or a <= 0 for a in alphas):
        raise ValueError(f"alphas must be a non-empty list of finite numbers > 0, got {alphas!r}")
    worst = 0.0
    with torch.no_grad(), hooks.eval_mode(model), hooks.sampling(model, False):
        base = model(x)
        for a in alphas:
            expected = a * base
            scale = float(expected.abs().max())
            dev = float((model(a * x) - expected).abs().max())
            worst = max(worst, dev / scale if scale > 0 else dev)
    return worst


def check_homogeneous(
    model: nn.Module,
    x: Tensor,
    alphas: Sequence[float] = (0.5, 2.0, 3.0),
    rtol: float | None = None,
) -> bool:
    """True when ``f(a x) = a f(x)`` holds for every ``a`` in ``alphas`` within ``rtol``.

    ``rtol`` defaults to ``1e-4`` for float32/float16 inputs and ``1e-9`` for float64. See
    :func:`homogeneity_error` for the measured deviation.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tensor, not {type(x).__name__}")
    if rtol is None:
        rtol = 1e-9 if x.dtype == torch.float64 else 1e-4
    return homogeneity_error(model, x, alphas) <= rtol


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class XBasicBlock(nn.Module):
    """Residual block ``relu(conv2(relu(conv1(x))) + shortcut(x))`` without biases or BatchNorm.

    The shortcut is the identity, or a bias-free 1x1 convolution when the shape changes.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        # the shortcut is registered first so that conv2 is the block's last conv (CAM target)
        self.shortcut: nn.Module = (
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )
        self.conv1 = _conv3x3(c_in, c_out, stride)
        self.relu1 = nn.ReLU()
        self.conv2 = _conv3x3(c_out, c_out)
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu2(self.conv2(self.relu1(self.conv1(x))) + self.shortcut(x))


class XResNet(nn.Module):
    """Fixup-style residual network without BatchNorm and without (scalar) biases: an X-DNN.

    Structure: stem (7x7/2 conv + 3x3/2 max-pool for ``image_size >= 64``, else a 3x3/1 conv),
    four stages of :class:`XBasicBlock` with widths ``width * (1, 2, 4, 8)`` (strides 1, 2, 2, 2),
    global average pooling and a bias-free linear classifier. Fixup initialisation (Zhang et al.
    2019): He-normal weights, the first conv of each of the L residual branches scaled by
    ``L^(-1/(2m-2))`` with m = 2 layers per branch, the last conv of each branch and the classifier
    set to zero. The scalar biases and multipliers of Fixup are left out (Hesse et al. 2021), so
    the network is positively homogeneous.

    Args:
        num_classes: output classes.
        in_channels: input channels.
        image_size: input side length (chooses the stem).
        layers: blocks per stage (``(2, 2, 2, 2)`` = ResNet-18 layout).
        width: channels of the first stage.
        zero_init: Fixup's zero initialisation of the branch outputs and the classifier.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 224,
        layers: Sequence[int] = (2, 2, 2, 2),
        width: int = 64,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ValueError(f"layers must be four positive block counts, got {layers!r}")
        if width < 1 or num_classes < 1 or in_channels < 1 or image_size < 8:
            raise ValueError(
                "width, num_classes and in_channels must be >= 1 and image_size >= 8; got "
                f"{width}, {num_classes}, {in_channels}, {image_size}"
            )
        if image_size >= 64:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
                nn.ReLU(),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        else:
            self.stem = nn.Sequential(_conv3x3(in_channels, width), nn.ReLU())
        c_in = width
        for i, (blocks, stride) in enumerate(zip(layers, (1, 2, 2, 2))):
            c_out = width * 2**i
            stage = [XBasicBlock(c_in, c_out, stride)]
            stage += [XBasicBlock(c_out, c_out) for _ in range(int(blocks) - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
            c_in = c_out
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes, bias=False)
        self._fixup_init(sum(int(n) for n in layers), zero_init)

    def _fixup_init(self, num_branches: int, zero_init: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():
            if isinstance(m, XBasicBlock):
                with torch.no_grad():
                    m.conv1.weight.mul_(num_branches ** (-1.0 / (2 * 2 - 2)))
                if zero_init:
                    nn.init.zeros_(m.conv2.weight)
        if zero_init:
            nn.init.zeros_(self.fc.weight)
        else:
            nn.init.kaiming_uniform_(self.fc.weight, a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(self.pool(x).flatten(1))
