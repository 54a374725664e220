"""Bad input gets a specific ValueError/TypeError whose message names the problem."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rightfocus import METHODS, attribute

# attention methods need a transformer: tests/families/test_family_matrix.py checks them
NAMES = [n for n in METHODS.names() if not getattr(METHODS.get(n), "needs_attention", False)]
LAYER_METHODS = [n for n in NAMES if METHODS.get(n).needs_layer]
CHEAP = {
    "integrated_gradients": {"n_steps": 2},
    "occlusion": {"window": (4, 4)},
    "deepshap": {"baselines": torch.rand(2, 1, 8, 8)},
    "kernel_shap": {"num_samples": 2, "segments": "grid", "seed": 0},
    "lime": {"num_samples": 2, "segments": "grid", "seed": 0},
    "rise": {"n_masks": 2, "seed": 0},
}


def run(name: str, model: nn.Module, x, target=None, **opts):
    opts = {**CHEAP.get(name, {}), **opts}
    if METHODS.get(name).stochastic and name not in CHEAP:
        opts.setdefault("n_samples", 2)
    return attribute(model, x, target, name, **opts)


@pytest.fixture
def model(make_tiny_cnn: type[nn.Module]) -> nn.Module:
    return make_tiny_cnn(in_channels=1, classes=4).eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(2, 1, 8, 8)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_rank(name, model, x):
    with pytest.raises(ValueError, match=r"\(B, C, H, W\).*unsqueeze\(0\)"):
        run(name, model, x[0])
    with pytest.raises(ValueError, match=r"\(B, C, H, W\), got 5-d"):
        run(name, model, x[None])


@pytest.mark.parametrize("name", NAMES)
def test_not_a_float_tensor(name, model, x):
    with pytest.raises(TypeError, match=r"floating-point.*x.float\(\)"):
        run(name, model, (x * 255).to(torch.uint8))
    with pytest.raises(TypeError, match=r"must be a torch.Tensor"):
        run(name, model, x.numpy())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("name", NAMES)
def test_nan_or_inf(name, model, x, bad):
    x = x.clone()
    x[1, 0, 3, 4] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        run(name, model, x)


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch(name, model):
    with pytest.raises(ValueError, match="empty batch"):
        run(name, model, torch.rand(0, 1, 8, 8))


@pytest.mark.parametrize("name", NAMES)
def test_target_out_of_range(name, model, x):
    with pytest.raises(ValueError, match=r"out of range.*4 outputs \(0\.\.3\)"):
        run(name, model, x, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match=r"out of range"):
        run(name, model, x, 7)
    with pytest.raises(ValueError, match=">= 0"):
        run(name, model, x, -1)


@pytest.mark.parametrize("name", NAMES)
def test_target_wrong_length_or_dtype(name, model, x):
    with pytest.raises(ValueError, match=r"shape \(2,\) to match the batch, got \(3,\)"):
        run(name, model, x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):  # (B, K) is several targets
        run(name, model, x, torch.tensor([[[0]], [[1]]]))
    with pytest.raises(TypeError, match=r"integer class indices, got torch.float32"):
        run(name, model, x, torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match="target must be"):
        run(name, model, x, "cat")
    with pytest.raises(TypeError, match="target must be"):
        run(name, model, x, True)


@pytest.mark.parametrize("name", NAMES)
def test_callable_target_returning_wrong_shape(name, model, x):
    # methods that cannot use callable targets at all (e.g. CAM's linear-head weights) say so
    with pytest.raises((ValueError, TypeError), match=r"one score per sample|class ind"):
        run(name, model, x, lambda out: out.sum())


def test_model_is_not_a_module(x):
    with pytest.raises(TypeError, match=r"torch.nn.Module"):
        attribute(lambda v: v, x)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", LAYER_METHODS)
def test_unknown_layer_name_lists_conv_layers(name, model, x):
    with pytest.raises(ValueError, match=r"no layer named 'features\.9'.*features\.0, features\.2"):
        run(name, model, x, layer="features.9")


@pytest.mark.parametrize("name", LAYER_METHODS)
def test_model_without_conv_for_a_cam(name, x):
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    with pytest.raises(ValueError, match="no Conv2d layer"):
        run(name, mlp, x)


@pytest.mark.parametrize("name", LAYER_METHODS)
def test_layer_of_another_model(name, model, x):
    with pytest.raises(ValueError, match="not a submodule"):
        run(name, model, x, layer=nn.Conv2d(1, 1, 1))


def test_unknown_option_is_a_type_error(model, x):
    with pytest.raises(TypeError):
        attribute(model, x, method="saliency", n_stepz=3)


def test_integrated_gradients_bad_options(model, x):
    with pytest.raises(ValueError, match="Unknown integration method 'simpson'"):
        attribute(model, x, method="integrated_gradients", integration="simpson")
    with pytest.raises(ValueError, match="n_steps must be >= 1"):
        attribute(model, x, method="integrated_gradients", n_steps=0)
    with pytest.raises(ValueError, match="cannot be broadcast"):
        attribute(model, x, method="integrated_gradients", baseline=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="internal_batch_size"):
        attribute(model, x, method="integrated_gradients", internal_batch_size=0)


def test_relu_rule_methods_need_relu_modules(x):
    class FunctionalReLU(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.fc = nn.Linear(2, 3)

        def forward(self, v):
            return self.fc(torch.relu(self.conv(v)).mean((2, 3)))

    for name in ("guided_backprop", "deconvnet"):
        with pytest.raises(ValueError, match=r"Use nn.ReLU modules"):
            attribute(FunctionalReLU(), x, method=name)


def test_saliency_bad_reduce(model, x):
    with pytest.raises(ValueError, match="reduce must be None or 'max'"):
        attribute(model, x, method="saliency", reduce="mean")
