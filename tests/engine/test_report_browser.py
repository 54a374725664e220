"""The report in a real browser (the OS's headless Chromium driven by Playwright): every image
loads, with and without --out, and a screenshot is taken."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip(
        "the OS Chromium is not installed (scripts/system-deps.sh installs it)",
        allow_module_level=True,
    )
pytest.importorskip("playwright.sync_api")


def _runs(root: Path) -> Path:
    import json

    import yaml

    from rightfocus.viz._save import pyplot, save_figure

    for fold in range(2):
        run = root / "decoy_position" / f"none_fold{fold}"
        run.mkdir(parents=True)
        cfg = {"data": {"dataset": "decoy_mnist", "variant": "position", "fold": fold}}
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
        (run / "metrics.json").write_text(json.dumps({"balanced_accuracy": 0.8 + fold / 100}))
        fig, ax = pyplot().subplots(figsize=(2, 2))
        ax.plot([0, 1], [fold, 1])
        save_figure(fig, run / "figures" / "saliency.png")
    return root


@pytest.mark.parametrize("elsewhere", [False, True], ids=["in-place", "--out"])
def test_every_report_image_loads_in_chromium(tmp_path: Path, elsewhere: bool) -> None:
    from rightfocus.engine.report import check_in_browser, write_report

    runs = _runs(tmp_path / "runs")
    out = write_report(
        runs, tmp_path / "out" if elsewhere else None, tables={"T": ["balanced_accuracy"]}
    )
    result = check_in_browser(out["html"], tmp_path / "shot.png")
    assert result["images"] == len(out["figures"]) == 2  # one figure per run
    assert result["broken"] == []
    assert (tmp_path / "shot.png").stat().st_size > 10_000
