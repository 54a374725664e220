"""The fast no-gradient max pool (``rightfocus._pooling``) equals ``nn.MaxPool2d`` exactly."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rightfocus import attribute
from rightfocus._pooling import MaxPool2d, strided_max_pool2d
from rightfocus.models import LeNet

CASES = [  # (kernel, stride, input shape)
    (2, None, (3, 4, 26, 26)),
    (2, None, (3, 4, 11, 11)),  # odd side: the last row/column is dropped (floor mode)
    (3, 2, (2, 3, 13, 9)),
    ((2, 3), (1, 2), (2, 3, 7, 10)),
    (3, 1, (5, 6, 6)),  # unbatched (C, H, W)
    (1, 1, (2, 2, 4, 4)),
]


@pytest.mark.parametrize(("kernel", "stride", "shape"), CASES)
def test_no_grad_path_equals_nn_maxpool(kernel, stride, shape):
    x = torch.randn(*shape)
    x[..., 0, :2] = 0.0  # ties
    ours, ref = MaxPool2d(kernel, stride), nn.MaxPool2d(kernel, stride)
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))
    assert torch.equal(ours(x), ref(x))  # no grad required by the input: fast path too


def test_fast_path_skips_the_indexed_kernel_only_without_gradients(monkeypatch):
    calls: list[bool] = []
    original = F.max_pool2d

    def counting(*args, **kwargs):
        calls.append(True)
        return original(*args, **kwargs)

    monkeypatch.setattr(F, "max_pool2d", counting)
    pool = MaxPool2d(2)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        pool(x)
    assert not calls
    pool(x.requires_grad_())
    assert calls  # with a gradient: nn.MaxPool2d's own forward


def test_nan_propagates_like_nn_maxpool():
    x = torch.randn(1, 1, 4, 4)
    x[0, 0, 1, 1] = float("nan")
    with torch.no_grad():
        torch.testing.assert_close(MaxPool2d(2)(x), nn.MaxPool2d(2)(x), equal_nan=True)


def test_gradients_and_double_backward_are_nn_maxpools():
    x = torch.relu(torch.randn(2, 3, 10, 10, dtype=torch.float64)).requires_grad_()
    g = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    grads = []
    for pool in (MaxPool2d(2), nn.MaxPool2d(2)):
        (gx,) = torch.autograd.grad((pool(x) ** 2 * g).sum(), x, create_graph=True)
        (gxx,) = torch.autograd.grad(gx.square().sum(), x)
        grads.append((gx, gxx))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


@pytest.mark.parametrize(
    "layer",
    [
        MaxPool2d(2, padding=1),
        MaxPool2d(2, dilation=2),
        MaxPool2d(3, ceil_mode=True),
    ],
)
def test_other_geometries_use_nn_maxpool(layer):
    x = torch.randn(2, 2, 9, 9)
    ref = nn.MaxPool2d(
        layer.kernel_size, layer.stride, layer.padding, layer.dilation, ceil_mode=layer.ceil_mode
    )
    with torch.no_grad():
        assert torch.equal(layer(x), ref(x))


def test_too_small_input_is_a_clear_error():
    with pytest.raises(ValueError, match="at least that size"):
        strided_max_pool2d(torch.zeros(1, 1, 1, 4), 2, 2)


def _with_torch_pools(model: nn.Module) -> nn.Module:
    plain = copy.deepcopy(model)
    for name in ("pool1", "pool2"):
        setattr(plain.features, name, nn.MaxPool2d(2))
    return plain


def test_lenet_pools_are_maxpool2d_and_attributions_unchanged():
    torch.manual_seed(0)
    model = LeNet().double().eval()
    assert isinstance(model.features.pool1, nn.MaxPool2d)
    assert type(model.features.pool1) is MaxPool2d
    plain = _with_torch_pools(model)
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    target = torch.tensor([1, 4, 7])
    with torch.no_grad():
        assert torch.equal(model(x), plain(x))
    for method in ("saliency", "deeplift", "lrp", "guided_backprop"):
        ours = attribute(model, x, target, method)
        ref = attribute(plain, x, target, method)
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12, msg=method)
