"""LRP and DeepLIFT on the modern families: the promised properties where a correct rule set
exists (conservation, summation-to-delta), an error naming the module everywhere else."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tests.families._tiny import batch, build
from torch import nn

from rightfocus import attribute, hooks

TARGET = torch.tensor([1, 4])


@pytest.mark.parametrize("family", ["regnet", "densenet", "resnet18"])
def test_deeplift_summation_to_delta(family: str) -> None:
    """ResNet-18 calls one nn.ReLU twice per block; DenseNet ends in a functional F.relu;
    RegNet's activations sit inside timm's BatchNormAct2d."""
    model = build(family, torch.float64)
    x = batch(2, torch.float64)
    attr, delta = attribute(model, x, TARGET, method="deeplift", return_delta=True)
    gap = model(x).gather(1, TARGET[:, None]) - model(torch.zeros_like(x)).gather(
        1, TARGET[:, None]
    )
    assert float(gap.detach().abs().min()) > 1e-4  # a non-trivial difference to explain
    torch.testing.assert_close(attr.flatten(1).sum(1), gap.squeeze(1), rtol=1e-9, atol=1e-12)
    assert float(delta.abs().max()) < 1e-9
    assert hooks.count_hooks(model) == 0


@pytest.mark.slow
def test_deeplift_summation_to_delta_resnet50() -> None:
    """Bottleneck blocks (one ReLU module called three times each); ~3 s."""
    model = build("resnet50", torch.float64)
    _, delta = attribute(
        model, batch(2, torch.float64), TARGET, method="deeplift", return_delta=True
    )
    assert float(delta.abs().max()) < 1e-9


class Functional(nn.Module):
    """Activations written as functions and tensor methods, one applied in place."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.conv1(x))
        h = F.hardswish(self.conv2(h)) + torch.sigmoid(h) + F.relu(h.clone(), inplace=True)
        h = torch.tanh(h) + h.relu()
        return self.fc(F.gelu(h.mean((2, 3))))


def test_deeplift_rescales_functional_activations() -> None:
    """Plain gradients through F.silu, F.gelu, ... would break summation-to-delta."""
    torch.manual_seed(0)
    model = Functional().double().eval()
    x = batch(2, torch.float64)
    _, delta = attribute(model, x, TARGET, method="deeplift", return_delta=True)
    assert float(delta.abs().max()) < 1e-9
    # the same network seen through plain gradients (no rule applied) misses the gap
    xg = x.clone().requires_grad_(True)
    score = model(xg).gather(1, TARGET[:, None]).sum()
    (g,) = torch.autograd.grad(score, xg)
    gap = model(x).gather(1, TARGET[:, None]) - model(torch.zeros_like(x)).gather(
        1, TARGET[:, None]
    )
    assert float(((x * g).flatten(1).sum(1) - gap.squeeze(1)).abs().max()) > 1e-3


class Gated(nn.Module):
    """Squeeze-excitation written functionally: a product of two input-dependent tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv(x))
        if bool(h.abs().sum() >= 0):  # a nonlinear op that does not reach the output is fine
            h = h * h.mean((2, 3), keepdim=True).sigmoid()
        return self.fc(h.mean((2, 3)))


def test_deeplift_refuses_a_functional_gate_naming_the_op() -> None:
    model = Gated().double().eval()
    with pytest.raises(ValueError, match=r"no rule for 'mul' called in 'Gated'"):
        attribute(model, batch(2, torch.float64), TARGET, method="deeplift")
    assert hooks.count_hooks(model) == 0


@pytest.mark.parametrize(
    ("family", "names"),
    [
        ("convnext", ["'stem.1': LayerNorm2d"]),
        ("mobilenetv3", ["squeeze-excitation (SqueezeExcite)"]),
        ("vit", ["'blocks.0.norm1': LayerNorm", "attention (Attention)"]),
        ("swin", ["attention (WindowAttention)"]),
    ],
)
def test_deeplift_names_the_unsupported_modules(family: str, names: list[str]) -> None:
    with pytest.raises(ValueError, match="DeepLIFT cannot explain") as err:
        attribute(build(family), batch(2), TARGET, method="deeplift")
    for name in names:
        assert name in str(err.value)


@pytest.mark.parametrize("family", ["densenet", "resnet18"])
def test_lrp_conserves_relevance_on_bias_free_networks(family: str) -> None:
    """LRP-epsilon (epsilon -> 0) on a network whose only bias-like terms are zero: the input
    relevance sums to the target logit (Bach et al. 2015). BatchNorm shifts are kept zero where
    merged; DenseNet's unmerged batch norms (after a concatenation) pass relevance unchanged."""
    model = build(family, torch.float64)
    with torch.no_grad():
        for module in model.modules():
            bias = getattr(module, "bias", None)
            if isinstance(bias, torch.Tensor):
                bias.zero_()
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)  # a scale only: no shift anywhere
    x = batch(2, torch.float64)
    rel = attribute(
        model, x, TARGET, method="lrp", composite="epsilon", epsilon=1e-12, stabilizer=1e-12
    )
    logits = model(x).gather(1, TARGET[:, None]).squeeze(1)
    if family == "densenet":  # pass rule at unmerged batch norms: conservation up to their scale
        return _densenet_conservation(model, x, rel, logits)
    torch.testing.assert_close(rel.flatten(1).sum(1), logits, rtol=1e-8, atol=1e-10)


UNMERGED = ("norm1", "norm", "norm5")  # DenseNet batch norms after a concatenation or a pool


def _densenet_conservation(model: nn.Module, x: torch.Tensor, rel: torch.Tensor,
                           logits: torch.Tensor) -> None:  # fmt: skip
    """With unit-scale unmerged batch norms the pass rule is exact as well."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.BatchNorm2d) and name.split(".")[-1] in UNMERGED:
                module.weight.copy_(torch.sqrt(module.running_var + module.eps))
    rel = attribute(
        model, x, TARGET, method="lrp", composite="epsilon", epsilon=1e-12, stabilizer=1e-12
    )
    logits = model(x).gather(1, TARGET[:, None]).squeeze(1)
    torch.testing.assert_close(rel.flatten(1).sum(1), logits, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize(
    ("family", "names"),
    [
        ("convnext", ["LayerNorm2d", "GELU", "ConvNeXtBlock"]),
        ("mobilenetv3", ["SqueezeExcite", "Hardswish", "BatchNormAct2d"]),
        ("regnet", ["Bottleneck"]),
        ("vit", ["LayerNorm", "attention (Attention)", "GELU"]),
        ("swin", ["WindowAttention"]),
    ],
)
def test_lrp_names_the_unsupported_modules(family: str, names: list[str]) -> None:
    model = build(family)
    with pytest.raises(ValueError, match="LRP cannot explain") as err:
        attribute(model, batch(2), TARGET, method="lrp")
    for name in names:
        assert name in str(err.value)
    assert hooks.count_hooks(model) == 0


@pytest.mark.parametrize("family", ["vit", "swin", "mobilenetv3"])
def test_integrated_gradients_completeness_on_smooth_families(family: str) -> None:
    """sum IG = S(x) - S(0) (Sundararajan et al. 2017) on GELU/LayerNorm/attention models."""
    model = build(family, torch.float64)
    _, delta = attribute(
        model, batch(2, torch.float64), TARGET, method="integrated_gradients", n_steps=64,
        return_delta=True,
    )  # fmt: skip
    assert float(delta.abs().max()) < 1e-3
