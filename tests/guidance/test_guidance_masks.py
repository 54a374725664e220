"""Mask resizing (max / min pooling), the empty-mask guard and the argument checks every
guidance method shares."""

from __future__ import annotations

import pytest
import torch

from rightfocus import GUIDANCE
from rightfocus.guidance._masks import EmptyMaskGuard, resize_mask
from rightfocus.guidance.base import GuidedBatch


def _mask() -> torch.Tensor:
    # 4x4 mask; to 2x2 cells: top-left cell fully masked, top-right cell one pixel masked,
    # bottom-left cell three pixels masked, bottom-right empty.
    m = torch.zeros(1, 1, 4, 4)
    m[0, 0, 0:2, 0:2] = 1
    m[0, 0, 0, 3] = 1
    m[0, 0, 2:4, 0:2] = 1
    m[0, 0, 3, 1] = 0
    return m


def test_max_pool_marks_cells_with_any_masked_pixel() -> None:
    out = resize_mask(_mask(), (2, 2), "max")
    assert out[0, 0].tolist() == [[1.0, 1.0], [1.0, 0.0]]


def test_min_pool_marks_only_fully_masked_cells() -> None:
    out = resize_mask(_mask(), (2, 2), "min")
    assert out[0, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]


def test_uneven_sizes_follow_adaptive_pooling_windows() -> None:
    # 28 -> 11 like LeNet's last conv: a 4x4 patch at rows 0:4, cols 24:28
    m = torch.zeros(2, 1, 28, 28)
    m[0, 0, 0:4, 24:28] = 1
    out_max = resize_mask(m, (11, 11), "max")
    out_min = resize_mask(m, (11, 11), "min")
    ref_max = torch.zeros(11, 11)
    ref_min = torch.zeros(11, 11)
    for i in range(11):
        r0, r1 = (i * 28) // 11, -((-(i + 1) * 28) // 11)
        for j in range(11):
            c0, c1 = (j * 28) // 11, -((-(j + 1) * 28) // 11)
            ref_max[i, j] = m[0, 0, r0:r1, c0:c1].max()
            ref_min[i, j] = m[0, 0, r0:r1, c0:c1].min()
    assert torch.equal(out_max[0, 0], ref_max)
    assert torch.equal(out_min[0, 0], ref_min)
    assert out_max[1].sum() == 0 and out_min[0].sum() < out_max[0].sum()


def test_bad_pool_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="pool must be 'max'"):
        resize_mask(_mask(), (2, 2), "avg")


def test_guard_errors_when_no_sample_has_a_mask() -> None:
    guard = EmptyMaskGuard("rrr", "error", min_samples=64)
    guard.update(torch.zeros(32, 1, 4, 4))  # not enough evidence yet
    with pytest.raises(ValueError, match="carries no masks"):
        guard.update(torch.zeros(32, 1, 4, 4))


def test_guard_is_quiet_once_a_mask_was_seen() -> None:
    guard = EmptyMaskGuard("rrr", "error", min_samples=4)
    guard.update(_mask())
    for _ in range(5):
        guard.update(torch.zeros(8, 1, 4, 4))


def test_guard_warn_and_ignore_policies() -> None:
    with pytest.warns(UserWarning, match="carries no masks"):
        EmptyMaskGuard("rrr", "warn", min_samples=2).update(torch.zeros(2, 1, 4, 4))
    EmptyMaskGuard("rrr", "ignore", min_samples=1).update(torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="empty_masks"):
        EmptyMaskGuard("rrr", "sometimes")


# --- receptive-field projection ------------------------------------------------------------


def _geometries() -> list[torch.nn.Sequential]:
    from torch import nn

    return [
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3)),  # LeNet
        nn.Sequential(nn.Conv2d(1, 2, 5, stride=2, padding=2), nn.ReLU(), nn.Conv2d(2, 2, 3)),
        nn.Sequential(
            nn.Conv2d(1, 2, 3, padding=2, dilation=2),
            nn.BatchNorm2d(2),
            nn.AvgPool2d(3, stride=2, padding=1),
            nn.Conv2d(2, 2, (3, 1), stride=(1, 2), padding=(1, 0)),
        ),
        nn.Sequential(
            nn.Conv2d(1, 2, 4, stride=3, padding=1),
            nn.MaxPool2d(3, stride=1, padding=1, dilation=1),
            nn.Conv2d(2, 2, 2, stride=2, dilation=3),
        ),
    ]


def _brute_force_fields(model: torch.nn.Sequential, size: int) -> torch.Tensor:
    """(h, w, H, W) boolean: the input pixels each output cell depends on, from the support of
    its gradient in a twin network without cancellations (weights 1, max -> avg pooling with
    the same geometry, pointwise layers removed)."""
    from torch import nn

    twin = []
    for m in model:
        if isinstance(m, nn.Conv2d):
            conv = nn.Conv2d(
                m.in_channels,
                m.out_channels,
                m.kernel_size,
                m.stride,
                m.padding,
                m.dilation,
                bias=False,
            )
            nn.init.ones_(conv.weight)
            twin.append(conv)
        elif isinstance(m, nn.MaxPool2d):  # dilation 1 here, so avg pooling covers the same
            twin.append(nn.AvgPool2d(m.kernel_size, m.stride, m.padding))
        elif isinstance(m, nn.AvgPool2d):
            twin.append(m)
    net = nn.Sequential(*twin).double()
    x = torch.ones(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    out = net(x)
    h, w = out.shape[-2:]
    fields = torch.zeros(h, w, size, size, dtype=torch.bool)
    for r in range(h):
        for c in range(w):
            (grad,) = torch.autograd.grad(out[0, 0, r, c], x, retain_graph=True)
            fields[r, c] = grad[0, 0] != 0
    return fields


@pytest.mark.parametrize("index", range(4))
def test_receptive_field_projection_matches_brute_force(index: int) -> None:
    from rightfocus.guidance._masks import receptive_field_geometry

    model = _geometries()[index]
    size = 17
    fields = _brute_force_fields(model, size)
    chain = receptive_field_geometry(model, model[-1])
    gen = torch.Generator().manual_seed(index)
    masks = torch.zeros(6, 1, size, size)
    for i in range(6):  # random rectangles, a single pixel, and the border
        r, c = torch.randint(size - 4, (2,), generator=gen).tolist()
        masks[i, 0, r : r + 1 + i % 4, c : c + 1 + (i + 1) % 4] = 1
    masks[5] = 0
    masks[5, 0, 0, size - 1] = 1
    out = resize_mask(masks, tuple(fields.shape[:2]), "receptive_field", chain)
    expected = (fields[None] & (masks[:, 0, None, None] > 0)).flatten(-2).any(-1)
    assert torch.equal(out[:, 0] > 0, expected)
    assert expected.any() and not expected.all()


def test_receptive_field_covers_more_than_position_max_pooling_on_lenet() -> None:
    """The paper's adaptive max pool misses conv2 cells that see a border patch."""
    from rightfocus.guidance._masks import receptive_field_geometry
    from rightfocus.models import LeNet

    model = LeNet()
    chain = receptive_field_geometry(model, model.features.conv2)
    mask = torch.zeros(1, 1, 28, 28)
    mask[0, 0, 4:8, 0:4] = 1  # the paper's position 4
    rf = resize_mask(mask, (11, 11), "receptive_field", chain)
    pooled = resize_mask(mask, (11, 11), "max")
    assert bool((rf >= pooled).all()) and rf.sum() > pooled.sum()


def test_receptive_field_refuses_unsupported_layers() -> None:
    from torch import nn

    from rightfocus.guidance._masks import receptive_field_geometry

    model = nn.Sequential(nn.Conv2d(1, 1, 3), nn.AdaptiveAvgPool2d(4), nn.Conv2d(1, 1, 3))
    with pytest.raises(ValueError, match="cannot follow AdaptiveAvgPool2d"):
        receptive_field_geometry(model, model[2])
    with pytest.raises(ValueError, match="needs the layer chain"):
        resize_mask(torch.zeros(1, 1, 4, 4), (2, 2), "receptive_field")


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("rrr", {"log_prob": "mean"}, r"log_prob must be one of \('sum', 'target', 'loss'\)"),
        ("rrr", {"empty_masks": "skip"}, r"empty_masks must be one of \('error', 'warn'"),
        ("xgradient_prior", {"target": "logit"}, r"target must be one of \('label', 'pred'\)"),
        ("counterexamples", {"empty_masks": "no"}, "empty_masks must be one of"),
        ("bayes_feedback", {"empty_masks": "no"}, "empty_masks must be one of"),
        ("proxy_attention", {"rule": "median"}, r"rule must be one of \('blend', 'mean'"),
        ("proxy_attention", {"store": "keep"}, r"store must be one of \('replace', 'add'\)"),
        ("proxy_attention", {"clear": "never"}, "clear must be one of"),
    ],
)
def test_every_method_refuses_an_unknown_choice_the_same_way(name, params, message) -> None:
    """One check for every guidance method's named choices: the option, the allowed values and
    what was given."""
    with pytest.raises(ValueError, match=message):
        GUIDANCE.get(name)(**params)


@pytest.mark.parametrize("name", ["rrr", "xgradient_prior"])
def test_input_gradient_methods_refuse_an_input_without_grad(name: str) -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3, bias=False))
    x = torch.rand(2, 1, 4, 4)
    batch = GuidedBatch(x, torch.tensor([0, 1]), torch.ones(2, 1, 4, 4))
    guidance = GUIDANCE.get(name)()
    with pytest.raises(ValueError, match=rf"{name.upper() if name == 'rrr' else name} needs the "
                       r"forward input to require grad.*guided_forward"):  # fmt: skip
        guidance.loss_terms(model, batch, model(x))
