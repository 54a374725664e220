"""Inputs that used to give silently wrong results are now clear errors (or a documented null
plus a warning where the value is legitimately undefined)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rightfocus import DATASETS
from rightfocus._io import atomic_write_json
from rightfocus.bayes import mc_predict
from rightfocus.bayes.layers import MAX_RHO_INIT, BayesConv2d, BayesLinear
from rightfocus.data.base import MaskedTensorDataset
from rightfocus.errors import UserError, one_line, user_message
from rightfocus.metrics.calibration import fit_temperature
from rightfocus.metrics.classification import UndefinedMetricWarning, classification_report
from rightfocus.metrics.explanation import overlap, pointing_game
from rightfocus.metrics.uncertainty import accuracy_rejection_curve


def test_overlap_refuses_a_0_255_mask_and_accepts_soft_masks() -> None:
    attr = torch.rand(2, 1, 6, 6)
    mask = torch.zeros(2, 1, 6, 6)
    mask[:, :, :3] = 1
    ok = overlap(attr, mask)
    with pytest.raises(UserError, match=r"\[0, 255\].*divide an 8-bit 0/255 mask by 255"):
        overlap(attr, mask * 255)
    with pytest.raises(UserError, match="values must lie in"):
        pointing_game(attr, mask * 255)
    with pytest.raises(UserError, match="NaN or Inf"):
        overlap(attr, mask * float("nan"))
    # a soft mask in [0, 1] weights the attribution (known answer: half weight = half overlap)
    assert torch.allclose(overlap(attr, mask * 0.5), ok * 0.5)
    assert torch.allclose(overlap(attr, mask.bool()), ok)


def test_fit_temperature_refuses_probabilities() -> None:
    torch.manual_seed(0)
    logits = torch.randn(64, 4) * 3
    y = logits.argmax(1)
    with pytest.raises(UserError, match=r"got probabilities.*not logits"):
        fit_temperature(logits.softmax(1), y)
    # logits (even ones that happen to be in [0, 1]) still fit
    assert fit_temperature(logits, y, max_iter=5).temperature > 0
    assert fit_temperature(torch.rand(64, 4), y, max_iter=5).temperature > 0


def test_auc_with_an_absent_class_warns_and_is_written_as_null(tmp_path: Path) -> None:
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    y = torch.tensor([0, 1, 0])  # class 2 absent
    with pytest.warns(UndefinedMetricWarning, match=r"class\(es\) \[2\].*null in metrics.json"):
        report = classification_report(probs, y)
    assert math.isnan(report["auc"]) and report["accuracy"] == 1.0
    path = atomic_write_json(tmp_path / "metrics.json", report)
    text = path.read_text()
    assert "NaN" not in text
    assert json.loads(text)["auc"] is None  # strict JSON: parses everywhere
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every class present: no warning
        classification_report(probs, torch.tensor([0, 1, 2]))


def test_json_writer_is_strict_for_nested_values(tmp_path: Path) -> None:
    path = atomic_write_json(tmp_path / "m.json", {"a": [1.0, float("inf")], "b": {"c": -math.inf}})
    assert json.loads(path.read_text()) == {"a": [1.0, None], "b": {"c": None}}


def test_mc_predict_refuses_nan_input_and_huge_rho_is_refused() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), BayesLinear(4, 3))
    x = torch.rand(5, 4)
    x[2, 1] = float("nan")
    with pytest.raises(UserError, match=r"NaN or Inf values \(1 of 5 samples\)"):
        mc_predict(model, x, samples=2)
    assert torch.isfinite(mc_predict(model, torch.rand(5, 4), samples=2).probs).all()
    for layer in (
        lambda r: BayesLinear(4, 3, rho_init=r),
        lambda r: BayesConv2d(1, 2, 3, rho_init=r),
    ):
        with pytest.raises(ValueError, match=r"rho_init=1e\+06 .*overflow"):
            layer(1e6)
        layer(MAX_RHO_INIT)  # the bound itself is accepted


def _folder(root: Path, classes: dict[str, int]) -> None:
    for c, n in classes.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = np.full((8, 8, 3), 40 * i, dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")


def test_empty_class_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    _folder(tmp_path, {"cat": 2, "dog": 0, "emu": 1})
    with pytest.raises(UserError, match=r"class folder .*dog holds no images"):
        DATASETS.get("image_folder")(root=str(tmp_path))
    # a test split takes its classes from train/: a class absent from the test set is allowed
    _folder(tmp_path / "split" / "train", {"cat": 2, "dog": 1})
    _folder(tmp_path / "split" / "test", {"cat": 1, "dog": 0})
    test = DATASETS.get("image_folder")(root=str(tmp_path / "split"), split="test")
    assert test.classes == ["cat", "dog"] and test.targets == [0]


def test_corrupt_image_and_wrong_size_or_corrupt_mask_name_the_file(tmp_path: Path) -> None:
    _folder(tmp_path / "images", {"a": 2, "b": 1})
    bad = tmp_path / "images" / "a" / "1.png"
    bad.write_bytes(bad.read_bytes()[:30])  # truncated PNG
    ds = DATASETS.get("masked_folder")(root=str(tmp_path), image_size=8)
    with pytest.raises(UserError, match=r"image file .*a/1\.png cannot be read"):
        ds[1]
    (tmp_path / "masks" / "b").mkdir(parents=True)
    Image.fromarray(np.zeros((5, 7), dtype=np.uint8)).save(tmp_path / "masks" / "b" / "0.png")
    (tmp_path / "masks" / "a").mkdir(parents=True)
    (tmp_path / "masks" / "a" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    ds = DATASETS.get("masked_folder")(root=str(tmp_path), image_size=8)
    with pytest.raises(UserError, match=r"mask file .*a/0\.png cannot be read"):
        ds[0]
    with pytest.raises(UserError, match=r"mask .*b/0\.png is 7x5 pixels but its image .*8x8"):
        ds[2]


def test_user_messages_are_one_line() -> None:
    assert one_line("Invalid cfg:\n  a: bad\n  b: worse") == "Invalid cfg: a: bad; b: worse"
    assert user_message(UserError("x is 3", hint="use 2")) == "x is 3 (use 2)"
    assert user_message(RuntimeError("a bug")) is None
    full = OSError(28, "No space left on device", "/runs/x/last.ckpt")
    assert "no space left on the device while writing /runs/x/last.ckpt" in str(user_message(full))
    denied = PermissionError(13, "Permission denied", "/ro/runs")
    assert "permission denied for /ro/runs" in str(user_message(denied))
    clash = RuntimeError("Error(s) in loading state_dict for LeNet:\n\tsize mismatch for fc.w")
    assert "saved from another model" in str(user_message(clash))
    assert "\n" not in str(user_message(clash))


def test_in_memory_0_255_masks_and_nan_uncertainty_are_refused() -> None:
    images, labels = torch.zeros(2, 1, 4, 4), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"got \[255, 255\]; divide 0/255 masks by 255"):
        MaskedTensorDataset(images, labels, torch.full((2, 1, 4, 4), 255.0))
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    with pytest.raises(ValueError, match="uncertainty contains NaN"):
        accuracy_rejection_curve(probs, labels, torch.tensor([0.1, float("nan")]))


def test_a_finished_run_with_a_null_metric_reads_back_as_nan(tmp_path: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from rightfocus.cli import app
    from rightfocus.engine.config import load_config
    from rightfocus.engine.run import prepare_run_dir, run_experiment

    raw = {"runs_dir": str(tmp_path / "runs"), "data": {"dataset": "decoy_mnist"}}
    raw["model"] = {"name": "lenet"}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)
    run_dir = prepare_run_dir(cfg)
    atomic_write_json(run_dir / "metrics.json", {"accuracy": 0.5, "auc": float("nan")})
    out = run_experiment(cfg)
    assert out["accuracy"] == 0.5 and math.isnan(out["auc"])
    result = CliRunner().invoke(app, ["train", str(path)])
    assert result.exit_code == 0, result.output
    assert "undefined" in result.stdout and "nan" not in result.stdout.lower()
