"""Stand-ins for metric modules another engineer is still writing (used only while missing).

``install()`` puts sklearn/torch-based versions of ``rightfocus.metrics.classification``,
``.calibration`` and ``.explanation`` into ``sys.modules`` when the real module cannot be
imported, so the engine can be tested end to end. It never shadows a real module.
"""

from __future__ import annotations

import importlib
import itertools
import sys
import types

import numpy as np
import torch
from torch import Tensor


def _classification_report(probs: Tensor, y: Tensor) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

    p = probs.detach().double().cpu().numpy()
    t = y.detach().cpu().numpy()
    pred = p.argmax(1)
    k = p.shape[1]
    try:
        if k == 2:
            auc = roc_auc_score(t, p[:, 1])
        else:
            auc = roc_auc_score(t, p / p.sum(1, keepdims=True), multi_class="ovr", labels=range(k))
    except ValueError:
        auc = float("nan")
    return {
        "accuracy": float(accuracy_score(t, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(t, pred)),
        "f1": float(f1_score(t, pred, average="binary" if k == 2 else "macro")),
        "auc": float(auc),
    }


def _ece(probs: Tensor, y: Tensor, n_bins: int = 15) -> float:
    conf, pred = probs.max(1)
    acc = (pred == y).double()
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            total += float(sel.double().mean()) * abs(float(acc[sel].mean() - conf[sel].mean()))
    return total


def _overlap(attr: Tensor, mask: Tensor) -> Tensor:
    a = attr.flatten(1)
    m = mask.expand_as(attr).flatten(1)
    return (m * a).sum(1) / (a.sum(1) + 1e-8)


def install() -> list[str]:
    """Install stand-ins for missing metric modules; returns the names installed."""
    installed = []
    fns = {
        "classification": {"classification_report": _classification_report},
        "calibration": {"expected_calibration_error": _ece},
        "explanation": {"overlap": _overlap},
    }
    for short, members in fns.items():
        name = f"rightfocus.metrics.{short}"
        try:
            mod = importlib.import_module(name)
            if all(hasattr(mod, m) for m in members):
                continue
        except ImportError:
            pass
        mod = types.ModuleType(name)
        mod.__dict__.update(members)
        sys.modules[name] = mod
        setattr(importlib.import_module("rightfocus.metrics"), short, mod)
        installed.append(name)
    return installed


if __name__ == "__main__":  # pragma: no cover
    print(install())
    print(torch.__version__)
