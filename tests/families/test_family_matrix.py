"""Every registered method on every model family: works with the contract, or refuses clearly.

The matrix is driven by the registries: a method registered later is run on every family
automatically. :func:`refusal` is the single list of unsupported (method, family) pairs, each
with the error it must raise; every other pair must honour the contract: output shape, dtype
and device, finite values, no hooks left, train/eval flags, ``requires_grad`` and timm's fused
attention switch restored, and the same result twice (stochastic methods with a seed).
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch
from tests.families._tiny import CLASSES, TINY, batch, build
from torch import nn

from rightfocus import METHODS, hooks

CHEAP: dict[str, Any] = {"n_steps": 4, "n_samples": 3, "n_masks": 8, "num_samples": 8}
FAST: dict[str, dict[str, Any]] = {
    "occlusion": {"window": (8, 8), "strides": (8, 8)},
    "deepshap": {"baselines": torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))},
    "kernel_shap": {"n_segments": 9},
    "lime": {"n_segments": 9},
}
GUIDED = ("guided_backprop", "deconvnet", "guided_gradcam")
RELU_ONLY = ("regnet", "densenet", "resnet18")  # nn.ReLU is their only activation module
LRP_OK = ("densenet", "resnet18")  # BatchNorm merge, torchvision residual canonizer, concat
DEEPLIFT_OK = ("regnet", "densenet", "resnet18")  # incl. functional F.relu, reused nn.ReLU
GAP_LINEAR_HEAD = ("regnet", "densenet", "resnet18", "swin")


def refusal(method: str, family: str) -> str | None:
    """The error (a regex) ``method`` must raise on ``family``, or None where it works."""
    cls = METHODS.get(method)
    if getattr(cls, "needs_attention", False):
        if family in ("vit", "deit"):
            return None
        return "windowed attention" if family == "swin" else "no attention block"
    if method in GUIDED and family not in RELU_ONLY:
        return "has none|other activations"
    if method == "lrp" and family not in LRP_OK:
        return "LRP cannot explain"
    if method in ("deeplift", "deepshap") and family not in DEEPLIFT_OK:
        return "DeepLIFT cannot explain"
    if method == "cam" and family not in GAP_LINEAR_HEAD:
        return "global-average-pool"
    return None


def make(name: str) -> Any:
    cls = METHODS.get(name)
    params = inspect.signature(cls.__init__).parameters
    opts = {k: v for k, v in CHEAP.items() if k in params}
    opts.update(FAST.get(name, {}))
    if cls.stochastic:
        opts["seed"] = 0
    return cls(**opts)


def _state(model: nn.Module) -> tuple[list[bool], list[bool], list[bool]]:
    fused = [bool(m.fused_attn) for m in model.modules() if hasattr(m, "fused_attn")]
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        fused,
    )


_MODELS: dict[str, nn.Module] = {}


def _model(family: str) -> nn.Module:
    if family not in _MODELS:
        _MODELS[family] = build(family)
    return _MODELS[family]


PAIRS = [(m, f) for f in TINY for m in METHODS.names()]


@pytest.mark.parametrize(("method", "family"), PAIRS)
def test_method_on_family(method: str, family: str) -> None:
    model = _model(family)
    model.train()
    first = next(model.parameters())
    first.requires_grad_(False)  # a deliberate mix of flags that must come back as it was
    before = _state(model)
    x, target = batch(2), torch.tensor([1, CLASSES - 1])
    try:
        expected = refusal(method, family)
        if expected is not None:
            with pytest.raises(ValueError, match=expected):
                make(method)(model, x, target)
        else:
            out = make(method)(model, x, target)
            kind = METHODS.get(method).output
            channels = {1} if kind == "map" else {1, 3}
            assert out.shape[0] == 2 and out.shape[1] in channels and out.shape[2:] == (32, 32)
            assert out.dtype == x.dtype and out.device == x.device
            assert bool(torch.isfinite(out).all())
            torch.testing.assert_close(make(method)(model, x, target), out)
        assert hooks.count_hooks(model) == 0
        assert _state(model) == before
    finally:
        first.requires_grad_(True)
        model.eval()


ATTENTION = [n for n in METHODS.names() if getattr(METHODS.get(n), "needs_attention", False)]


@pytest.mark.parametrize("family", ["vit", "deit"])
@pytest.mark.parametrize("method", ATTENTION)
def test_attention_methods_are_batch_independent(method: str, family: str) -> None:
    model = _model(family)
    x, target = batch(4), torch.tensor([0, 1, 2, 3])
    full = make(method)(model, x, target)
    for i in range(4):
        torch.testing.assert_close(
            make(method)(model, x[i : i + 1], target[i : i + 1]), full[i : i + 1]
        )


class Failing(nn.Module):
    """A ViT whose forward raises after the attention blocks ran."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.num_prefix_tokens = inner.num_prefix_tokens
        self.patch_embed = inner.patch_embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inner.forward_features(x)
        raise RuntimeError("boom")


@pytest.mark.parametrize("method", ATTENTION)
def test_attention_methods_restore_the_model_after_an_error(method: str) -> None:
    model = Failing(build("vit"))
    before = _state(model)
    with pytest.raises(RuntimeError, match="boom"):
        make(method)(model, batch(2), None)
    assert hooks.count_hooks(model) == 0 and _state(model) == before


@pytest.mark.slow
@pytest.mark.parametrize("family", ["efficientnet", "resnet50"])
def test_heavier_families(family: str) -> None:
    """EfficientNet-B0 (SiLU, squeeze-excitation) and ResNet-50 at 32 x 32: CAM and gradient
    methods work, LRP / DeepLIFT work or refuse by name (~5 s)."""
    model = build(family)
    x, target = batch(2), torch.tensor([1, 2])
    for method in ("gradcam", "saliency", "integrated_gradients"):
        out = make(method)(model, x, target)
        assert out.shape[-2:] == (32, 32) and bool(torch.isfinite(out).all())
    if family == "efficientnet":
        for method, error in (("lrp", "SqueezeExcite"), ("deeplift", "SqueezeExcite")):
            with pytest.raises(ValueError, match=error):
                make(method)(model, x, target)
    else:
        assert bool(torch.isfinite(make("lrp")(model, x, target)).all())
    assert hooks.count_hooks(model) == 0


@pytest.mark.parametrize("method", ATTENTION)
def test_attention_methods_reject_bad_input(method: str) -> None:
    model, x = _model("vit"), batch(2)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        make(method)(model, x[0])
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        make(method)(model, bad)
    with pytest.raises(ValueError, match=r"out of range.*5 outputs"):
        make(method)(model, x, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="one score per sample"):
        make(method)(model, x, lambda out: out.sum())
    assert hooks.count_hooks(model) == 0
