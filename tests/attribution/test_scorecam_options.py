"""The perturbation methods' speed options keep their result: channels-last passes (Score-CAM,
Kernel SHAP, LIME; and the fallback for models that refuse that layout) and Score-CAM's bfloat16
precision option (error bounded)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from rightfocus import attribute
from rightfocus.attribution import _passes
from rightfocus.attribution.cam import ScoreCAM, bilinear_matrix


class ViewCNN(nn.Module):
    """Flattens its feature map with ``.view`` (fails on a channels-last tensor)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(h.view(h.shape[0], -1))


class FlattenCNN(ViewCNN):
    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(h.flatten(1))


OPTIONS = {
    "scorecam": {"layer": "conv2"},
    "kernel_shap": {"num_samples": 40, "segments": "grid", "n_segments": 4, "seed": 0},
    "lime": {"num_samples": 40, "segments": "grid", "n_segments": 4, "seed": 0},
}


@pytest.mark.parametrize("method", sorted(OPTIONS))
@pytest.mark.parametrize("cls", [ViewCNN, FlattenCNN])
def test_channels_last_passes_and_view_fallback_give_the_same_maps(cls, method, monkeypatch):
    torch.manual_seed(0)
    model = cls().eval()
    x, t = torch.rand(3, 3, 8, 8), torch.tensor([0, 3, 4])
    seen: list[bool] = []
    hook = model.conv1.register_forward_pre_hook(
        lambda _m, inp: seen.append(inp[0].is_contiguous(memory_format=torch.channels_last))
    )
    try:
        fast = attribute(model, x, t, method, **OPTIONS[method])
    finally:
        hook.remove()
    if cls is FlattenCNN:
        assert any(seen)  # the perturbed passes did run channels-last
    else:
        assert seen[-1] is False  # refused once, then the usual layout
    monkeypatch.setattr(_passes.PassLayout, "__init__", _default_layout)
    reference = attribute(model, x, t, method, **OPTIONS[method])
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-6)


def _default_layout(self: _passes.PassLayout, x: Tensor) -> None:
    self.channels_last = False
    self._folded = {}


def test_bfloat16_precision_is_close_to_float32():
    torch.manual_seed(0)
    model = FlattenCNN().eval()
    x, t = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    exact = attribute(model, x, t, "scorecam", layer="conv2", normalize=True)
    bf16 = attribute(model, x, t, "scorecam", layer="conv2", normalize=True, precision="bfloat16")
    assert bf16.dtype == torch.float32
    err = (bf16 - exact).abs().max()
    assert 0 < err < 0.05  # bfloat16 has ~3 significant digits: different, but close


def test_bad_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be"):
        ScoreCAM(precision="float16")


class BNCNN(nn.Module):
    """Conv -> BatchNorm (folded in the passes); ``branch=True`` adds control flow on values
    (not traceable: the passes then run the model itself)."""

    def __init__(self, branch: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 4, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 5)
        self.branch = branch
        for bn in (self.bn1, self.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.2, 0.2)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        if self.branch and bool(h.mean() > 1e9):
            h = -h
        return self.fc(torch.relu(self.bn2(self.conv2(h))).mean(dim=(2, 3)))


@pytest.mark.parametrize("branch", [False, True])
@pytest.mark.parametrize("method", sorted(OPTIONS))
def test_batchnorm_folded_passes_give_the_same_maps_and_leave_the_model(
    branch, method, monkeypatch
):
    torch.manual_seed(0)
    model = BNCNN(branch).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, t = torch.rand(2, 3, 8, 8), torch.tensor([1, 4])
    folded = _passes.folded_copy(model, x[:1])
    assert (folded is model) == branch  # traced and folded unless the trace fails
    if not branch:
        assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    fast = attribute(model, x, t, method, **OPTIONS[method])
    monkeypatch.setattr(_passes, "folded_copy", lambda m, probe: m)
    monkeypatch.setattr(_passes.PassLayout, "__init__", _default_layout)
    reference = attribute(model, x, t, method, **OPTIONS[method])
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-5)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert isinstance(model.bn1, nn.BatchNorm2d)


def test_training_models_are_not_folded():
    model = BNCNN().train()
    assert _passes.folded_copy(model, torch.rand(1, 3, 8, 8)) is model


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize(
    "shape", [(10, 10, 28, 28), (7, 9, 224, 100), (3, 5, 3, 12), (14, 14, 7, 5)]
)
def test_bilinear_matrices_reproduce_interpolate(
    align_corners: bool, shape: tuple[int, int, int, int]
) -> None:
    """Score-CAM upsamples its masks as ``M_h A M_w^T``: the same values as ``F.interpolate``
    (up and down, non-square, both corner conventions)."""
    h, w, H, W = shape
    maps = torch.randn(4, 1, h, w, generator=torch.Generator().manual_seed(0))
    ref = torch.nn.functional.interpolate(
        maps, size=(H, W), mode="bilinear", align_corners=align_corners
    )
    rows = bilinear_matrix(h, H, align_corners, maps)
    cols = bilinear_matrix(w, W, align_corners, maps)
    torch.testing.assert_close(rows @ maps @ cols.T, ref, rtol=0, atol=2e-6)
