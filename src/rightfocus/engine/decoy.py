"""Decoy reliance diagnostics and the per-run analysis behind the Decoy MNIST report.

A model trained on Decoy MNIST can learn the digit or the decoy (the patch whose gray value,
``color``/``ross``/``cdep``, or position, ``position``, encodes the label in training). Three
probes on the test digits say which (Ross, Hughes & Doshi-Velez 2017, "Right for the Right
Reasons"; "Regularizing Explanations in Bayesian Convolutional Neural Networks"):

* ``clean_accuracy``: accuracy on the same test digits without any patch;
* ``follows_decoy``: on blank images carrying only a patch that encodes a random class ``r``
  under the training rule, the share of predictions equal to ``r`` (chance: 1/10);
* ``matching_accuracy``: accuracy when the test digits carry a decoy that agrees with the label
  (the training rule), i.e. what the shortcut buys.

The probes ask the mean network of Bayesian models (the model selected during training, and
ten times cheaper than Monte-Carlo averaging); the test metrics and reliability bins use the
run's Monte-Carlo predictions.

:func:`analyse_run` writes ``analysis.json`` (metrics on each variant's decoy test set, the
diagnostics, reliability bins) and ``analysis.pt`` (saliency of the first test images and,
for Bayesian models, its mean and std over posterior samples) next to the run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rightfocus._io import atomic_path, atomic_write_json
from rightfocus.attribution import attribute
from rightfocus.bayes.inference import predict_probs
from rightfocus.data.decoy_mnist import decoy_mnist, make_decoy_mnist
from rightfocus.engine.config import load_config_dict
from rightfocus.engine.datamodule import ExperimentData
from rightfocus.engine.evaluate import evaluate_predictions
from rightfocus.engine.run import load_run, load_test_predictions
from rightfocus.metrics.uncertainty import explanation_uncertainty

__all__ = ["ANALYSIS_FILE", "TENSORS_FILE", "analyse_run", "decoy_probes", "reliance"]

ANALYSIS_FILE = "analysis.json"
TENSORS_FILE = "analysis.pt"
N_BINS = 15
_PROBE_SEED = 1_000_003  # decoy draws of the probes, independent of the train/test streams


def decoy_probes(
    variant: str, seed: int, root: str | None = None, limit: int | None = None
) -> dict[str, tuple[Tensor, Tensor]]:
    """The variant's test set and the three probes, each ``(images, targets)``.

    ``test``: the decoy test set; ``clean``: its digits without patch; ``matching``: its digits
    with a label-matching decoy; ``blank``: blank images with a decoy encoding a random class
    (the target is that class). ``limit`` keeps the first ``limit`` test digits.
    """
    test = decoy_mnist(split="test", root=root, seed=seed, variant=variant)
    n = len(test.labels) if limit is None else min(limit, len(test.labels))
    clean, labels = test.clean[:n], test.labels[:n]
    gen = torch.Generator().manual_seed(seed + _PROBE_SEED)
    decoy_class = torch.randint(10, (n,), generator=gen)
    matching = make_decoy_mnist(clean, labels, variant, train=True, seed=seed + _PROBE_SEED)
    blank = make_decoy_mnist(
        torch.zeros_like(clean), decoy_class, variant, train=True, seed=seed + _PROBE_SEED + 1
    )
    return {
        "test": (test.images[:n], labels),
        "masks": (test.masks[:n], labels),
        "clean": (clean, labels),
        "matching": (matching.images, labels),
        "blank": (blank.images, decoy_class),
    }


def _probs(model: nn.Module, x: Tensor, bayesian: bool, mc: int, seed: int) -> Tensor:
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        parts = [
            predict_probs(model, chunk.to(device), bayesian, mc).cpu() for chunk in x.split(500)
        ]
    return torch.cat(parts)


def reliance(
    model: nn.Module,
    probes: dict[str, tuple[Tensor, Tensor]],
    bayesian: bool,
    mc_samples: int = 0,
    seed: int = 0,
) -> dict[str, float]:
    """``clean_accuracy``, ``follows_decoy`` and ``matching_accuracy`` (see module docstring).

    ``mc_samples=0`` (default) asks a Bayesian model's mean network, the network selected
    during training; ``> 0`` averages that many sampled passes."""
    out = {}
    for key, name in (
        ("clean", "clean_accuracy"),
        ("blank", "follows_decoy"),
        ("matching", "matching_accuracy"),
    ):
        x, target = probes[key]
        pred = _probs(model, x, bayesian, mc_samples, seed).argmax(-1)
        out[name] = float((pred == target).float().mean())
    return out


def _bins(probs: Tensor, y: Tensor) -> dict[str, list[float]]:
    """Equal-width reliability bins as sums, so folds can be pooled by adding them."""
    conf, pred = probs.max(dim=1)
    idx = (conf * N_BINS).long().clamp(0, N_BINS - 1)
    count = torch.zeros(N_BINS, dtype=torch.float64).index_add_(
        0, idx, torch.ones_like(conf, dtype=torch.float64)
    )
    conf_sum = torch.zeros(N_BINS, dtype=torch.float64).index_add_(0, idx, conf.double())
    correct = torch.zeros(N_BINS, dtype=torch.float64).index_add_(0, idx, (pred == y).double())
    return {
        "count": count.tolist(),
        "confidence_sum": conf_sum.tolist(),
        "correct": correct.tolist(),
    }


def _variant_config(config: Any, variant: str) -> Any:
    """The run's config evaluated on Decoy MNIST ``variant`` (for the clean-baseline runs)."""
    raw = config.to_dict()
    raw["data"] = {**raw["data"], "dataset": "decoy_mnist", "variant": variant}
    return load_config_dict(raw)


def _test_metrics(model: nn.Module, config: Any) -> tuple[dict[str, float], Tensor, Tensor]:
    """Test metrics of ``model`` on ``config``'s test set, with the probabilities and labels."""
    dm = ExperimentData(config)
    dm.setup("test")
    return evaluate_predictions(model, dm.test_dataloader(), config)


def _explanations(
    model: nn.Module, x: Tensor, bayesian: bool, samples: int, seed: int
) -> dict[str, Tensor]:
    """|input gradient| of the predicted class (mean network) and, for Bayesian models, its mean
    and std over ``samples`` posterior draws (explanation uncertainty)."""
    with torch.no_grad():
        pred = model.eval()(x).argmax(-1)
    out = {"pred": pred, "saliency": attribute(model, x, pred, method="saliency", abs=True)}
    if bayesian:
        eu = explanation_uncertainty(
            model, x, pred, method="saliency", samples=samples, seed=seed, abs=True
        )
        out["eu_mean"], out["eu_std"] = eu.mean, eu.std
    return {k: v.detach().cpu() for k, v in out.items()}


def analyse_run(
    run_dir: str | Path,
    variants: Sequence[str] | None = None,
    n_explain: int = 8,
    explain_samples: int = 10,
) -> dict[str, Any]:
    """Decoy-reliance diagnostics, reliability bins and explanations of a finished run.

    ``variants``: the Decoy MNIST variants to probe; default the run's own (a run trained on
    clean MNIST, the clean baseline, is probed on every variant given). Written atomically to
    ``analysis.json`` / ``analysis.pt`` in the run folder; an up-to-date analysis is reused.
    """
    run_dir = Path(run_dir)
    out_file = run_dir / ANALYSIS_FILE
    config, model = load_run(run_dir)
    own = config.data.variant if config.data.dataset == "decoy_mnist" else None
    wanted = [own] if own else list(variants or ())
    if not wanted:
        raise ValueError(
            f"{run_dir} was not trained on Decoy MNIST: pass the variants to probe it on"
        )
    if out_file.is_file():
        done = json.loads(out_file.read_text())
        if all(v in done for v in wanted):
            return done  # type: ignore[no-any-return]
    bayesian = config.model.bayesian
    mc = config.evaluation.mc_samples
    seed = config.data.seed
    result: dict[str, Any] = {}
    tensors: dict[str, Tensor] = {}
    for variant in wanted:
        probes = decoy_probes(variant, seed, config.data.root, config.data.max_test)
        cfg = config if own else _variant_config(config, variant)
        metrics_file = run_dir / "metrics.json"
        saved: tuple[Tensor, Tensor] | None
        if own and metrics_file.is_file():
            metrics = json.loads(metrics_file.read_text())
            saved = load_test_predictions(run_dir)
        else:
            metrics, test_probs, test_labels = _test_metrics(model, cfg)
            saved = (test_probs, test_labels)
        x, y = probes["test"]
        # reliability from the Monte-Carlo test predictions behind the metrics when they are of
        # these images in this order (the whole test set), else from a pass of its own
        if saved is not None and cfg.data.max_test is None and torch.equal(saved[1], y):
            probs = saved[0]
        else:
            probs = _probs(model, x, bayesian, mc, seed)
        result[variant] = {
            "metrics": metrics,
            "diagnostics": reliance(model, probes, bayesian, 0, seed),
            "reliability": _bins(probs, y),
        }
        k = min(n_explain, len(y))
        expl = _explanations(model, x[:k], bayesian, explain_samples, seed)
        tensors.update({f"{variant}/{name}": t for name, t in expl.items()})
        tensors[f"{variant}/images"] = x[:k]
        tensors[f"{variant}/masks"] = probes["masks"][0][:k]
        tensors[f"{variant}/labels"] = y[:k]
    with atomic_path(run_dir / TENSORS_FILE) as tmp:
        torch.save(tensors, tmp)
    atomic_write_json(out_file, result)
    return result


def load_tensors(run_dir: str | Path) -> dict[str, Tensor]:
    """The tensors :func:`analyse_run` saved (loaded with ``weights_only=True``)."""
    return torch.load(Path(run_dir) / TENSORS_FILE, map_location="cpu", weights_only=True)  # type: ignore[no-any-return]
