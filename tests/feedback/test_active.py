"""The active-feedback experiment end to end, in a tiny form (slow: trains 5 small runs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rightfocus.feedback.active import ActiveSettings, _recovery, reproduce_active_feedback


def test_recovery_counts_annotations_in_both_directions() -> None:
    acc = [(0, 0.5), (10, 0.6), (20, 0.95)]
    assert _recovery(acc, 0.5, 1.0, 0.8) == 20
    assert _recovery(acc, 0.5, 0.6, 0.8) == 10
    overlap = [(0, 0.3), (10, 0.2), (20, 0.05)]
    assert _recovery(overlap, 0.3, 0.1, 0.8) == 20
    assert _recovery(overlap, 0.3, 0.0, 0.99) is None
    assert _recovery(acc, 0.5, float("nan"), 0.8) is None


@pytest.mark.slow
def test_quick_active_feedback(tmp_path: Path) -> None:
    from rightfocus.engine.config import load_config
    from rightfocus.engine.datamodule import build_dataset
    from rightfocus.feedback.store import FeedbackStore

    tiny = ActiveSettings(
        ("random", "least_confident"), k=8, rounds=1, epochs=1, max_train=96, max_test=48
    )
    logs: list[str] = []
    result = reproduce_active_feedback(tmp_path, settings=tiny, log=logs.append)
    summary = json.loads((tmp_path / "results.json").read_text())
    curves = summary["curves"]
    assert [(c["strategy"], c["annotated"]) for c in curves] == [
        ("random", 0),
        ("random", 8),
        ("least_confident", 0),
        ("least_confident", 8),
    ]
    assert all(0 <= c["accuracy"] <= 1 and 0 <= c["overlap"] <= 1 for c in curves)
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "| random | 8 |" in (tmp_path / "report.md").read_text()
    table = result.tables["Active feedback"]
    assert list(table.columns) == ["0", "8"] and len(table) == 4
    # the oracle painted exactly the chosen training images' true decoy masks
    chosen = json.loads((tmp_path / "stores" / "least_confident" / "round1.json").read_text())
    cfg = load_config(tmp_path / "active_feedback" / "least_confident_round1" / "config.yaml")
    pool = build_dataset(
        cfg.model_copy(update={"data": cfg.data.model_copy(update={"options": {}})}), "train"
    )
    store = FeedbackStore(tmp_path / "stores" / "least_confident" / "round1")
    assert store.indices() == sorted(chosen["chosen"]) and len(set(chosen["chosen"])) == 8
    for i in chosen["chosen"]:
        assert np.array_equal(store.load(i)[0], pool[i][2][0].numpy().astype(np.uint8))
    # least confident really chose the least confident of the no-feedback model
    from rightfocus.engine.run import load_run

    _, model = load_run(tmp_path / "active_feedback" / "none")
    with torch.no_grad():
        probs = model(torch.stack([pool[i][0] for i in range(96)])).softmax(-1)
    order = torch.argsort(probs.max(1).values)[:8].tolist()
    assert sorted(order) == sorted(chosen["chosen"])
    # rerunning resumes: nothing is retrained, same numbers
    again = reproduce_active_feedback(tmp_path, settings=tiny, log=logs.append)
    assert json.loads((tmp_path / "results.json").read_text())["curves"] == curves
    assert again.seconds < result.seconds
