"""The batch figure helper writes a PNG grid with mask outlines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rightfocus.viz.batch import batch_figure


def test_png_with_red_outline(tmp_path: Path) -> None:
    x = torch.zeros(3, 1, 28, 28)
    m = torch.zeros(3, 1, 28, 28)
    m[0, 0, 0:4, 0:4] = 1
    out = batch_figure(x, m, tmp_path / "sub" / "batch.png", labels=torch.tensor([1, 2, 3]))
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    arr = np.asarray(Image.open(out).convert("RGB")).astype(int)
    red = (arr[..., 0] > 200) & (arr[..., 1] < 80) & (arr[..., 2] < 80)
    assert red.sum() > 0
    batch_figure(x, torch.zeros_like(m), tmp_path / "none.png")
    arr = np.asarray(Image.open(tmp_path / "none.png").convert("RGB")).astype(int)
    assert ((arr[..., 0] > 200) & (arr[..., 1] < 80)).sum() == 0
    assert not list((tmp_path / "sub").glob(".*tmp"))  # atomic write left no temp file


def test_normalized_rgb_and_errors(tmp_path: Path) -> None:
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    x = (torch.rand(2, 3, 16, 16) - 0.5) / 0.25
    m = torch.zeros(2, 1, 16, 16)
    batch_figure(x, m, tmp_path / "rgb.png", labels=["cat", "dog"], normalization=(mean, std))
    with pytest.raises(ValueError, match="masks must be"):
        batch_figure(x, torch.zeros(2, 1, 8, 8), tmp_path / "bad.png")
    with pytest.raises(ValueError, match="labels"):
        batch_figure(x, m, tmp_path / "bad.png", labels=["a"])
    with pytest.raises(ValueError, match="one value per channel"):
        batch_figure(x, m, tmp_path / "bad.png", normalization=((0.5, 0.5), (1.0, 1.0)))
    assert not (tmp_path / "bad.png").exists()
