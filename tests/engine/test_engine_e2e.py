"""End to end: config -> train -> metrics.json -> evaluate -> explain PNG (tiny Decoy MNIST)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image as mpimg
import pytest
import torch

from rightfocus.engine.config import load_config_dict
from rightfocus.engine.run import RunConflictError, evaluate_run, explain_run, run_experiment

ALL_METRICS = {"accuracy", "balanced_accuracy", "f1", "auc", "ece", "nll", "overlap"}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _config(tmp_path: Path, run: str = "lenet", **sections: dict) -> dict:
    raw = {
        "runs_dir": str(tmp_path / "runs"),
        "experiment": "decoy",
        "run": run,
        "data": {
            "dataset": "decoy_mnist",
            "variant": "color",
            "max_train": 300,
            "max_test": 60,
            "batch_size": 50,
            "folds": 3,
        },
        "model": {"name": "lenet"},
        "optim": {"epochs": 1, "lr": 3e-3},
        "trainer": {"checkpoint_every_n_steps": 2, "log_every_n_steps": 1, "progress_bar": False},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return raw


def test_one_epoch_lenet_end_to_end(tmp_path: Path) -> None:
    cfg = load_config_dict(_config(tmp_path))
    metrics = run_experiment(cfg, quiet=True)
    run_dir = cfg.run_dir
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert set(saved) >= ALL_METRICS
    assert saved == metrics
    assert all(isinstance(v, float) for v in saved.values())
    assert 0.0 <= saved["overlap"] <= 1.0 and 0.0 <= saved["accuracy"] <= 1.0
    assert (run_dir / "config.yaml").is_file()
    timing = json.loads((run_dir / "timing.json").read_text())
    assert timing["train_steps"] > 0 and timing["train_step_seconds"] > 0
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))

    from rightfocus.engine.report import training_curves

    tags = set(training_curves(run_dir)["tag"])
    assert {"train/loss", "train/nll", "val/acc", "val/auc", "val/loss"} <= tags

    # a finished run is not retrained; evaluate recomputes the same numbers
    assert run_experiment(cfg, quiet=True) == metrics
    assert evaluate_run(run_dir, "test") == pytest.approx(metrics)

    png = explain_run(run_dir, methods=["gradcam", "saliency"], n=4)
    assert png == run_dir / "figures" / "explain_gradcam+saliency.png"
    height, width = mpimg.imread(png).shape[:2]
    assert (height, width) == (4 * 160, 3 * 160)  # 1.6 in per cell at 100 dpi


def test_other_config_in_same_run_dir_is_refused(tmp_path: Path) -> None:
    cfg = load_config_dict(_config(tmp_path, run="clash"))
    (cfg.run_dir / "checkpoints").mkdir(parents=True)
    (cfg.run_dir / "checkpoints" / "last.ckpt").write_bytes(b"trained")  # the run has started
    (cfg.run_dir / "config.yaml").write_text(
        load_config_dict(_config(tmp_path, run="clash"), ["optim.lr=0.5"]).to_yaml()
    )
    with pytest.raises(RunConflictError, match=r"optim\.lr: 0\.5 -> 0\.003"):
        run_experiment(cfg, quiet=True)
    assert "lr: 0.5" in (cfg.run_dir / "config.yaml").read_text()  # untouched


def test_bf16_auto_batch_and_class_weights(tmp_path: Path) -> None:
    raw = _config(
        tmp_path,
        run="bf16",
        data={"batch_size": "auto", "class_weights": "inverse_frequency", "folds": 1},
        trainer={"precision": "bf16-mixed", "accelerator": "cpu"},
        model={"bayesian": True},
    )
    raw["guidance"] = [{"name": "bayes_feedback", "lam": 1e-4}]
    cfg = load_config_dict(raw)
    stale = cfg.run_dir / ".scale_batch_size_0123abcd.ckpt"  # left by a killed search
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x")
    metrics = run_experiment(cfg, quiet=True)
    assert not list(cfg.run_dir.glob(".scale_batch_size_*"))  # removed; the search left none
    assert set(metrics) >= ALL_METRICS
    tuned = json.loads((cfg.run_dir / "batch_size.json").read_text())["batch_size"]
    assert 1 <= tuned <= 300
    assert not (cfg.run_dir / "checkpoints" / "best.ckpt").exists()  # folds: 1 -> no validation


def test_validation_on_the_mean_network_with_val_mc_samples_zero() -> None:
    import torch

    from rightfocus import bayes
    from rightfocus.bayes.inference import predict_probs
    from rightfocus.engine.config import load_config_dict
    from rightfocus.models import LeNet

    model = bayes.to_bayesian(LeNet(), rho_init=-2.0)
    x = torch.rand(4, 1, 28, 28)
    mean = predict_probs(model, x, True, 0)
    torch.testing.assert_close(mean, predict_probs(model, x, True, 0))
    torch.testing.assert_close(mean, bayes.mc_predict(model, x, 1, sample=False).probs)
    assert not torch.allclose(predict_probs(model, x, True, 3), mean)
    raw = {"experiment": "e", "data": {"dataset": "decoy_mnist"}, "model": {"name": "lenet"}}
    assert (
        load_config_dict({**raw, "evaluation": {"val_mc_samples": 0}}).evaluation.val_mc_samples
        == 0
    )
    with pytest.raises(Exception, match="val_mc_samples"):
        load_config_dict({**raw, "evaluation": {"val_mc_samples": -1}})
