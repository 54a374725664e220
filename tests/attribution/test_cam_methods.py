"""CAM family vs slow, transparent references written from the papers (float64).

The references run one sample at a time, capture the layer with a plain forward hook and
``retain_grad``, and write each paper's weighting as explicit loops over channels/positions.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rightfocus import attribute, hooks
from rightfocus.attribution.cam import ScoreCAM
from rightfocus.models import LeNet

TOL = {"rtol": 1e-10, "atol": 1e-12}
DIFFERENTIABLE = ["cam", "gradcam", "gradcam_plus_plus", "layercam", "xgradcam", "guided_gradcam"]


class StridedCNN(nn.Module):
    """Layer maps at half the input resolution (exercises upsampling); GAP + linear head."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.relu1 = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.relu2 = nn.ReLU(inplace=inplace)
        self.fc = nn.Linear(5, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.relu2(self.conv2(self.relu1(self.conv1(x)))).mean(dim=(2, 3)))


@pytest.fixture
def model() -> nn.Module:
    return StridedCNN().double().eval()


@pytest.fixture
def x() -> Tensor:
    return torch.randn(3, 2, 10, 10, dtype=torch.float64)


@pytest.fixture
def target() -> Tensor:
    return torch.tensor([2, 0, 1])


def ref_layer(model: nn.Module, xi: Tensor, layer: nn.Module, c: int) -> tuple[Tensor, Tensor]:
    """Activation ``A`` (K, h, w) and ``dS_c/dA`` for one sample, via a plain forward hook."""
    store: dict[str, Tensor] = {}

    def hook(_m: nn.Module, _i: object, out: Tensor) -> None:
        out.retain_grad()
        store["A"] = out

    handle = layer.register_forward_hook(hook)
    try:
        out = model(xi[None].clone().requires_grad_(True))
    finally:
        handle.remove()
    out[0, c].backward()
    return store["A"][0].detach(), store["A"].grad[0]


def ref_gradcam_weights(A: Tensor, g: Tensor) -> Tensor:
    return torch.stack([g[k].sum() / g[k].numel() for k in range(A.shape[0])])[:, None, None]


def ref_gradcam_pp_weights(A: Tensor, g: Tensor) -> Tensor:
    w = torch.zeros(A.shape[0], dtype=A.dtype)
    for k in range(A.shape[0]):
        s = A[k].sum()
        for i in range(A.shape[1]):
            for j in range(A.shape[2]):
                gij = g[k, i, j]
                den = 2 * gij**2 + s * gij**3
                alpha = gij**2 / den if den != 0 else 0.0
                w[k] += alpha * max(float(gij), 0.0)
    return w[:, None, None]


def ref_layercam_weights(A: Tensor, g: Tensor) -> Tensor:
    w = torch.zeros_like(g)
    for k in range(A.shape[0]):
        for i in range(A.shape[1]):
            for j in range(A.shape[2]):
                w[k, i, j] = max(float(g[k, i, j]), 0.0)
    return w


def ref_xgradcam_weights(A: Tensor, g: Tensor) -> Tensor:
    return torch.stack([(A[k] / A[k].sum() * g[k]).sum() for k in range(A.shape[0])])[:, None, None]


REFS = {
    "gradcam": ref_gradcam_weights,
    "gradcam_plus_plus": ref_gradcam_pp_weights,
    "layercam": ref_layercam_weights,
    "xgradcam": ref_xgradcam_weights,
}


def ref_cam_map(model: nn.Module, x: Tensor, target: Tensor, layer: nn.Module, name: str) -> Tensor:
    maps = []
    for i in range(x.shape[0]):
        A, g = ref_layer(model, x[i], layer, int(target[i]))
        maps.append((REFS[name](A, g) * A).sum(dim=0, keepdim=True))
    return torch.stack(maps)


@pytest.mark.parametrize("name", sorted(REFS))
def test_gradient_cams_match_paper_reference(model, x, target, name):
    raw = attribute(model, x, target, name, layer="conv2", relu=False, upsample=False)
    expected = ref_cam_map(model, x, target, model.conv2, name)
    torch.testing.assert_close(raw, expected, **TOL)
    out = attribute(model, x, target, name, layer=model.conv2)
    up = F.interpolate(F.relu(expected), size=(10, 10), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, up, **TOL)
    assert out.shape == (3, 1, 10, 10) and out.dtype == torch.float64


def test_gradcam_default_layer_and_predicted_class(model, x):
    predicted = model(x).argmax(1)
    torch.testing.assert_close(
        attribute(model, x, None, "gradcam"),
        attribute(model, x, predicted, "gradcam", layer="conv2"),
    )


def test_normalize_scales_each_map_to_unit_range(model, x, target):
    out = attribute(model, x, target, "gradcam", normalize=True).flatten(1)
    assert torch.all(out.min(1).values.abs() < 1e-12)
    assert torch.all((out.max(1).values - 1).abs() < 1e-4)  # eps 1e-8 in the range


def test_cam_uses_linear_row_of_class(model, x, target):
    """Zhou et al.: M_c = sum_k w_k^c f_k with f = ReLU(conv2) here; mean(M_c) = S_c - b_c."""
    raw = attribute(model, x, target, "cam", relu=False, upsample=False)
    for i in range(x.shape[0]):
        A, _ = ref_layer(model, x[i], model.conv2, int(target[i]))
        f = F.relu(A)
        expected = sum(model.fc.weight[int(target[i]), k] * f[k] for k in range(f.shape[0]))
        torch.testing.assert_close(raw[i, 0], expected.detach(), **TOL)
    scores = model(x).gather(1, target[:, None]).squeeze(1) - model.fc.bias[target]
    torch.testing.assert_close(raw.mean(dim=(1, 2, 3)), scores.detach(), **TOL)
    # on the pooled layer itself (the ReLU module) the maps are used as they are
    on_relu = attribute(model, x, target, "cam", layer="relu2", relu=False, upsample=False)
    torch.testing.assert_close(on_relu, raw, **TOL)


def test_cam_equals_gradcam_times_positive_constant_on_gap_head(make_tiny_cnn: type[nn.Module]):
    """On a GAP + linear head directly on the layer, Grad-CAM weights are w_k^c / (h w)."""
    model = make_tiny_cnn().double().eval()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    t = torch.tensor([1, 3])
    cam = attribute(model, x, t, "cam", layer="features.3", relu=False)
    grad = attribute(model, x, t, "gradcam", layer="features.3", relu=False)
    torch.testing.assert_close(grad * 64, cam, **TOL)


def ref_scorecam(model, x, target, layer, weighting="probability", align_corners=False):
    maps = []
    for i in range(x.shape[0]):
        c = int(target[i])
        A, _ = ref_layer(model, x[i], layer, c)
        scores = []
        with torch.no_grad():
            for k in range(A.shape[0]):
                up = F.interpolate(
                    A[k][None, None],
                    size=x.shape[-2:],
                    mode="bilinear",
                    align_corners=align_corners,
                )[0, 0]
                h = (up - up.min()) / (up.max() - up.min() + 1e-8)
                out = model((x[i] * h)[None])[0]
                scores.append(out[c] if weighting == "channel_softmax" else out.softmax(0)[c])
            scores_t = torch.stack(scores)
            if weighting == "channel_softmax":
                scores_t = scores_t.softmax(0)
            if weighting == "probability_increase":
                scores_t = scores_t - model(torch.zeros_like(x[i : i + 1]))[0].softmax(0)[c]
        maps.append(sum(scores_t[k] * A[k] for k in range(A.shape[0]))[None])
    return torch.stack(maps)


@pytest.mark.parametrize("weighting", ["probability", "probability_increase", "channel_softmax"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_scorecam_matches_paper_reference(model, x, target, weighting, align_corners):
    raw = attribute(
        model, x, target, "scorecam", relu=False, upsample=False, weighting=weighting,
        align_corners=align_corners,
    )  # fmt: skip
    expected = ref_scorecam(model, x, target, model.conv2, weighting, align_corners)
    torch.testing.assert_close(raw, expected, **TOL)


def test_scorecam_chunking_batch_independence_and_determinism(model, target):
    x = torch.randn(8, 2, 10, 10, dtype=torch.float64)
    t = torch.tensor([2, 0, 1, 1, 0, 2, 2, 1])
    full = attribute(model, x, t, "scorecam")
    for size in (1, 3, 64):
        chunked = attribute(model, x, t, "scorecam", internal_batch_size=size)
        torch.testing.assert_close(chunked, full)
    torch.testing.assert_close(attribute(model, x, t, "scorecam"), full, rtol=0, atol=0)
    for i in (0, 5):
        alone = attribute(model, x[i : i + 1], t[i : i + 1], "scorecam")
        torch.testing.assert_close(alone, full[i : i + 1], **TOL)
    assert ScoreCAM.differentiable is False and not full.requires_grad


def test_scorecam_constant_maps_share_the_zero_image_forward(x, target):
    """Dead channels (all-zero maps) get mask 0: one zero-image forward replaces theirs."""
    model = StridedCNN().double().eval()
    with torch.no_grad():
        model.conv2.bias[:2] = -1e3  # channels 0 and 1 of relu2 are 0 everywhere
    seen: list[int] = []
    handle = model.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0].shape[0]))
    try:
        raw = attribute(model, x, target, "scorecam", layer="relu2", relu=False, upsample=False)
    finally:
        handle.remove()
    expected = ref_scorecam(model, x, target, model.relu2)
    torch.testing.assert_close(raw, expected, **TOL)
    assert sum(seen) == 3 + 1 + 3 * 3  # clean batch, zero image, 3 live channels per sample


def ref_guided_backprop(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """Guided backprop from the paper: clamp the gradient leaving every ReLU at 0."""

    def clamp(_m: nn.Module, grad_in: tuple[Tensor, ...], _g: object) -> tuple[Tensor]:
        return (grad_in[0].clamp(min=0),)

    handles = [
        m.register_full_backward_hook(clamp) for m in model.modules() if isinstance(m, nn.ReLU)
    ]
    try:
        rows = []
        for i in range(x.shape[0]):
            xi = x[i : i + 1].clone().requires_grad_(True)
            (g,) = torch.autograd.grad(model(xi)[0, int(target[i])], xi)
            rows.append(g[0])
    finally:
        for h in handles:
            h.remove()
    return torch.stack(rows)


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_guided_gradcam_matches_reference(model, x, target, interpolation):
    out = attribute(model, x, target, "guided_gradcam", interpolation=interpolation)
    cam = F.relu(ref_cam_map(model, x, target, model.conv2, "gradcam"))
    kw = {"align_corners": False} if interpolation == "bilinear" else {}
    up = F.interpolate(cam, size=(10, 10), mode=interpolation, **kw)
    torch.testing.assert_close(out, ref_guided_backprop(model, x, target) * up, **TOL)
    assert out.shape == x.shape


@pytest.mark.parametrize("name", [*sorted(REFS), "cam", "scorecam", "guided_gradcam"])
def test_inplace_relu_after_layer_does_not_change_the_map(x, target, name):
    plain = StridedCNN().double().eval()
    inplace = StridedCNN(inplace=True).double().eval()
    inplace.load_state_dict(plain.state_dict())
    opts = {"relu": False} if name != "guided_gradcam" else {}
    torch.testing.assert_close(
        attribute(inplace, x, target, name, **opts), attribute(plain, x, target, name, **opts)
    )


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_create_graph_gives_parameter_gradients(model, x, target, name):
    plain = attribute(model, x, target, name)
    assert not plain.requires_grad
    out = attribute(model, x, target, name, create_graph=True)
    torch.testing.assert_close(out.detach(), plain, **TOL)
    params = [p for p in model.parameters()]
    grads = torch.autograd.grad(out.pow(2).sum(), params, allow_unused=True)
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grads)
    assert all(p.requires_grad for p in params) and hooks.count_hooks(model) == 0


@pytest.mark.parametrize("name", [*sorted(REFS), "cam", "scorecam", "guided_gradcam"])
def test_no_hooks_left_and_mode_restored(model, x, name):
    model.train()
    attribute(model, x, None, name)
    with pytest.raises(ValueError, match="out of range"):
        attribute(model, x, torch.tensor([0, 1, 9]), name)
    assert hooks.count_hooks(model) == 0 and model.training


def test_unknown_layer_name_lists_conv_layers(model, x):
    with pytest.raises(ValueError, match=r"no layer named 'conv3'.*conv1, conv2"):
        attribute(model, x, None, "gradcam", layer="conv3")


@pytest.mark.parametrize("name", [*sorted(REFS), "cam", "scorecam", "guided_gradcam"])
def test_model_without_conv_layer(name):
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(16, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(ValueError, match="no Conv2d layer"):
        attribute(mlp, torch.rand(2, 1, 4, 4), None, name)


@pytest.mark.parametrize("name", [*sorted(REFS), "cam", "scorecam"])
def test_layer_with_non_4d_output(model, x, name):
    with pytest.raises(ValueError, match=r"\(B, K, h, w\) output"):
        attribute(model, x, None, name, layer="fc")


def test_cam_needs_gap_linear_head(x):
    with pytest.raises(ValueError, match="global-average-pool \\+ Linear head"):
        attribute(
            LeNet().double().eval(), torch.rand(2, 1, 28, 28, dtype=torch.float64), None, "cam"
        )
    with pytest.raises(ValueError, match="global-average-pool"):  # a layer before the last conv
        attribute(StridedCNN().double().eval(), x, None, "cam", layer="conv1")
    with pytest.raises(TypeError, match="class indices"):
        attribute(StridedCNN().double(), x, lambda out: out[:, 0], "cam")


def test_bad_options():
    with pytest.raises(ValueError, match="weighting must be one of"):
        ScoreCAM(weighting="softmax")
    with pytest.raises(ValueError, match="internal_batch_size"):
        ScoreCAM(internal_batch_size=0)
    with pytest.raises(ValueError, match="create_graph"):
        ScoreCAM(create_graph=True)
    with pytest.raises(ValueError, match="interpolation"):
        attribute(StridedCNN(), torch.rand(1, 2, 8, 8), None, "gradcam", interpolation="area")
    with pytest.raises(ValueError, match="upsample must be True"):
        attribute(StridedCNN(), torch.rand(1, 2, 8, 8), None, "guided_gradcam", upsample=False)


@pytest.mark.parametrize("name", [*sorted(REFS), "cam", "scorecam", "guided_gradcam"])
def test_works_inside_no_grad(model, x, target, name):
    expected = attribute(model, x, target, name)
    with torch.no_grad():
        torch.testing.assert_close(attribute(model, x, target, name), expected)
