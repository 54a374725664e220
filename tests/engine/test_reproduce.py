"""`rightfocus reproduce`: the Decoy MNIST tables (slow) and clear errors for missing data."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from rightfocus.engine.reproduce import DECOY_METHODS, decoy_mnist_configs, reproduce


def test_decoy_configs_cover_variants_methods_folds(tmp_path: Path) -> None:
    configs = decoy_mnist_configs(tmp_path, quick=True)
    assert len(configs) == 2 * 4 * 3 + 3  # + the clean baseline per fold
    runs = {(c.data.variant, c.run) for c in configs}
    assert ("color", "bayes_feedback_fold2") in runs and ("position", "rrr_fold0") in runs
    assert configs[0].data.variant == "position"  # the headline comes first
    fb = next(
        c for c in configs if c.run.startswith("bayes_feedback") and c.data.variant == "color"
    )
    assert fb.guidance[0].name == "bayes_feedback" and fb.model.bayesian
    assert {c.data.fold for c in configs} == {0, 1, 2}
    assert all(c.data.feedback_fraction == 0.7 for c in configs)
    # the paper's rho -2 / lr 1e-3 also in the quick preset, long enough to take the shortcut
    assert {(c.model.rho_init, c.optim.lr, c.optim.epochs) for c in configs} == {(-2.0, 1e-3, 30)}
    clean = [c for c in configs if c.data.dataset == "mnist"]
    assert len(clean) == 3 and all(not c.guidance for c in clean)
    full = decoy_mnist_configs(tmp_path, variants=("ross", "cdep"), clean_baseline=False)
    assert {(c.data.variant, c.run.split("_fold")[0]) for c in full} == {
        (v, m) for v in ("ross", "cdep") for m in ("none", "rrr")
    }
    assert {c.optim.epochs for c in full} == {200}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"variants": ("colour",)}, "variants.*position, color, ross, cdep"),
        ({"methods": ("rrr", "cdep")}, "methods.*none, bayes_feedback"),
    ],
)
def test_unknown_variants_or_methods_list_the_choices(tmp_path: Path, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        decoy_mnist_configs(tmp_path, **kwargs)


@pytest.mark.parametrize("name", ["isic", "pets", "sbd"])
def test_alexnet_experiments_refuse_to_train_from_scratch_silently(
    tmp_path: Path, name: str
) -> None:
    with pytest.raises(ValueError, match=r"model\.weights=<file>.*model\.weights=random"):
        reproduce(name, tmp_path / "runs", root=str(tmp_path))
    # asked for explicitly (or given a file), it goes on to the data check
    for weights in ("random", str(tmp_path / "alexnet.pth")):
        with pytest.raises(FileNotFoundError, match="not available"):
            reproduce(
                name,
                tmp_path / "runs",
                root=str(tmp_path / "nothing-here"),
                overrides=[f"model.weights={weights}"],
            )


@pytest.mark.parametrize("name", ["isic", "pets", "sbd"])
def test_image_experiments_say_what_is_missing(tmp_path: Path, name: str) -> None:
    with pytest.raises(FileNotFoundError, match="--root"):
        reproduce(name, tmp_path / "runs", root=None)
    with pytest.raises(FileNotFoundError, match="not available"):
        reproduce(
            name,
            tmp_path / "runs",
            root=str(tmp_path / "nothing-here"),
            overrides=["model.weights=random"],
        )


def test_unknown_experiment_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="decoy-mnist"):
        reproduce("mnist-decoy", tmp_path)


@pytest.mark.slow
def test_quick_decoy_mnist_color_reproduces_the_papers_ordering(tmp_path: Path) -> None:
    """The --quick preset on Decoy MNIST color, 3 folds: every cell filled; feedback beats no
    feedback in balanced accuracy and lowers the overlap (the paper's Tables 1 and 2)."""
    from rightfocus.engine.reproduce import reproduce_decoy_mnist

    result = reproduce_decoy_mnist(tmp_path / "runs", quick=True, variants=("color",), log=print)
    t1, t2 = result.tables["Table 1"], result.tables["Table 2"]
    for table, metrics in ((t1, ("balanced_accuracy", "f1")), (t2, ("auc", "overlap"))):
        for metric in metrics:
            for method in DECOY_METHODS:
                cell = table.loc[("color", metric), method]
                assert cell and "±" in cell, (metric, method, cell)

    def mean(table, metric, method):  # type: ignore[no-untyped-def]
        return float(table.loc[("color", metric), method].strip("*").split(" ± ")[0])

    assert mean(t1, "balanced_accuracy", "bayes_feedback") > mean(t1, "balanced_accuracy", "none")
    assert mean(t2, "overlap", "bayes_feedback") < mean(t2, "overlap", "none")
    assert not math.isnan(mean(t2, "auc", "rrr"))
    assert result.train_step_seconds > 0 and 0 < result.overhead_share < 1
    page = result.report["html"].read_text()
    assert "Table 1" in page and "Table 2" in page
