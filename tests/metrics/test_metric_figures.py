"""Metric figures are written as PNG files."""

from __future__ import annotations

from pathlib import Path

import torch

from rightfocus.metrics.calibration import reliability_data
from rightfocus.viz.figures import cka_heatmap, explanation_uncertainty_figure, reliability_diagram


def test_figures_are_written(tmp_path: Path) -> None:
    probs = torch.randn(200, 3).softmax(-1)
    y = torch.randint(0, 3, (200,))
    paths = [
        reliability_diagram(reliability_data(probs, y, 10), tmp_path / "rel.png"),
        explanation_uncertainty_figure(
            torch.rand(2, 1, 8, 8),
            torch.rand(2, 1, 8, 8),
            torch.rand(2, 1, 8, 8),
            tmp_path / "u.png",
        ),
        cka_heatmap(torch.rand(3, 2), tmp_path / "cka.png", ["a", "b", "c"], ["x", "y"]),
    ]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["cka.png", "rel.png", "u.png"]
