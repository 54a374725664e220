"""DeepLIFT and DeepSHAP: summation-to-delta, a slow reference from the paper, Captum's numbers.

Where Captum (0.9) differs on purpose or by a bug, so the Captum comparison uses a CNN whose
ReLU and max-pool modules are never directly adjacent and whose pooled inputs always differ
from the reference's:
- two hooked nonlinearities that follow each other directly (``ReLU -> MaxPool``, as in LeNet)
  break Captum's summation-to-delta (its module backward hooks then see the wrong gradient);
  inserting any op in between makes Captum agree with ours to 1e-16;
- Captum's max-pool fallback for ``|x - x'| < eps`` uses the first sample's gradient for the
  whole batch (captum issue #1276);
- Captum's max-unpooling overwrites where overlapping windows share an argmax; ours accumulates.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rightfocus import attribute, hooks

captum_attr = pytest.importorskip("captum.attr")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class PoolCNN(nn.Module):
    """conv - ReLU - conv - maxpool - linear - ReLU - linear (no adjacent nonlinear modules)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1),
            nn.MaxPool2d(2),
        )  # fmt: skip
        self.head = nn.Sequential(nn.Linear(5 * 4 * 4, 8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class MixedCNN(nn.Module):
    """Adjacent ReLU -> max-pool (LeNet style), overlapping pooling, smooth activations."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(4, 5, 3, padding=1), nn.Sigmoid(), nn.MaxPool2d(3, stride=1),
            nn.Conv2d(5, 3, 1), nn.Tanh(), nn.BatchNorm2d(3), nn.Softplus(beta=2.0),
        )  # fmt: skip
        self.head = nn.Sequential(nn.Linear(3 * 2 * 2, 6), nn.ELU(), nn.Linear(6, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(4, 2, 8, 8, dtype=torch.float64)


TARGET = torch.tensor([0, 2, 1, 2])


def close(ours: torch.Tensor, ref: torch.Tensor, rtol: float = 1e-5) -> None:
    ref = ref.detach()
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=rtol * float(ref.abs().max()))


def score_gap(model: nn.Module, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return (model(x) - model(ref)).gather(1, TARGET[:, None])[:, 0]


@pytest.mark.parametrize("baseline_kind", ["zero", "number", "tensor"])
def test_deeplift_summation_to_delta(x, baseline_kind):
    model = MixedCNN().double().eval()
    baseline = {"zero": None, "number": 0.3, "tensor": torch.rand_like(x)}[baseline_kind]
    attr, delta = attribute(model, x, TARGET, "deeplift", baseline=baseline, return_delta=True)
    ref = (
        torch.zeros_like(x)
        if baseline is None
        else torch.broadcast_to(torch.as_tensor(baseline, dtype=x.dtype), x.shape)
    )
    gap = score_gap(model, x, ref)
    torch.testing.assert_close(delta, attr.flatten(1).sum(1) - gap, rtol=0, atol=1e-12)
    assert float((delta.abs() / gap.abs()).max()) < 1e-6


def test_deepshap_summation_to_delta(x):
    model = MixedCNN().double().eval()
    refs = torch.rand(3, 2, 8, 8, dtype=torch.float64)
    attr, delta = attribute(model, x, TARGET, "deepshap", baselines=refs, return_delta=True)
    with torch.no_grad():
        expected = model(x).gather(1, TARGET[:, None])[:, 0] - model(refs)[:, TARGET].mean(0)
    assert float((attr.flatten(1).sum(1) - expected).abs().max()) < 1e-10
    assert float(delta.abs().max()) < 1e-10


@pytest.mark.parametrize("baseline_kind", ["zero", "number", "tensor"])
def test_deeplift_vs_captum(x, baseline_kind):
    model = PoolCNN().double().eval()
    baseline = {"zero": None, "number": -0.2, "tensor": torch.randn(1, 2, 8, 8).double()}[
        baseline_kind
    ]
    ours, delta = attribute(model, x, TARGET, "deeplift", baseline=baseline, return_delta=True)
    ref, ref_delta = captum_attr.DeepLift(model).attribute(
        x, 0.0 if baseline is None else baseline, TARGET, return_convergence_delta=True
    )
    close(ours, ref)
    torch.testing.assert_close(delta, ref_delta.detach(), rtol=0, atol=1e-10)
    assert hooks.count_hooks(model) == 0


def test_deepshap_vs_captum(x):
    model = PoolCNN().double().eval()
    refs = torch.randn(5, 2, 8, 8, dtype=torch.float64)
    ours = attribute(model, x, TARGET, "deepshap", baselines=refs, internal_batch_size=9)
    ref = captum_attr.DeepLiftShap(model).attribute(x, refs, TARGET)
    close(ours, ref)


def ref_deeplift_mlp(
    w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, x: torch.Tensor, x0: torch.Tensor, c: int
) -> torch.Tensor:
    """Shrikumar et al. 2017 for ``t = w2 relu(w1 x + b1) + b2``, one sample, term by term.

    Linear rule (Sec. 3.5.1): ``C_{Δx_i Δz_j} = w1_ji Δx_i``; rescale rule (Sec. 3.5.2):
    ``m_{Δz_j Δa_j} = Δa_j / Δz_j``; chain rule for multipliers (Sec. 3.3):
    ``C_{Δx_i Δt} = sum_j C_{Δx_i Δz_j} m_{Δz_j Δa_j} w2_cj``.
    """
    z, z0 = w1 @ x + b1, w1 @ x0 + b1
    out = []
    for i in range(x.shape[0]):
        total = x.new_zeros(())
        for j in range(z.shape[0]):
            dz = z[j] - z0[j]
            slope = (
                (z[j].clamp(min=0) - z0[j].clamp(min=0)) / dz
                if dz.abs() > 1e-10
                else ((z[j] > 0).to(x.dtype))
            )
            total = total + w1[j, i] * (x[i] - x0[i]) * slope * w2[c, j]
        out.append(total)
    return torch.stack(out)


def test_deeplift_vs_paper_reference_mlp():
    torch.manual_seed(1)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    x = torch.randn(3, 1, 2, 3, dtype=torch.float64)
    x0 = torch.randn(1, 1, 2, 3, dtype=torch.float64)
    target = torch.tensor([2, 0, 1])
    attr = attribute(mlp, x, target, "deeplift", baseline=x0, create_graph=True)
    w1, b1, w2 = mlp[1].weight, mlp[1].bias, mlp[3].weight
    ref = torch.stack([
        ref_deeplift_mlp(w1, b1, w2, x[n].flatten(), x0.flatten(), int(target[n]))
        for n in range(3)
    ]).view_as(x)  # fmt: skip
    torch.testing.assert_close(attr, ref, rtol=1e-10, atol=1e-12)
    # create_graph: parameter gradients equal those through the reference's formula
    params = [w1, b1, w2]
    ours = torch.autograd.grad(attr.pow(2).sum(), params)
    expected = torch.autograd.grad(ref.pow(2).sum(), params)
    for g, e in zip(ours, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


def test_deepshap_is_mean_of_deeplift(x):
    model = MixedCNN().double().eval()
    refs = torch.rand(3, 2, 8, 8, dtype=torch.float64)
    ours = attribute(model, x, TARGET, "deepshap", baselines=refs, internal_batch_size=5)
    loop = torch.stack(
        [attribute(model, x, TARGET, "deeplift", baseline=r.unsqueeze(0)) for r in refs]
    ).mean(0)
    torch.testing.assert_close(ours, loop, rtol=1e-10, atol=1e-12)


def test_bad_options(x):
    model = PoolCNN().double().eval()
    with pytest.raises(ValueError, match="baselines="):
        attribute(model, x, TARGET, "deepshap")
    with pytest.raises(ValueError, match="each reference must have shape"):
        attribute(model, x, TARGET, "deepshap", baselines=torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="cannot be broadcast"):
        attribute(model, x, TARGET, "deeplift", baseline=torch.rand(3, 5, 5))
    with pytest.raises(ValueError, match="eps"):
        attribute(model, x, TARGET, "deeplift", eps=0.0)
    pool = nn.Sequential(nn.MaxPool2d(2, return_indices=True))
    with pytest.raises(ValueError, match="return_indices"):
        attribute(pool, x, TARGET, "deeplift")
    assert hooks.count_hooks(pool) == 0


def test_create_graph_matches_finite_differences():
    """``create_graph=True``: d attribution / d parameters, checked by central differences."""
    from torch.func import functional_call

    net = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.MaxPool2d(2), nn.Sigmoid(), nn.Conv2d(3, 2, 3),
        nn.ReLU(), nn.MaxPool2d(2, stride=1), nn.Flatten(), nn.Linear(2, 2),
    ).double()  # fmt: skip
    x, x0 = torch.randn(2, 1, 8, 8).double(), torch.randn(2, 1, 8, 8).double()
    names = [n for n, _ in net.named_parameters()]

    class Functional(nn.Module):
        def __init__(self, params: tuple[torch.Tensor, ...]) -> None:
            super().__init__()
            self.net, self.params = net, dict(zip(names, params))

        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            return functional_call(self.net, self.params, (inp,))

    weights = torch.randn(2, 1, 8, 8).double()

    def attr(*params: torch.Tensor) -> torch.Tensor:
        model = Functional(params)
        a = attribute(model, x, torch.tensor([0, 1]), "deeplift", baseline=x0, create_graph=True)
        return (a * weights).sum()  # a scalar keeps gradcheck to one backward pass

    params = tuple(p.detach().clone().requires_grad_(True) for p in net.parameters())
    assert torch.autograd.gradcheck(attr, params, eps=1e-6, atol=1e-5, fast_mode=True)


def test_data_dependent_forward_is_refused(x):
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.relu, self.fc = nn.ReLU(), nn.Linear(128, 3)

        def forward(self, v: torch.Tensor) -> torch.Tensor:
            if bool(v.abs().sum() > 0):  # the zero reference skips the ReLU
                v = self.relu(v)
            return self.fc(v.flatten(1))

    model = Branchy().double()
    with pytest.raises(RuntimeError, match="called differently for the input and for the"):
        attribute(model, x, TARGET, "deeplift")
    assert hooks.count_hooks(model) == 0


@pytest.mark.parametrize("net", [PoolCNN, MixedCNN])
@pytest.mark.parametrize("method", ["deeplift", "deepshap"])
def test_several_targets_share_the_passes_through_the_pooling_rule(net, method, x, monkeypatch):
    """(B, K) targets: one pair of passes, the K multipliers batched through the max-pool and
    rescale backward rules, equal to K separate calls (with their summation-to-delta gaps)."""
    # a budget far above these tiny passes: no activation measurement (an extra forward pass
    # whose occurrence depends on the machine's free memory)
    monkeypatch.setenv("RIGHTFOCUS_MEMORY_BUDGET", "1024GB")
    torch.manual_seed(0)
    model = net().double().eval()
    opts = (
        {"baselines": torch.randn(3, 2, 8, 8, dtype=torch.float64)} if method == "deepshap" else {}
    )
    targets = torch.tensor([[0, 2], [2, 1], [1, 1], [2, 0]])
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        attr, delta = attribute(model, x, targets, method, return_delta=True, **opts)
        n_multi = len(calls)
        calls.clear()
        attribute(model, x, targets[:, 0], method, **opts)
        n_single = len(calls)
    finally:
        handle.remove()
    assert n_multi == n_single  # the targets share every forward pass
    for k in range(2):
        single, single_delta = attribute(model, x, targets[:, k], method, return_delta=True, **opts)
        close(attr[:, k], single, rtol=1e-12)
        close(delta[:, k], single_delta, rtol=1e-12)
