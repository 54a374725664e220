"""Network dissection (Bau et al. 2017): thresholds, IoU, ranking, and input checks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from rightfocus.analysis import dissect, unit_quantiles
from rightfocus.data.base import MaskedTensorDataset
from rightfocus.hooks import count_hooks


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _net() -> nn.Module:
    """Conv -> ReLU -> strided conv (4 units, 8x8 -> 4x4) -> pooled linear head."""
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(3, 4, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    ).double()


def _reference(model: nn.Module, layer: nn.Module, x: torch.Tensor, masks: torch.Tensor, q: float):
    """Slow, per image / unit / concept, from the paper's definitions."""
    acts: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda m, a, o: acts.append(o[0]))
    with torch.no_grad():
        for i in range(x.shape[0]):
            model(x[i : i + 1])
    handle.remove()
    units, concepts = acts[0].shape[0], masks.shape[1]
    thresholds = torch.stack(
        [torch.quantile(torch.cat([a[u].flatten() for a in acts]), q) for u in range(units)]
    )
    inter = torch.zeros(units, concepts, dtype=torch.float64)
    union = torch.zeros(units, concepts, dtype=torch.float64)
    for i, a in enumerate(acts):
        for u in range(units):
            up = F.interpolate(a[u][None, None], size=masks.shape[-2:], mode="bilinear")[0, 0]
            unit_mask = up >= thresholds[u]
            for c in range(concepts):
                concept = masks[i, c].bool()
                inter[u, c] += (unit_mask & concept).sum()
                union[u, c] += (unit_mask | concept).sum()
    return thresholds, inter / union


def test_batched_equals_the_per_image_reference() -> None:
    model = _net()
    x = torch.rand(7, 1, 8, 8, dtype=torch.float64)
    masks = (torch.rand(7, 2, 8, 8) < 0.3).double()
    thresholds, iou = _reference(model, model[2], x, masks, 0.9)
    out = dissect(model, "2", x, masks, concepts=["a", "b"], quantile=0.9, batch_size=3)
    torch.testing.assert_close(out.thresholds, thresholds)
    torch.testing.assert_close(out.iou, iou, rtol=0, atol=1e-15)
    assert out.concepts == ("a", "b")
    assert list(out.table.columns) == ["unit", "concept", "iou", "threshold"]
    assert len(out.table) == 8
    assert out.table["iou"].is_monotonic_decreasing
    best = out.table.iloc[0]
    assert best["iou"] == pytest.approx(float(iou.max()))
    assert best["threshold"] == pytest.approx(float(thresholds[int(best["unit"])]))
    # A sample at least as large as the data is the data: the same thresholds and IoU.
    sampled = dissect(model, model[2], x, masks, quantile=0.9, batch_size=2, sample_size=10**4)
    torch.testing.assert_close(sampled.iou, out.iou, rtol=0, atol=0)


def test_loader_of_dataset_batches_equals_tensors() -> None:
    model = _net()
    x = torch.rand(9, 1, 8, 8, dtype=torch.float64)
    masks = (torch.rand(9, 1, 8, 8) < 0.4).float()
    ds = MaskedTensorDataset(x, torch.zeros(9, dtype=torch.int64), masks)
    ds.images = ds.images.double()  # the model is float64
    loader = DataLoader(ds, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
    from_tensors = dissect(model, "2", x, masks)
    from_loader = dissect(model, "2", loader)
    twice = dissect(model, "2", loader, sample_size=10**4)
    torch.testing.assert_close(from_loader.iou, from_tensors.iou, rtol=0, atol=1e-15)
    torch.testing.assert_close(twice.iou, from_tensors.iou, rtol=0, atol=1e-15)
    assert from_loader.concepts == ("concept_0",)


def _squares(n: int, size: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise in [0, 0.5) with one bright 2x2 square per image: exactly 1 % of the pixels."""
    g = torch.Generator().manual_seed(5)
    x = torch.rand(n, 1, size, size, generator=g, dtype=torch.float64) * 0.5
    square = torch.zeros(n, 1, size, size, dtype=torch.float64)
    for i, (r, c) in enumerate(torch.randint(0, size - 1, (n, 2), generator=g).tolist()):
        square[i, 0, r : r + 2, c : c + 2] = 1
    x = torch.where(square.bool(), torch.ones_like(x), x)
    rows = torch.arange(size)[:, None].expand(size, size)
    top = (rows < 2).to(torch.float64).expand(n, 1, size, size)
    return x, torch.cat([top, square], 1)


def test_a_unit_copying_the_square_ranks_first_with_iou_one() -> None:
    conv = nn.Conv2d(1, 4, 3, padding=1, bias=False).double()
    with torch.no_grad():
        conv.weight.normal_(generator=torch.Generator().manual_seed(0))
        conv.weight[2] = 0
        conv.weight[2, 0, 1, 1] = 1  # unit 2 copies its input: bright square = top 1 %
        conv.weight[1] = 1 / 9  # unit 1 blurs it: a larger, less precise region
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.LazyLinear(3)).double()
    x, masks = _squares(30)
    model(x[:1])  # materialise the lazy layer
    out = dissect(model, conv, x, masks, concepts=["top rows", "square"], quantile=0.99)
    best = out.table.iloc[0]
    assert (best["unit"], best["concept"]) == (2, "square")
    assert best["iou"] == 1.0
    assert 0.5 < float(best["threshold"]) < 1.0
    assert float(out.iou[1, 1]) > float(out.iou[0, 1])
    assert float(out.iou[:, 1].sort().values[-2]) < 0.9, "only the copying unit is exact"


def test_quantile_threshold_on_known_distributions() -> None:
    identity = nn.Sequential(nn.Identity())
    # 1,000 values 0..999 in one unit: q = 0.99 sits at 0.99 * 999 = 989.01.
    values = torch.arange(1000, dtype=torch.float64).view(10, 1, 10, 10)
    masks = torch.zeros(10, 1, 10, 10)
    out = dissect(identity, "0", values[torch.randperm(10)], masks, batch_size=4)
    assert float(out.thresholds[0]) == pytest.approx(989.01, abs=1e-9)
    # 0..1000 at q = 0.5: T = 500 exactly, and M = {a >= T} keeps 500 itself (501 values).
    values = torch.arange(1001, dtype=torch.float64).view(7, 1, 11, 13)
    out = dissect(identity, "0", values, (values >= 500).double(), quantile=0.5)
    assert float(out.thresholds[0]) == 500.0 and float(out.iou[0, 0]) == 1.0
    # Exact kthvalue interpolation agrees with numpy's default (linear) quantile.
    normal = torch.randn(6, 3, 5, 7, dtype=torch.float64)
    expected = np.quantile(normal.transpose(0, 1).reshape(3, -1).numpy(), 0.97, axis=1)
    np.testing.assert_allclose(unit_quantiles([normal[:4], normal[4:]], 0.97).numpy(), expected)
    # The documented large-data route: a uniform sample of m values per unit, rank error
    # within the DKW bound sqrt(ln(2/δ)/(2m)) (δ = 1e-6).
    big = torch.randn(40, 2, 25, 25, dtype=torch.float64)
    sampled = dissect(identity, "0", big, torch.zeros(40, 1, 25, 25), sample_size=5000, seed=1)
    ranks = (big.transpose(0, 1).reshape(2, -1) < sampled.thresholds[:, None]).double().mean(1)
    bound = float(np.sqrt(np.log(2e6) / (2 * 5000)))
    assert bool(((ranks - 0.99).abs() < bound).all()), ranks


def test_model_modes_restored_and_no_hook_left() -> None:
    model = _net().train()
    model[1].eval()
    modes = [m.training for m in model.modules()]
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    dissect(model, "2", x, torch.ones(3, 1, 8, 8))
    assert [m.training for m in model.modules()] == modes
    assert count_hooks(model) == 0 and all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match=r"\(B, units, h, w\).*conv layers are: 0, 2"):
        dissect(model, "6", x, torch.ones(3, 1, 8, 8))  # the Linear head: (B, 2) output
    assert [m.training for m in model.modules()] == modes
    assert count_hooks(model) == 0


def _bad(case: str) -> dict[str, Any]:
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    m = torch.ones(4, 1, 8, 8)
    cases: dict[str, dict[str, Any]] = {
        "batch": {"data": x, "concept_masks": m[:3]},
        "size": {"data": x, "concept_masks": torch.ones(4, 1, 4, 4)},
        "3d": {"data": x, "concept_masks": m[:, 0]},
        "binary": {"data": x, "concept_masks": m * 0.5},
        "names": {"data": x, "concept_masks": m, "concepts": ["a", "b"]},
        "layer": {"data": x, "concept_masks": m, "layer": "features.9"},
        "q0": {"data": x, "concept_masks": m, "quantile": 0.0},
        "q1": {"data": x, "concept_masks": m, "quantile": 1.0},
        "q>1": {"data": x, "concept_masks": m, "quantile": 99},
        "loader+masks": {"data": [(x, m)], "concept_masks": m},
        "empty": {"data": []},
        "not-a-tuple": {"data": [x]},
        "iterator": {"data": iter([(x, m)]), "sample_size": 10},
        "batch_size": {"data": x, "concept_masks": m, "batch_size": 0},
    }
    return cases[case]


@pytest.mark.parametrize(
    ("case", "error", "match"),
    [
        ("batch", ValueError, r"same number of images and the same H x W"),
        ("size", ValueError, r"\(4, 1, 4, 4\) do not match the images \(4, 1, 8, 8\)"),
        ("3d", ValueError, r"\(N, K, H, W\).*masks\[:, None\]"),
        ("binary", ValueError, "binary"),
        ("names", ValueError, "1 distinct names"),
        ("layer", ValueError, r"no layer named 'features\.9'.*conv layers are: 0, 2"),
        ("q0", ValueError, r"quantile must be in \(0, 1\)"),
        ("q1", ValueError, r"quantile must be in \(0, 1\)"),
        ("q>1", ValueError, r"quantile must be in \(0, 1\)"),
        ("loader+masks", TypeError, "only for tensor data"),
        ("empty", ValueError, "no batches"),
        ("not-a-tuple", TypeError, r"tuple \(images, \.\.\., masks\)"),
        ("iterator", TypeError, "read twice"),
        ("batch_size", ValueError, "batch_size"),
    ],
)
def test_bad_inputs_raise_clear_errors(case: str, error: type[Exception], match: str) -> None:
    args: dict[str, Any] = {"layer": "2"}
    args.update(_bad(case))
    model = _net()
    with pytest.raises(error, match=match):
        dissect(model, **args)
    assert count_hooks(model) == 0
