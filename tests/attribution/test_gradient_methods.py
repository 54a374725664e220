"""Gradient family vs slow, transparent references written from the papers (float64)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rightfocus import attribute
from rightfocus.attribution.base import batched_vjp, target_gradients
from rightfocus.attribution.gradient import riemann_steps


def _score(model: nn.Module, x1: torch.Tensor, c: int) -> torch.Tensor:
    """S_c of one sample (C, H, W)."""
    return model(x1.unsqueeze(0))[0, c]


def ref_gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """dS_c/dx sample by sample with torch.autograd.functional.jacobian."""
    rows = []
    for xi, c in zip(x, target.tolist()):
        rows.append(torch.autograd.functional.jacobian(lambda v, c=c: _score(model, v, c), xi))
    return torch.stack(rows)


def ref_integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    baseline: torch.Tensor,
    target: torch.Tensor,
    n_steps: int,
    rule: str,
) -> torch.Tensor:
    """Sundararajan et al. 2017, Eq. 3: (x - x') * sum_k w_k grad S_c(x' + a_k (x - x'))."""
    alphas, weights = riemann_steps(n_steps, rule)
    out = torch.zeros_like(x)
    for i, c in enumerate(target.tolist()):
        acc = torch.zeros_like(x[i])
        for a, w in zip(alphas, weights):
            point = (baseline[i] + a * (x[i] - baseline[i])).detach().requires_grad_(True)
            (g,) = torch.autograd.grad(_score(model, point, c), point)
            acc += w * g
        out[i] = (x[i] - baseline[i]) * acc
    return out


@pytest.fixture
def model(make_tiny_cnn: type[nn.Module]) -> nn.Module:
    return make_tiny_cnn(in_channels=2, classes=5).double().eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(4, 2, 7, 7, dtype=torch.float64)


@pytest.fixture
def target() -> torch.Tensor:
    return torch.tensor([0, 3, 1, 4])


def test_saliency_matches_jacobian(model, x, target):
    ref = ref_gradient(model, x, target)
    torch.testing.assert_close(attribute(model, x, target, "saliency"), ref)
    torch.testing.assert_close(attribute(model, x, target, "saliency", abs=True), ref.abs())
    # Simonyan et al. 2014: the saliency map is max over channels of |grad|.
    torch.testing.assert_close(
        attribute(model, x, target, "saliency", reduce="max"),
        ref.abs().amax(dim=1, keepdim=True),
    )


def test_saliency_target_none_is_predicted_class(model, x):
    pred = model(x).argmax(1)
    torch.testing.assert_close(attribute(model, x, None, "saliency"), ref_gradient(model, x, pred))


def test_callable_target_log_softmax(model, x, target):
    def log_prob(out: torch.Tensor) -> torch.Tensor:
        return out.log_softmax(1).gather(1, target[:, None]).squeeze(1)

    ref = torch.stack(
        [
            torch.autograd.functional.jacobian(
                lambda v, c=c: model(v.unsqueeze(0)).log_softmax(1)[0, c], xi
            )
            for xi, c in zip(x, target.tolist())
        ]
    )
    torch.testing.assert_close(attribute(model, x, log_prob, "saliency"), ref)


def test_input_x_gradient_matches_reference(model, x, target):
    ref = x * ref_gradient(model, x, target)
    torch.testing.assert_close(attribute(model, x, target, "input_x_gradient"), ref)


@pytest.mark.parametrize(
    "rule",
    ["riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre"],
)
def test_integrated_gradients_matches_reference(model, x, target, rule):
    baseline = torch.rand_like(x)
    ref = ref_integrated_gradients(model, x, baseline, target, 7, rule)
    got = attribute(
        model, x, target, "integrated_gradients", baseline=baseline, n_steps=7, integration=rule
    )
    torch.testing.assert_close(got, ref)


def test_riemann_rules_are_quadratures():
    for rule in ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"):
        alphas, weights = riemann_steps(10, rule)
        assert sum(weights) == pytest.approx(1.0)
        assert all(0.0 <= a <= 1.0 for a in alphas)
        # Exact for linear integrands only when the rule is symmetric.
        if rule in ("riemann_middle", "riemann_trapezoid"):
            assert sum(w * a for a, w in zip(alphas, weights)) == pytest.approx(0.5)
    alphas, weights = riemann_steps(5, "gausslegendre")
    # Gauss-Legendre with n nodes integrates polynomials of degree 2n - 1 exactly.
    assert sum(w * a**9 for a, w in zip(alphas, weights)) == pytest.approx(0.1)


def test_integrated_gradients_baseline_forms(model, x, target):
    by_number = attribute(model, x, target, "integrated_gradients", baseline=0.5, n_steps=5)
    by_tensor = attribute(
        model, x, target, "integrated_gradients", baseline=torch.full_like(x, 0.5), n_steps=5
    )
    per_channel = attribute(
        model,
        x,
        target,
        "integrated_gradients",
        baseline=torch.full((1, 2, 1, 1), 0.5, dtype=x.dtype),
        n_steps=5,
    )
    torch.testing.assert_close(by_number, by_tensor)
    torch.testing.assert_close(per_channel, by_tensor)


@pytest.mark.parametrize("size", [1, 3, 4, 7, 100])
def test_integrated_gradients_internal_batch_size_gives_same_result(model, x, target, size):
    full = attribute(model, x, target, "integrated_gradients", n_steps=9)
    chunked = attribute(
        model, x, target, "integrated_gradients", n_steps=9, internal_batch_size=size
    )
    torch.testing.assert_close(chunked, full, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("act", [nn.Softplus, nn.Tanh])
def test_integrated_gradients_completeness_smooth_cnn(make_tiny_cnn: type[nn.Module], act, x):
    model = make_tiny_cnn(in_channels=2, classes=5, act=act).double().eval()
    baseline = torch.zeros_like(x)
    target = model(x).argmax(1)
    attr, delta = attribute(model, x, target, "integrated_gradients", n_steps=64, return_delta=True)
    with torch.no_grad():
        gap = model(x).gather(1, target[:, None]) - model(baseline).gather(1, target[:, None])
    gap = gap.squeeze(1)
    # delta is what the method reports; check it against the definition too.
    torch.testing.assert_close(delta, attr.flatten(1).sum(1) - gap)
    assert bool((delta.abs() < 1e-4 * gap.abs()).all()), (delta, gap)


def test_integrated_gradients_completeness_gap_falls_with_steps_on_relu_cnn(
    make_tiny_cnn: type[nn.Module],
):
    torch.manual_seed(3)
    model = make_tiny_cnn(in_channels=1, classes=3).double().eval()
    x = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    gaps = []
    for steps in (4, 32, 256):
        _, delta = attribute(
            model,
            x,
            0,
            "integrated_gradients",
            n_steps=steps,
            return_delta=True,
            integration="riemann_middle",
        )
        gaps.append(float(delta.abs().mean()))
    assert gaps[0] > gaps[1] > gaps[2], gaps
    assert gaps[2] < 0.05 * gaps[0], gaps


def _bias_free(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            m.bias = None
    return model


def test_x_gradient_equals_ig_zero_baseline_on_bias_free_relu_cnn(
    make_tiny_cnn: type[nn.Module], x, target
):
    """Hesse et al. 2021: on an X-DNN, input x gradient == IG with a zero baseline."""
    model = _bias_free(make_tiny_cnn(in_channels=2, classes=5)).double().eval()
    xg = attribute(model, x, target, "input_x_gradient")
    ig = attribute(model, x, target, "integrated_gradients", n_steps=128, baseline=0.0)
    torch.testing.assert_close(ig, xg, rtol=1e-4, atol=1e-4 * float(xg.abs().max()))
    # and with biases the two differ: the test can fail.
    biased = make_tiny_cnn(in_channels=2, classes=5).double().eval()
    for p in biased.parameters():
        if p.dim() == 1:
            nn.init.uniform_(p, 0.5, 1.0)
    xg_b = attribute(biased, x, target, "input_x_gradient")
    ig_b = attribute(biased, x, target, "integrated_gradients", n_steps=128)
    assert not torch.allclose(xg_b, ig_b, rtol=1e-4, atol=1e-4 * float(xg_b.abs().max()))


class SeqReLUNet(nn.Module):
    """conv -> ReLU -> conv -> ReLU -> flatten -> linear: a plain chain for manual backward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(h.flatten(1))


def manual_relu_backward(net: SeqReLUNet, x: torch.Tensor, target: torch.Tensor, rule: str):
    """Layer-by-layer backward written out by hand.

    Linear: R_in = W^T R_out; conv: transposed convolution with the same weights;
    ReLU: guided backprop (Springenberg et al. 2015) R_in = 1[z > 0] max(R_out, 0), DeconvNet
    (Zeiler & Fergus 2014) R_in = max(R_out, 0), plain gradient R_in = 1[z > 0] R_out.
    """
    with torch.no_grad():
        z1 = net.conv1(x)
        a1 = z1.clamp(min=0)
        z2 = net.conv2(a1)

        def relu_back(r, z):
            if rule == "guided":
                return (z > 0).double() * r.clamp(min=0)
            if rule == "deconvnet":
                return r.clamp(min=0)
            return (z > 0).double() * r

        r = net.fc.weight[target]  # (B, 64): dS_c / d flat
        r = r.view(z2.shape)
        r = relu_back(r, z2)
        r = F.conv_transpose2d(r, net.conv2.weight, stride=2, padding=1, output_padding=1)
        r = relu_back(r, z1)
        return F.conv_transpose2d(r, net.conv1.weight, padding=1)


@pytest.mark.parametrize(
    ("method", "rule"),
    [("saliency", "plain"), ("guided_backprop", "guided"), ("deconvnet", "deconvnet")],
)
def test_relu_rules_match_manual_backward(method, rule):
    net = SeqReLUNet().double().eval()
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    target = torch.tensor([0, 2, 4])
    ref = manual_relu_backward(net, x, target, rule)
    torch.testing.assert_close(attribute(net, x, target, method), ref)


def test_guided_backprop_and_deconvnet_differ_from_gradient():
    net = SeqReLUNet().double().eval()
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    grad = attribute(net, x, 1, "saliency")
    guided = attribute(net, x, 1, "guided_backprop")
    deconv = attribute(net, x, 1, "deconvnet")
    assert not torch.allclose(grad, guided)
    assert not torch.allclose(guided, deconv)


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient", "guided_backprop"])
def test_create_graph_result_is_differentiable_wrt_parameters(method, model, x, target):
    attr = attribute(model, x, target, method, create_graph=True)
    loss = attr.pow(2).sum()
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    assert any(g is not None and bool(g.abs().sum() > 0) for g in grads)
    # Double backward of the saliency through the graph matches a finite difference.
    if method == "saliency":
        w = model.fc.weight
        (gw,) = torch.autograd.grad(
            attribute(model, x, target, method, create_graph=True).pow(2).sum(), w
        )
        eps = 1e-6
        with torch.no_grad():
            w[1, 2] += eps
        up = attribute(model, x, target, method).pow(2).sum()
        with torch.no_grad():
            w[1, 2] -= 2 * eps
        down = attribute(model, x, target, method).pow(2).sum()
        with torch.no_grad():
            w[1, 2] += eps
        assert float(gw[1, 2]) == pytest.approx(float((up - down) / (2 * eps)), rel=1e-5)


def test_without_create_graph_no_graph_is_kept(model, x, target):
    for method in ("saliency", "input_x_gradient", "integrated_gradients", "guided_backprop"):
        attr = attribute(model, x, target, method)
        assert not attr.requires_grad
        assert all(p.requires_grad for p in model.parameters())


class _UnbatchableSquare(torch.autograd.Function):
    """x^2 whose backward writes into a fresh tensor in place: vmap cannot batch that."""

    @staticmethod
    def forward(ctx, v):
        ctx.save_for_backward(v)
        return v * v

    @staticmethod
    def backward(ctx, grad):
        (v,) = ctx.saved_tensors
        out = torch.zeros(v.shape, dtype=v.dtype)
        out.copy_(2 * v * grad)
        return out


@pytest.mark.parametrize("batchable", [True, False])
def test_batched_vjp_equals_one_backward_per_cotangent(batchable):
    """K cotangents through one retained graph: the vmap-batched backward (``chunk``), its
    fallback when an operation cannot be batched, and the default one backward per cotangent
    give the plain VJPs."""
    torch.manual_seed(0)
    lin = nn.Linear(6, 4).double()
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    square = (lambda v: v * v) if batchable else _UnbatchableSquare.apply
    out = lin(square(x))
    cot = torch.randn(3, 5, 4, dtype=torch.float64)
    expected = torch.stack([torch.autograd.grad(out, x, c, retain_graph=True)[0] for c in cot])
    torch.testing.assert_close(batched_vjp(out, x, cot, chunk=2), expected, rtol=1e-12, atol=0)
    out = lin(square(x))  # the default: one product at a time, the forward pass shared
    torch.testing.assert_close(batched_vjp(out, x, cot), expected, rtol=1e-12, atol=0)
    out = lin(square(x))  # a fresh graph (the fallback frees it after the last product)
    rows = torch.stack([torch.autograd.grad(out[:, k].sum(), x, retain_graph=True)[0]
                        for k in range(4)], dim=1)  # fmt: skip
    jac = target_gradients(out, x)  # (5, 4, 6): d out[:, k] / d x
    torch.testing.assert_close(jac, rows, rtol=1e-12, atol=0)
