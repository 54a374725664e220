"""A tiny run folder (Decoy MNIST position, LeNet, 96 training-pool images) shared by the
studio tests."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY = {
    "experiment": "studio_tiny",
    "run": "base",
    "data": {
        "dataset": "decoy_mnist",
        "variant": "position",
        "folds": 2,
        "seed": 0,
        "batch_size": 32,
        "max_train": 96,
        "max_test": 48,
    },
    "model": {"name": "lenet"},
    "optim": {"epochs": 1, "lr": 3e-3},
    "trainer": {"progress_bar": False},
    "evaluation": {
        "attribution": "saliency",
        "attribution_options": {"abs": True},
        "metrics": ["accuracy", "balanced_accuracy", "ece", "overlap"],
        "batch_size": 64,
    },
}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder as training leaves it (config.yaml, checkpoints/last.ckpt, metrics.json),
    made without training: the seeded, untrained LeNet's weights and its real test metrics."""
    import torch

    from rightfocus._io import atomic_write_json, atomic_write_text
    from rightfocus.engine.config import load_config_dict
    from rightfocus.engine.run import build_model, evaluate_run

    root = tmp_path_factory.mktemp("studio_runs")
    cfg = load_config_dict(TINY, [f"runs_dir={root}"])
    run_dir = cfg.run_dir.resolve()
    atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
    torch.manual_seed(0)
    state = {f"model.{k}": v for k, v in build_model(cfg).state_dict().items()}
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save(
        {"state_dict": state, "global_step": 2, "epoch": 0}, run_dir / "checkpoints" / "last.ckpt"
    )
    atomic_write_json(run_dir / "metrics.json", evaluate_run(run_dir))
    return run_dir


@pytest.fixture(scope="session")
def _shared_session(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from rightfocus.studio import StudioSession

    return StudioSession(tiny_run, store=tmp_path_factory.mktemp("store"), who="tester")


@pytest.fixture
def session(_shared_session, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The shared session with an empty feedback store of this test's own."""
    from rightfocus.feedback.store import FeedbackStore

    _shared_session.store = FeedbackStore(tmp_path / "store")
    _shared_session._queues.clear()
    _shared_session.jobs.clear()
    return _shared_session
