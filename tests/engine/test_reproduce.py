"""`rightfocus reproduce`: the Decoy MNIST tables (slow) and clear errors for missing data."""

from __future__ import annotations

from pathlib import Path

import pytest

from rightfocus.engine.reproduce import decoy_mnist_configs, reproduce


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
def test_quick_decoy_mnist_position_shows_the_shortcut_and_rrr_removes_it(tmp_path: Path) -> None:
    """A tiny version of the quick reproduction (1 fold, 6 epochs at lr 3e-3 / rho -3 to learn
    fast, 2 MC samples): on the position variant the plain model follows the decoy on blank
    images far above chance (0.10), RRR does not; every promised figure exists and is linked."""
    import re

    from rightfocus.engine.reproduce import reproduce_decoy_mnist

    result = reproduce_decoy_mnist(
        tmp_path / "runs",
        quick=True,
        variants=("position",),
        methods=("none", "rrr"),
        folds=(0,),
        overrides=[
            "optim.epochs=6",
            "optim.lr=3e-3",
            "model.rho_init=-3",
            "evaluation.mc_samples=2",
        ],
        log=print,
        jobs=2,  # the three runs in two worker processes
    )
    assert result.jobs == 2 and len(result.run_seconds) == 3
    assert 0.0 < result.overhead_share < 1.0
    reliance = result.tables["Decoy reliance"]

    def value(metric: str, method: str) -> float:
        return float(reliance.loc[("position", metric), method].strip("*"))

    assert value("follows_decoy", "none") > 0.3
    assert value("follows_decoy", "rrr") < 0.15
    assert value("clean_accuracy", "clean") > 0.8
    for table in result.tables.values():
        assert "nan" not in table.to_string()  # one fold: values, not "± nan"
    md = result.report["markdown"].read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    for name in ("explanations", "reliability", "explanation_uncertainty", "training_curves"):
        assert any(f"position_{name}.png" in link for link in links), name
    assert all((result.report["markdown"].parent / link).is_file() for link in links)
    page = result.report["html"].read_text()
    assert page.count("data:image/png;base64,") == len(links)
    for heading in ("Table 1", "Table 2", "Decoy reliance", "Calibration", "Protocol notes"):
        assert heading in page


def test_overhead_share_counts_the_time_of_every_worker() -> None:
    from rightfocus.engine.reproduce import ReproduceResult

    one = ReproduceResult(Path("r"), {}, {}, seconds=100.0, train_step_seconds=80.0)
    two = ReproduceResult(Path("r"), {}, {}, seconds=50.0, train_step_seconds=80.0, jobs=2)
    assert one.overhead_share == pytest.approx(0.2)
    assert two.overhead_share == pytest.approx(0.2)  # 2 workers x 50 s, 80 s of steps


def test_auto_jobs_one_per_core_on_the_cpu(tmp_path: Path) -> None:
    import os

    from rightfocus.engine.reproduce import auto_jobs, decoy_mnist_configs

    configs = decoy_mnist_configs(tmp_path, variants=("position",), methods=("none",), folds=(0,))
    assert auto_jobs(configs) == max(1, min(4, len(os.sched_getaffinity(0))))


def test_runs_are_started_longest_first(tmp_path: Path) -> None:
    from rightfocus.engine.reproduce import estimated_cost

    configs = decoy_mnist_configs(tmp_path, quick=True)
    cost = {c.run.split("_fold")[0]: estimated_cost(c) for c in configs}
    assert cost["rrr"] > cost["counterexamples"] > cost["bayes_feedback"] > cost["none"]
    assert cost["none"] == 30.0  # epochs x 1 for plain training
    # a run's analysis follows its training in the same worker: clean runs probe every variant
    analysed = {
        (c.data.dataset, c.run.split("_fold")[0]): estimated_cost(c, ("position", "color"))
        for c in configs
    }
    assert analysed[("mnist", "none")] > analysed[("decoy_mnist", "none")] > 30.0


def test_each_run_is_analysed_by_the_worker_that_trained_it(tmp_path: Path) -> None:
    """``analyse`` makes ``_run_all`` leave every run with its decoy analysis (the clean
    baseline probed on the variants given), so the report step only reads them."""
    import json

    from rightfocus.engine.reproduce import _run_all

    configs = decoy_mnist_configs(
        tmp_path,
        variants=("position",),
        methods=("none",),
        folds=(0,),
        quick=True,
        overrides=["optim.epochs=1", "evaluation.mc_samples=2"],
    )
    seconds, steps = _run_all(configs, lambda s: None, jobs=1, analyse=("position",))
    assert len(seconds) == 2 and steps > 0
    for c in configs:
        analysis = json.loads((c.run_dir / "analysis.json").read_text())
        assert list(analysis) == ["position"], c.run_dir
