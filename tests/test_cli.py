"""CLI: train / evaluate / explain through typer, help texts, user errors as exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from rightfocus.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _write_config(tmp_path: Path) -> Path:
    cfg = {
        "runs_dir": str(tmp_path / "runs"),
        "experiment": "cli",
        "run": "r",
        "data": {
            "dataset": "decoy_mnist",
            "variant": "position",
            "max_train": 150,
            "max_test": 8,  # fewer test digits than classes: AUC is undefined
            "batch_size": 50,
            "folds": 3,
        },
        "model": {"name": "lenet"},
        "optim": {"epochs": 1},
        "trainer": {"progress_bar": False, "log_every_n_steps": 1},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("command", ["train", "evaluate", "explain", "list", "demo"])
def test_help_has_example(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Example: rightfocus " + command in " ".join(result.output.split())


def test_train_evaluate_explain(tmp_path: Path) -> None:
    config = _write_config(tmp_path)
    result = runner.invoke(app, ["train", str(config), "--quiet", "--set", "optim.lr=2e-3"])
    assert result.exit_code == 0, result.output
    assert "balanced_accuracy" in result.output
    run_dir = tmp_path / "runs" / "cli" / "r"
    # an undefined metric is null (strict JSON), shown as "undefined", never a bare NaN
    text = (run_dir / "metrics.json").read_text()
    saved = json.loads(text, parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))
    assert saved["auc"] is None and isinstance(saved["accuracy"], float)
    assert "undefined" in result.stdout
    assert "lr: 0.002" in (run_dir / "config.yaml").read_text()

    result = runner.invoke(app, ["evaluate", str(run_dir), "--split", "val"])
    assert result.exit_code == 0, result.output
    assert set(json.loads((run_dir / "metrics_val.json").read_text())) >= {"accuracy", "overlap"}

    out = tmp_path / "grid.png"
    result = runner.invoke(
        app, ["explain", str(run_dir), "--method", "gradcam", "--n", "2", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # same run name, different config -> refused, nothing overwritten
    result = runner.invoke(app, ["train", str(config), "--quiet", "--set", "optim.lr=1e-2"])
    assert result.exit_code == 2
    assert "different config" in result.output and "optim.lr" in result.output

    # a corrupt last checkpoint of an unfinished run -> clear error
    (run_dir / "metrics.json").unlink()
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    result = runner.invoke(app, ["train", str(config), "--quiet", "--set", "optim.lr=2e-3"])
    assert result.exit_code == 2
    assert "truncated or corrupt" in " ".join(result.output.split())


def test_train_typo_and_wrong_type_are_user_errors(tmp_path: Path) -> None:
    config = _write_config(tmp_path)
    result = runner.invoke(app, ["train", str(config), "--set", "optim.lrr=1"])
    assert result.exit_code == 2
    assert "'optim.lrr'" in result.output and "did you mean 'lr'" in result.output
    result = runner.invoke(app, ["train", str(config), "--set", "optim.epochs=many"])
    assert result.exit_code == 2
    assert "optim.epochs" in result.output
    assert not (tmp_path / "runs").exists()
