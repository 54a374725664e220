"""Active feedback with a simulated annotator: ``rightfocus reproduce active-feedback``.

The studio's loop without a person: on position-variant Decoy MNIST (the patch position leaks
the label in training, is random in test), a model is trained without feedback; then in each
round a query strategy (:mod:`rightfocus.feedback.strategies`) picks ``k`` more training
images, an oracle "paints" each one's true decoy mask into a feedback store, and the model is
retrained from scratch on the whole pool with feedback on the annotated images only (the store
overlay, exactly what a studio retrain runs). Test accuracy and decoy reliance (``overlap``:
share of the absolute input gradient on the test image's decoy patch) are recorded against the
number of annotated images, next to two references: the paper's protocol (masks on 70 % of
all training images) and a model trained on clean MNIST.

Active learning with explanation feedback: Teso & Kersting (2019), "Explanatory Interactive
Machine Learning" (CAIPI); the feedback itself: Ross, Hughes & Doshi-Velez (2017), "Right for
the Right Reasons", and "Regularizing Explanations in Bayesian Convolutional Neural Networks".
Every run is an ordinary run folder, so an interrupted experiment resumes.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rightfocus._io import atomic_write_json, atomic_write_text
from rightfocus.engine.config import load_config_dict
from rightfocus.engine.datamodule import build_dataset
from rightfocus.engine.evaluate import layer_option
from rightfocus.engine.reproduce import ReproduceResult
from rightfocus.engine.run import load_run, run_experiment
from rightfocus.feedback.store import FeedbackStore, image_sha256
from rightfocus.feedback.strategies import STRATEGIES, rank, score_pool
from rightfocus.viz._save import pyplot, save_figure

__all__ = ["ACTIVE_STRATEGIES", "ActiveSettings", "active_base", "reproduce_active_feedback"]

#: ``uncertainty`` needs a Bayesian model: add ``--set model.bayesian=true``.
ACTIVE_STRATEGIES = ("random", "least_confident", "misclassified", "disagreement", "uncertainty")


@dataclass(frozen=True)
class ActiveSettings:
    """Sizes of the experiment (``quick`` and full presets below)."""

    strategies: tuple[str, ...]
    k: int
    rounds: int
    epochs: int
    max_train: int | None
    max_test: int | None


RECOVERY = 0.8  # "most of the way": the share of the gap a strategy must close

QUICK = ActiveSettings(("random", "least_confident", "disagreement"), 25, 2, 5, 1000, 500)
FULL = ActiveSettings(("random", "least_confident", "disagreement"), 50, 5, 8, None, None)


def active_base(settings: ActiveSettings, seed: int = 8434) -> dict[str, Any]:
    """The run config shared by every run (guidance added per run)."""
    return {
        "experiment": "active_feedback",
        "data": {
            "dataset": "decoy_mnist",
            "variant": "position",
            "folds": 1,
            "seed": seed,
            "batch_size": 64,
            "max_train": settings.max_train,
            "max_test": settings.max_test,
        },
        "model": {"name": "lenet"},
        "optim": {"optimizer": "adam", "lr": 3e-3, "epochs": settings.epochs},
        "trainer": {"deterministic": True, "progress_bar": False, "checkpoint_every_n_steps": 1000},
        "evaluation": {
            "attribution": "saliency",
            "attribution_options": {"abs": True},
            "metrics": ["accuracy", "balanced_accuracy", "overlap"],
            "checkpoint": "last",
        },
    }


def _config(
    raw: dict[str, Any], run: str, runs_dir: Path, overrides: Sequence[str], **extra: Any
) -> Any:
    r = copy.deepcopy(raw)
    r["runs_dir"] = str(runs_dir)
    r["run"] = run
    for key, value in extra.items():
        section, _, field = key.partition("__")
        if field:
            r.setdefault(section, {})[field] = value
        else:
            r[section] = value
    return load_config_dict(r, overrides=list(overrides))


def _oracle(store_dir: Path, pool: Any, indices: Sequence[int], strategy: str, run: str) -> None:
    """The simulated annotator: saves each image's true decoy mask."""
    store = FeedbackStore(store_dir)
    for i in indices:
        x, _, m = pool[int(i)][:3]
        if store.version(int(i)):
            continue
        store.save(
            int(i),
            (m[0] > 0.5).numpy().astype(np.uint8),
            base_version=0,
            image_sha256=image_sha256(x),
            who="oracle",
            run=run,
            strategy=strategy,
        )


def _select(
    run_dir: Path, pool: Any, candidates: np.ndarray, strategy: str, k: int, seed: int
) -> list[int]:
    config, model = load_run(run_dir)
    scores = score_pool(
        model,
        pool,
        candidates,
        strategy,
        method="saliency",
        method_b="gradcam",
        options=lambda m: {"abs": True} if m == "saliency" else layer_option(config, m),
        mc_samples=8,
        seed=seed,
    )
    return rank(scores, candidates, k=k)


def _guidance(name: str, lam: float | None) -> list[dict[str, Any]]:
    spec: dict[str, Any] = {"name": name, "empty_masks": "ignore"}
    if name != "counterexamples":
        spec["lam"] = float(lam if lam is not None else (1.0 if name == "rrr" else 3e-4))
    return [spec]


def _recovery(
    curve: list[tuple[int, float]], start: float, target: float, share: float
) -> int | None:
    """Fewest annotations whose value closes ``share`` of the gap ``start -> target`` (either
    direction: accuracy up towards clean, decoy overlap down towards the 70 % protocol)."""
    if not math.isfinite(target) or target == start:
        return None
    goal = start + share * (target - start)
    for n, value in curve:
        if n > 0 and (value - goal) * (target - start) >= 0:
            return n
    return None


def reproduce_active_feedback(
    runs_dir: str | Path = "runs/reproduce-active-feedback",
    quick: bool = False,
    strategies: Sequence[str] | None = None,
    k: int | None = None,
    rounds: int | None = None,
    guidance: str = "rrr",
    lam: float | None = None,
    settings: ActiveSettings | None = None,
    overrides: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> Any:
    """Run the experiment (resuming finished runs) and write ``results.json``, ``curves.png``
    and ``report.md`` into ``runs_dir``; returns a ``ReproduceResult``."""
    s = settings or (QUICK if quick else FULL)
    s = ActiveSettings(
        tuple(strategies) if strategies else s.strategies,
        int(k or s.k),
        int(rounds or s.rounds),
        s.epochs,
        s.max_train,
        s.max_test,
    )
    for name in s.strategies:
        if name not in STRATEGIES or name == "overlap":
            raise ValueError(
                f"strategy {name!r} cannot drive the simulation; choose from "
                f"{', '.join(x for x in STRATEGIES if x != 'overlap')}"
            )
    runs_dir = Path(runs_dir).resolve()
    start = time.perf_counter()
    base = active_base(s)
    seconds: list[float] = []
    steps = 0.0
    results: list[dict[str, Any]] = []

    def run(cfg: Any, label: str) -> dict[str, float]:
        t0 = time.perf_counter()
        finished = (cfg.run_dir / "metrics.json").is_file()
        metrics = run_experiment(cfg, quiet=True)
        seconds.append(time.perf_counter() - t0)
        timing = cfg.run_dir / "timing.json"
        if timing.is_file() and not finished:  # only runs trained in this call
            nonlocal steps
            steps += float(json.loads(timing.read_text()).get("train_step_seconds", 0.0))
        log(
            f"{label}: accuracy {metrics['accuracy']:.3f}, overlap {metrics['overlap']:.3f} "
            f"({seconds[-1]:.0f} s)"
        )
        return metrics

    none_cfg = _config(base, "none", runs_dir, overrides, guidance=[])
    none = run(none_cfg, "no feedback (0 annotations)")
    paper = run(
        _config(
            base,
            "paper_70pct",
            runs_dir,
            overrides,
            guidance=_guidance(guidance, lam),
            data__feedback_fraction=0.7,
        ),
        "masks on 70 % of the pool (paper protocol)",
    )
    clean_raw = json.loads(json.dumps(base))
    clean_raw["data"] = {k2: v for k2, v in base["data"].items() if k2 != "variant"}
    clean_raw["data"]["dataset"] = "mnist"
    clean = run(_config(clean_raw, "clean_mnist", runs_dir, overrides, guidance=[]), "clean MNIST")
    pool = build_dataset(none_cfg, "train")
    n_pool = len(pool)  # type: ignore[arg-type]
    for name in s.strategies:
        annotated: list[int] = []
        prev = none_cfg.run_dir
        curve = [(0, none["accuracy"], none["overlap"])]
        for r in range(1, s.rounds + 1):
            record = runs_dir / "stores" / name / f"round{r}.json"
            if record.is_file():
                chosen = json.loads(record.read_text())["chosen"]
            else:
                rest = np.setdiff1d(np.arange(n_pool), np.asarray(annotated, dtype=np.int64))
                chosen = _select(prev, pool, rest, name, s.k, seed=r)
                atomic_write_json(record, {"chosen": chosen, "after_run": str(prev)})
            annotated = [*annotated, *chosen]
            store_dir = runs_dir / "stores" / name / f"round{r}"
            _oracle(store_dir, pool, annotated, name, str(prev))
            cfg = _config(
                base,
                f"{name}_round{r}",
                runs_dir,
                overrides,
                guidance=_guidance(guidance, lam),
                data__feedback_fraction=1.0,
                data__options={"feedback_store": str(store_dir)},
            )
            m = run(cfg, f"{name}, round {r} ({len(annotated)} annotated)")
            curve.append((len(annotated), m["accuracy"], m["overlap"]))
            prev = cfg.run_dir
        for n, acc, ov in curve:
            results.append({"strategy": name, "annotated": n, "accuracy": acc, "overlap": ov})
    frame = pd.DataFrame(results)

    def needed(metric: str, target: float) -> dict[str, int | None]:
        return {
            name: _recovery(
                [
                    (int(r.annotated), float(getattr(r, metric)))
                    for r in frame[frame.strategy == name].itertuples()
                ],
                none[metric],
                target,
                RECOVERY,
            )
            for name in s.strategies
        }

    recover = {
        "accuracy_towards_clean": needed("accuracy", clean["accuracy"]),
        "overlap_towards_70pct": needed("overlap", paper["overlap"]),
    }
    n70 = int(round(0.7 * n_pool))
    summary = {
        "settings": s.__dict__ | {"guidance": guidance, "lam": lam, "pool": n_pool},
        "no_feedback": none,
        "paper_70pct": paper | {"annotated": n70},
        "clean_mnist": clean,
        "curves": results,
        "annotations_to_close_80pct_of_the_gap": recover,
    }
    atomic_write_json(runs_dir / "results.json", summary)
    figure = _plot(frame, none, paper, clean, n70, runs_dir / "curves.png")
    lines = [
        "# Active feedback on Decoy MNIST (position)",
        "",
        f"Pool {n_pool} training images, {s.rounds} rounds of k = {s.k}, {s.epochs} epochs per "
        f"run, guidance {guidance} (lambda {lam if lam is not None else 'default'}).",
        "",
        f"- no feedback: accuracy {none['accuracy']:.3f}, decoy overlap {none['overlap']:.3f}",
        f"- masks on 70 % ({n70} images): accuracy {paper['accuracy']:.3f}, overlap "
        f"{paper['overlap']:.3f}",
        f"- clean MNIST: accuracy {clean['accuracy']:.3f}",
        "",
        "| strategy | annotated | accuracy | overlap |",
        "|---|---:|---:|---:|",
        *[
            f"| {r['strategy']} | {r['annotated']} | {r['accuracy']:.3f} | {r['overlap']:.3f} |"
            for r in results
        ],
        "",
        "Annotations needed to close 80 % of the gap (first round that does; '-' = none of "
        f"the {s.rounds} rounds, up to {s.rounds * s.k} images; the paper's protocol annotates "
        f"{n70}):",
        "",
        "| strategy | accuracy: no feedback -> clean | decoy overlap: no feedback -> 70 % |",
        "|---|---:|---:|",
        *[
            f"| {n} | {recover['accuracy_towards_clean'][n] or '-'} | "
            f"{recover['overlap_towards_70pct'][n] or '-'} |"
            for n in s.strategies
        ],
        "",
        "![curves](curves.png)",
    ]
    md = atomic_write_text(runs_dir / "report.md", "\n".join(lines) + "\n")
    table = _table(frame)
    total = time.perf_counter() - start
    return ReproduceResult(
        runs_dir,
        {"html": md, "markdown": md, "figure": figure},
        {"Active feedback": table},
        total,
        seconds,
        steps,
    )


def _table(frame: Any) -> Any:
    out: dict[tuple[str, str], dict[str, str]] = {}
    for name, part in frame.groupby("strategy", sort=False):
        for metric in ("accuracy", "overlap"):
            out[(str(name), metric)] = {
                str(int(r.annotated)): f"{getattr(r, metric):.3f}" for r in part.itertuples()
            }
    table = pd.DataFrame.from_dict(out, orient="index").fillna("")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["strategy", "metric"])
    return table


def _plot(
    frame: Any,
    none: dict[str, float],
    paper: dict[str, float],
    clean: dict[str, float],
    n70: int,
    path: Path,
) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, part in frame.groupby("strategy", sort=False):
        axes[0].plot(part.annotated, part.accuracy, marker="o", label=name)
        axes[1].plot(part.annotated, part.overlap, marker="o", label=name)
    for ax, key in zip(axes, ("accuracy", "overlap"), strict=True):
        ax.axhline(paper[key], color="k", ls="--", lw=1, label=f"masks on 70 % ({n70})")
        ax.axhline(none[key], color="gray", ls=":", lw=1, label="no feedback")
        ax.set_xlabel("annotated training images")
    axes[0].axhline(clean["accuracy"], color="g", ls="-.", lw=1, label="clean MNIST")
    axes[0].set_ylabel("test accuracy")
    axes[1].set_ylabel("decoy overlap (lower is better)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110, fmt="png")
