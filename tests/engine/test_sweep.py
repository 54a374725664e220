"""Sweeps: configurations x folds, validation-only selection, validation, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from rightfocus.engine.sweep import (
    BEST_FILE,
    KEY,
    SweepError,
    Trial,
    check_sweep,
    load_sweep,
    plan_trials,
    run_sweep,
    storage_url,
)

BASE = """\
experiment: base
data: {dataset: decoy_mnist, variant: color, max_train: 60, max_test: 20, batch_size: 20}
model: {name: lenet}
optim: {epochs: 1}
trainer: {progress_bar: false}
"""

# A stand-in for the training child: validation metric rises with lr, the test metric falls,
# and every configuration but the best-on-validation one gets an unreadable metrics.json, so a
# sweep that read test metrics of any other configuration would crash.
FAKE_RUNNER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path

    def fake_runner(config, overrides, delay={delay}, best_lr={best_lr}, fail=False):
        run_dir = Path(overrides["runs_dir"]) / overrides["experiment"] / overrides["run"]
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(Path(overrides["runs_dir"]) / "calls.log", "a") as fh:
            fh.write(overrides["run"] + "\\n")
        time.sleep(delay)
        if fail:
            return 3
        lr, fold = float(overrides["optim.lr"]), overrides.get("data.fold", 0)
        val = lr * 100 + fold / 100
        (run_dir / "metrics_val.json").write_text(json.dumps({{"balanced_accuracy": val}}))
        test = json.dumps({{"balanced_accuracy": 1 - val, "auc": None}})
        if best_lr is not None and lr != best_lr:
            test = "{{ test metrics must not be read"
        (run_dir / "metrics.json").write_text(test)
        return 0
    """
)


def _runner(delay: float = 0.0, best_lr: float | None = 2e-3, fail: bool = False) -> Any:
    ns: dict[str, Any] = {}
    exec(FAKE_RUNNER.format(delay=delay, best_lr=best_lr), ns)
    return lambda config, overrides: ns["fake_runner"](config, overrides, fail=fail)


def _write_sweep(tmp_path: Path, text: str | None = None, **extra: Any) -> Path:
    (tmp_path / "base.yaml").write_text(BASE)
    path = tmp_path / "sweep.yaml"
    if text is not None:
        path.write_text(text)
        return path
    spec = {"config": "base.yaml", "params": {"optim.lr": [1e-3, 2e-3]}, "folds": 2, **extra}
    path.write_text(yaml.safe_dump({k: v for k, v in spec.items() if v is not None}))
    return path


def _quiet(_: str) -> None:
    pass


def test_plan_is_configurations_each_on_every_fold(tmp_path: Path) -> None:
    spec = load_sweep(_write_sweep(tmp_path))
    trials = plan_trials(spec)
    assert [t.params for t in trials] == [{"optim.lr": 1e-3}, {"optim.lr": 2e-3}]
    runs = [r for t in trials for r in t.runs(spec.folds)]
    assert {(r.overrides["optim.lr"], r.overrides["data.fold"]) for r in runs} == {
        (1e-3, 0),
        (1e-3, 1),
        (2e-3, 0),
        (2e-3, 1),
    }
    assert all(r.overrides["data.folds"] == 2 for r in runs)
    assert len({r.name for r in runs}) == 4


def test_sweep_file_is_read_with_the_config_loader(tmp_path: Path) -> None:
    text = "config: base.yaml\nparams:\n  optim.lr: [1e-3, 5e-4]\n  optim.weight_decay: [0]\n"
    spec = load_sweep(_write_sweep(tmp_path, text))
    assert spec.params["optim.lr"] == [1e-3, 5e-4]  # floats, not the strings '1e-3'
    assert all(isinstance(v, float) for v in spec.params["optim.lr"])  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("config: base.yaml\nparamz: {}\n", "unknown keys \\['paramz'\\]"),
        ("config: base.yaml\nparams: {optim.lr: 1e-3}\n", "single value .*a list of values"),
        ("config: base.yaml\nparams: {optim.lr: [1e-3]}\nsampler: random\n", "needs n_trials"),
        (
            "config: base.yaml\nparams: {optim.lr: {low: 1e-4, high: 1e-2}}\n",
            "grid sweeps need a list",
        ),
        ("config: base.yaml\nparams: {optim.lr: [1e-3]\n", "not valid YAML"),
        ("- config\n- base.yaml\n", "must hold a mapping"),
        ("params: {optim.lr: [1e-3]}\n", "needs config:"),
        ("config: base.yaml\nfolds: 3\nparams: {data.fold: [0, 1]}\n", "must not vary data.fold"),
        ("config: base.yaml\nparams: {optim.lr: [1e-3]}\nn_trials: 4\n", "n_trials is for"),
        ("config: base.yaml\nparams: {optim.lr: [1e-3, 0.001]}\n", "lists a value twice"),
        ("config: base.yaml\nfolds: one\n", "folds: Input should be a valid integer"),
        ("config: missing.yaml\n", "missing.yaml .* does not exist"),
        (
            "config: base.yaml\nsampler: tpe\nn_trials: 2\nparams: {optim.lr: {low: 1, high: 0}}\n",
            r"^Invalid sweep file .*: params.optim.lr: low \(1.0\) must be below high \(0.0\)$",
        ),
        (
            "config: base.yaml\nsampler: tpe\nn_trials: 2\nparams: {optim.lr: {low: 1}}\n",
            r": params.optim.lr.high: Field required$",
        ),
    ],
)
def test_malformed_sweep_files_are_one_line_errors(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(SweepError, match=match) as err:
        load_sweep(_write_sweep(tmp_path, text))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("params", "extra", "match"),
    [
        ({"optim.lrr": [1e-3]}, {}, "optim.lrr.*did you mean 'lr'"),
        ({"optim.lr": [1e-3, -1.0]}, {}, "optim.lr=-1.0.*greater than 0"),
        ({"guidance.0.lam": [1.0]}, {}, "guidance.0.lam=1.0.*valid list"),
        ({"model.name": ["lenet", "lenett"]}, {}, "model.name=.lenett.*unknown model"),
        ({"data.class_weights": [[1.0, 2.0]]}, {}, "class_weights lists 2 weights.*10 classes"),
        ({"optim.lr": [1e-3]}, {"objective": "acuracy"}, "objective 'acuracy' is not one of"),
        ({"optim.epochs": {"low": 0, "high": 3, "integer": True}}, {"n_trials": 2}, "epochs"),
    ],
)
def test_params_and_objective_are_checked_against_the_config_schema(
    tmp_path: Path, params: dict, extra: dict, match: str
) -> None:
    sampler = "random" if "n_trials" in extra else "grid"
    spec = load_sweep(_write_sweep(tmp_path, params=params, sampler=sampler, **extra))
    with pytest.raises(SweepError, match=match) as err:
        run_sweep(spec, tmp_path / "out", dry_run=True, log=_quiet)
    assert "\n" not in str(err.value)
    with pytest.raises(SweepError):
        run_sweep(spec, tmp_path / "out", runner=_runner(), log=_quiet)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_selecting_on_validation_needs_a_validation_split(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(BASE + "data: {dataset: decoy_mnist, folds: 1}\n")
    path = tmp_path / "sweep.yaml"
    path.write_text("config: base.yaml\nparams: {optim.lr: [1e-3]}\n")
    with pytest.raises(SweepError, match=r"no validation split.*set folds"):
        check_sweep(load_sweep(path))


def test_storage_urls_are_checked() -> None:
    with pytest.raises(SweepError, match="is not a database URL"):
        storage_url("not a url")
    with pytest.raises(SweepError, match="unknown database kind 'http'"):
        storage_url("http://example.org/db")
    with pytest.raises(SweepError, match="driver is not installed") as err:
        storage_url("mysql://me:secret@host/db")
    assert "secret" not in str(err.value)  # passwords are never printed
    url = storage_url("postgresql://me:secret@host:5432/db")
    assert url == "postgresql+psycopg://me:secret@host:5432/db"  # psycopg 3, the extra


def test_unreachable_storage_is_one_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    spec = load_sweep(_write_sweep(tmp_path, storage="sqlite:////nonexistent-dir/x/sweep.db"))
    with pytest.raises(SweepError, match="Cannot open the sweep storage sqlite:////nonexistent"):
        run_sweep(spec, tmp_path / "out", runner=_runner(), log=_quiet)
    assert not (tmp_path / "out").exists()


def test_selection_uses_validation_metrics_and_reports_test_of_the_choice_only(
    tmp_path: Path,
) -> None:
    spec = load_sweep(_write_sweep(tmp_path))
    result = run_sweep(spec, tmp_path / "sweep", runner=_runner(), log=_quiet)
    values = {d["params"]["optim.lr"]: d["value"] for d in result.trials}
    assert values == pytest.approx({1e-3: 0.105, 2e-3: 0.205})  # mean over folds 0, 1
    assert result.best is not None
    assert result.best["params"] == {"optim.lr": 2e-3}  # best on validation (worst on test)
    assert result.best["fold_values"] == pytest.approx([0.2, 0.21])
    test = result.best["test"]
    assert test["balanced_accuracy"]["mean"] == pytest.approx(1 - 0.205)
    assert test["balanced_accuracy"]["folds"] == pytest.approx([0.8, 0.79])
    assert test["auc"] == {"mean": None, "std": None, "folds": [None, None]}  # undefined: null
    saved = json.loads((tmp_path / "sweep" / BEST_FILE).read_text())
    assert saved["params"] == {"optim.lr": 2e-3} and saved["value"] == pytest.approx(0.205)
    best_runs = [r.name for r in Trial({"optim.lr": 2e-3}).runs(2)]
    assert saved["runs"] == [f"runs/sweep/{name}" for name in best_runs]

    # minimize picks the other configuration, still on validation metrics
    spec = load_sweep(_write_sweep(tmp_path, direction="minimize"))
    result = run_sweep(spec, tmp_path / "min", runner=_runner(best_lr=1e-3), log=_quiet)
    assert result.best is not None and result.best["params"] == {"optim.lr": 1e-3}


def test_in_process_sweep_runs_each_fold_once_and_reruns_nothing(tmp_path: Path) -> None:
    spec = load_sweep(_write_sweep(tmp_path))
    assert len(run_sweep(spec, tmp_path / "sweep", runner=_runner(), log=_quiet).trials) == 2
    assert len(run_sweep(spec, tmp_path / "sweep", runner=_runner(), log=_quiet).trials) == 2
    calls = (tmp_path / "sweep" / "runs" / "calls.log").read_text().split()
    assert len(calls) == 4  # 2 configurations x 2 folds; the rerun ran nothing


def test_a_configuration_queued_twice_by_racing_workers_runs_once(tmp_path: Path) -> None:
    spec = load_sweep(_write_sweep(tmp_path))
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    storage = f"sqlite:///{sweep_dir / 'sweep.db'}"
    study = optuna.create_study(study_name="sweep", storage=storage)
    for t in plan_trials(spec) * 2:  # two workers that started together both queued the grid
        study.enqueue_trial({}, user_attrs={KEY: t.key}, skip_if_exists=False)
    assert len(run_sweep(spec, sweep_dir, runner=_runner(), log=_quiet).trials) == 2
    states = [t.state for t in optuna.load_study(study_name="sweep", storage=storage).trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 2
    assert states.count(optuna.trial.TrialState.PRUNED) == 2
    assert len((sweep_dir / "runs" / "calls.log").read_text().split()) == 4


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_random_and_tpe_sample_configurations_never_the_fold(tmp_path: Path, sampler: str) -> None:
    path = _write_sweep(
        tmp_path,
        sampler=sampler,
        n_trials=3,
        folds=3,
        params={"optim.lr": {"low": 1e-4, "high": 1e-2, "log": True}},
    )
    lines: list[str] = []
    spec = load_sweep(path)
    run_sweep(spec, tmp_path / "dry", dry_run=True, log=lines.append)
    assert lines == [
        f"3 configurations sampled ({sampler}) over: optim.lr; each x 3 folds = 9 runs; "
        "maximize the mean validation balanced_accuracy over folds"
    ]
    result = run_sweep(spec, tmp_path / "sweep", runner=_runner(best_lr=None), log=_quiet)
    assert len(result.trials) == 3
    for d in result.trials:
        assert list(d["params"]) == ["optim.lr"]  # the fold is not a hyperparameter
        assert 1e-4 <= d["params"]["optim.lr"] <= 1e-2
        lr = d["params"]["optim.lr"]
        assert d["fold_values"] == pytest.approx([lr * 100, lr * 100 + 0.01, lr * 100 + 0.02])
        assert d["value"] == pytest.approx(lr * 100 + 0.01)  # the mean over the 3 folds
    calls = (tmp_path / "sweep" / "runs" / "calls.log").read_text().split()
    assert len(calls) == 9 and len(set(calls)) == 9
    assert sorted(c[-5:] for c in calls) == ["fold0"] * 3 + ["fold1"] * 3 + ["fold2"] * 3


def test_grid_dry_run_lists_configurations_times_folds_and_writes_nothing(tmp_path: Path) -> None:
    lines: list[str] = []
    spec = load_sweep(_write_sweep(tmp_path, folds=3))
    result = run_sweep(spec, tmp_path / "out", dry_run=True, log=lines.append)
    assert [t.params for t in result.planned] == [{"optim.lr": 1e-3}, {"optim.lr": 2e-3}]
    assert lines[-1] == (
        "2 configurations x 3 folds = 6 runs (grid); "
        "maximize the mean validation balanced_accuracy over folds"
    )
    assert lines[0].endswith('{"optim.lr": 0.001} x 3 folds')
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("sampler", ["grid", "random"])
def test_a_sweep_whose_every_trial_fails_raises(tmp_path: Path, sampler: str) -> None:
    extra: dict[str, Any] = {"sampler": sampler}
    if sampler == "random":
        extra.update(n_trials=2, params={"optim.lr": {"low": 1e-4, "high": 1e-2}})
    spec = load_sweep(_write_sweep(tmp_path, **extra))
    lines: list[str] = []
    with pytest.raises(SweepError, match=r"Every trial of the sweep failed \(2\).*exit code 3"):
        run_sweep(spec, tmp_path / "sweep", runner=_runner(fail=True), log=lines.append)
    assert sum("failed" in line for line in lines) == 2  # random: failures are not redrawn
    assert not (tmp_path / "sweep" / BEST_FILE).exists()


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ('{"balanced_accuracy": null}', "validation balanced_accuracy is undefined in {}"),
        ("{ broken", "{} is not valid JSON"),
        ('{"f1": 0.5}', "{} has no 'balanced_accuracy'"),
    ],
)
def test_an_unusable_validation_objective_fails_the_trial_clearly(
    tmp_path: Path, content: str, why: str
) -> None:
    spec = load_sweep(_write_sweep(tmp_path))
    good = _runner(best_lr=None)

    def unusable_for_small_lr(config: Path, overrides: dict[str, Any]) -> int:
        code = good(config, overrides)
        if overrides["optim.lr"] == 1e-3:  # e.g. AUC with a class absent is written as null
            run_dir = Path(overrides["runs_dir"]) / overrides["experiment"] / overrides["run"]
            (run_dir / "metrics_val.json").write_text(content)
        return code

    lines: list[str] = []
    result = run_sweep(spec, tmp_path / "sweep", runner=unusable_for_small_lr, log=lines.append)
    assert [d["params"] for d in result.trials] == [{"optim.lr": 2e-3}]
    name = Trial({"optim.lr": 1e-3}).runs(2)[0].name
    val_file = tmp_path / "sweep" / "runs" / "sweep" / name / "metrics_val.json"
    assert len(result.failed) == 1 and result.failed[0]["params"] == {"optim.lr": 1e-3}
    assert result.failed[0]["error"].startswith(why.format(val_file))
    assert any(line.startswith("trial 0 failed: ") for line in lines)


@pytest.mark.slow
def test_sweep_killed_mid_trial_resumes_with_every_configuration_once(tmp_path: Path) -> None:
    path = _write_sweep(tmp_path, heartbeat_interval=1, grace_period=2)
    script = tmp_path / "drive.py"
    script.write_text(
        FAKE_RUNNER.format(delay=1.5, best_lr=None)
        + textwrap.dedent(
            f"""
            from rightfocus.engine.sweep import load_sweep, run_sweep
            run_sweep(load_sweep({str(path)!r}), {str(tmp_path / "sweep")!r}, runner=fake_runner)
            """
        )
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE)
    calls = tmp_path / "sweep" / "runs" / "calls.log"
    deadline = time.time() + 60
    while time.time() < deadline:  # kill while the second fold of the first trial runs
        if calls.exists() and len(calls.read_text().split()) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    spec = load_sweep(path)
    storage = f"sqlite:///{tmp_path / 'sweep' / 'sweep.db'}"
    before = optuna.load_study(study_name="sweep", storage=storage).get_trials()
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in before) < 2

    subprocess.run([sys.executable, str(script)], env=env, check=True, capture_output=True)
    study = optuna.load_study(study_name="sweep", storage=storage)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    keys = [t.user_attrs[KEY] for t in complete]
    assert sorted(keys) == sorted(t.key for t in plan_trials(spec))  # every trial, each once
    runs = calls.read_text().split()
    assert runs[0] == Trial({"optim.lr": 1e-3}).runs(2)[0].name
    assert runs.count(runs[0]) == 1  # the killed trial's finished fold was not rerun
    assert len(runs) == 5  # 4 runs + the interrupted one again
    assert (tmp_path / "sweep" / BEST_FILE).is_file()


@pytest.mark.parametrize("sampler", ["grid", "random"])
def test_ctrl_c_requeues_the_trial_for_the_next_run(tmp_path: Path, sampler: str) -> None:
    extra: dict[str, Any] = {"sampler": sampler, "grace_period": 600}
    if sampler == "random":
        extra.update(n_trials=2, params={"optim.lr": {"low": 1e-4, "high": 1e-2}})
    spec = load_sweep(_write_sweep(tmp_path, **extra))
    seen: list[dict[str, Any]] = []

    def interrupted(config: Path, overrides: dict[str, Any]) -> int:
        seen.append(overrides)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, tmp_path / "sweep", runner=interrupted, log=_quiet)
    storage = f"sqlite:///{tmp_path / 'sweep' / 'sweep.db'}"
    trials = optuna.load_study(study_name="sweep", storage=storage).trials
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]  # no 600 s wait
    # the next run starts with the interrupted configuration and finishes the sweep
    result = run_sweep(spec, tmp_path / "sweep", runner=_runner(best_lr=None), log=_quiet)
    assert len(result.trials) == 2
    assert seen[0]["optim.lr"] in [d["params"]["optim.lr"] for d in result.trials]


def test_draws_are_reproducible_and_differ_between_trials_asked_together() -> None:
    from rightfocus.engine.sweep import _sampler

    spec = load_sweep_from({"sampler": "random", "n_trials": 2})
    dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    a, b = (optuna.create_study(sampler=_sampler(spec)) for _ in range(2))
    ta1, ta2 = a.ask(dist), a.ask(dist)  # two workers asking at the same time: trials 0, 1
    assert ta1.params != ta2.params
    assert b.ask(dist).params == ta1.params  # the same sweep draws the same configurations


def test_a_draw_beyond_n_trials_by_racing_workers_is_dropped() -> None:
    from rightfocus.engine.sweep import _over_budget, _sampler

    spec = load_sweep_from({"sampler": "random", "n_trials": 2})
    dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    study = optuna.create_study(sampler=_sampler(spec))
    study.tell(study.ask(dist), 0.5)  # one configuration finished
    x, y = study.ask(dist), study.ask(dist)  # two workers ask at the same moment
    assert not _over_budget(study, x.number, spec)
    assert _over_budget(study, y.number, spec)  # the third draw of a 2-trial sweep
    study.tell(x, state=optuna.trial.TrialState.FAIL)  # x's worker was interrupted ...
    study.enqueue_trial(x.params)  # ... and x requeued: the retry replaces it
    assert not _over_budget(study, study.ask(dist).number, spec)


def test_tpe_draws_learn_from_finished_trials() -> None:
    import statistics

    from rightfocus.engine.sweep import _sampler

    late = {}
    for kind in ("random", "tpe"):
        spec = load_sweep_from({"sampler": kind, "n_trials": 2})
        study = optuna.create_study(sampler=_sampler(spec), direction="minimize")
        study.optimize(lambda t: (t.suggest_float("x", 0.0, 1.0) - 0.3) ** 2, n_trials=40)
        late[kind] = statistics.median(abs(t.params["x"] - 0.3) for t in study.trials[-15:])
    assert late["tpe"] < 0.6 * late["random"]  # seeded per draw, TPE still models the history


def load_sweep_from(extra: dict[str, Any]) -> Any:
    from rightfocus.engine.sweep import SweepSpec

    return SweepSpec.model_validate({"config": "x.yaml", "params": {}, **extra})


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:ROC-AUC is undefined")  # 30 digits lack some classes
def test_training_child_writes_validation_and_test_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rightfocus.engine.sweep import VAL_METRICS_FILE, _child, train_command

    config = tmp_path / "base.yaml"
    config.write_text(BASE.replace("max_train: 60", "max_train: 30"))
    overrides = {"optim.lr": 1e-3, "data.folds": 2, "data.fold": 1, "runs_dir": str(tmp_path)}
    overrides.update(experiment="e", run="r", **{"evaluation.metrics": ["balanced_accuracy"]})
    argv = train_command(config, overrides)[3:]  # what the child process receives
    assert argv[:2] == [str(config), "--set"]
    assert _child(argv) == 0
    val = json.loads((tmp_path / "e" / "r" / VAL_METRICS_FILE).read_text())
    test = json.loads((tmp_path / "e" / "r" / "metrics.json").read_text())
    assert 0.0 <= val["balanced_accuracy"] <= 1.0 and 0.0 <= test["balanced_accuracy"] <= 1.0
    # a user error is one line, exit code 2
    assert _child([str(config), "--set", "optim.lrr=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "did you mean 'lr'" in err[0]


def test_shipped_sweeps_load_by_name() -> None:
    from rightfocus import configs

    spec = load_sweep("sweeps/decoy_lambda")
    assert spec.config == configs.path("decoy_mnist_color_lenet").resolve()
    with pytest.raises(SweepError, match="shipped sweeps, usable by name: sweeps/decoy_lambda"):
        load_sweep("sweeps/decoy_lambdaa")


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).parents[2] / "configs" / "sweeps").glob("*.yaml")),
    ids=lambda p: p.name,
)
def test_example_sweeps_are_valid(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_dataset: Any
) -> None:
    monkeypatch.chdir(tmp_path)  # base configs that read files get a tiny copy of their data
    spec = load_sweep(path)
    base = yaml.safe_load(Path(spec.config).read_text())
    root = base.get("data", {}).get("root")
    if root is not None:
        write_dataset(base["data"]["dataset"], tmp_path / root)
    check_sweep(spec)
    if spec.sampler == "grid":
        trials = plan_trials(spec)
        assert trials and len({t.key for t in trials}) == len(trials)
