"""Before/after comparison of a studio retrain: test metrics and the annotated images."""

from __future__ import annotations

import json
from typing import Any

import torch

from rightfocus.engine.evaluate import attribution_method
from rightfocus.feedback.strategies import mask_overlap
from rightfocus.studio.session import StudioSession

__all__ = ["METRICS", "after_session", "annotated_overlap", "comparison"]

METRICS = ("accuracy", "balanced_accuracy", "ece", "overlap")


def after_session(session: StudioSession, job: Any) -> StudioSession:
    """A session on the retrained run (same store), created once per job."""
    after = getattr(job, "session", None)
    if after is None:
        after = StudioSession(job.run_dir, store=session.store.root, device=session.device)
        job.session = after
    return after


def annotated_overlap(session: StudioSession, indices: list[int]) -> float | None:
    """Mean ``sum(m |a|) / sum(|a|)`` over the annotated images, with the run's evaluation
    attribution (``evaluation.attribution``) for the label and the stored mask ``m``."""
    if not indices:
        return None
    method, _ = attribution_method(session.config)
    values = []
    for i in indices:
        loaded = session.store.load(i)
        if loaded is None or not loaded[0].any():
            continue
        a = session.explanation(i, method, target=session.item(i)[1])[None]
        m = torch.from_numpy(loaded[0].astype("float32"))[None, None]
        values.append(float(mask_overlap(a, m)[0]))
    return sum(values) / len(values) if values else None


def _metrics(run_dir: Any) -> dict[str, float] | None:
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return {k: float(data[k]) for k in METRICS if k in data}


def comparison(session: StudioSession, job: Any, max_images: int = 12) -> dict[str, Any]:
    """Test metrics of both runs, overlap on the annotated training images, and which images
    to show side by side."""
    after = after_session(session, job)
    annotated = [i for i in session.store.indices() if session._in_train[i]]
    return {
        "job": job.name,
        "before_run": session.run_name,
        "after_run": after.run_name,
        "before": _metrics(session.run_dir),
        "after": _metrics(job.run_dir),
        "annotated_overlap": {
            "before": annotated_overlap(session, annotated),
            "after": annotated_overlap(after, annotated),
        },
        "images": [
            {
                "index": i,
                "label": after.item(i)[1],
                "pred_before": int(session.predict(i).argmax()),
                "pred_after": int(after.predict(i).argmax()),
            }
            for i in annotated[:max_images]
        ],
        "settings": job.settings,
    }
