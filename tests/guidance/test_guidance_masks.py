"""Mask resizing (max / min pooling) and the empty-mask guard."""

from __future__ import annotations

import pytest
import torch

from rightfocus.guidance._masks import EmptyMaskGuard, resize_mask


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
