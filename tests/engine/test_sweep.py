"""Sweeps: planning, validation, and resume after the sweep process is SIGKILLed mid-trial."""

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

from rightfocus.engine.sweep import KEY, Trial, load_sweep, plan_trials, run_sweep

FAKE_RUNNER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path

    def fake_runner(config, overrides, delay={delay}):
        run_dir = Path(overrides["runs_dir"]) / overrides["experiment"] / overrides["run"]
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(Path(overrides["runs_dir"]) / "calls.log", "a") as fh:
            fh.write(overrides["run"] + "\\n")
        time.sleep(delay)
        value = float(overrides["optim.lr"]) * 1000 + overrides.get("data.fold", 0)
        (run_dir / "metrics.json").write_text(json.dumps({{"balanced_accuracy": value}}))
        return 0
    """
)


def _write_sweep(tmp_path: Path, **extra: Any) -> Path:
    config = tmp_path / "base.yaml"
    config.write_text("experiment: base\n")
    spec = {"config": "base.yaml", "params": {"optim.lr": [1e-3, 2e-3]}, "folds": 2, **extra}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_plan_is_grid_times_folds(tmp_path: Path) -> None:
    spec = load_sweep(_write_sweep(tmp_path))
    trials = plan_trials(spec)
    assert len(trials) == 4
    assert {(t.overrides["optim.lr"], t.overrides["data.fold"]) for t in trials} == {
        (1e-3, 0),
        (1e-3, 1),
        (2e-3, 0),
        (2e-3, 1),
    }
    assert len({t.run_name for t in trials}) == 4


def test_bad_sweep_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="paramz"):
        load_sweep(_write_sweep(tmp_path, paramz={}))
    with pytest.raises(ValueError, match="needs n_trials"):
        load_sweep(_write_sweep(tmp_path, sampler="random"))
    path = _write_sweep(tmp_path, params={"optim.lr": {"low": 1e-4, "high": 1e-2, "log": True}})
    with pytest.raises(ValueError, match="grid sweeps need a list"):
        load_sweep(path)


def test_in_process_sweep_runs_each_trial_once_and_reruns_nothing(tmp_path: Path) -> None:
    ns: dict[str, Any] = {}
    exec(FAKE_RUNNER.format(delay=0), ns)
    spec = load_sweep(_write_sweep(tmp_path))
    done = run_sweep(spec, tmp_path / "sweep", runner=ns["fake_runner"], log=lambda _: None)
    assert len(done) == 4
    again = run_sweep(spec, tmp_path / "sweep", runner=ns["fake_runner"], log=lambda _: None)
    assert len(again) == 4
    calls = (tmp_path / "sweep" / "runs" / "calls.log").read_text().split()
    assert len(calls) == 4  # the rerun ran nothing


def test_random_sweep_samples_n_trials(tmp_path: Path) -> None:
    ns: dict[str, Any] = {}
    exec(FAKE_RUNNER.format(delay=0), ns)
    path = _write_sweep(
        tmp_path,
        sampler="random",
        n_trials=3,
        folds=None,
        params={"optim.lr": {"low": 1e-4, "high": 1e-2, "log": True}},
    )
    spec = load_sweep(path)
    done = run_sweep(spec, tmp_path / "sweep", runner=ns["fake_runner"], log=lambda _: None)
    assert len(done) == 3
    assert all(1e-4 <= d["optim.lr"] <= 1e-2 for d in done)


def test_sweep_killed_mid_trial_resumes_with_every_trial_once(tmp_path: Path) -> None:
    path = _write_sweep(tmp_path, heartbeat_interval=1, grace_period=2)
    script = tmp_path / "drive.py"
    script.write_text(
        FAKE_RUNNER.format(delay=1.5)
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
    while time.time() < deadline:  # kill while the second trial is running
        if calls.exists() and len(calls.read_text().split()) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    spec = load_sweep(path)
    storage = f"sqlite:///{tmp_path / 'sweep' / 'sweep.db'}"
    before = optuna.load_study(study_name="sweep", storage=storage).get_trials()
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in before) < 4

    subprocess.run([sys.executable, str(script)], env=env, check=True, capture_output=True)
    study = optuna.load_study(study_name="sweep", storage=storage)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    keys = [t.user_attrs[KEY] for t in complete]
    assert sorted(keys) == sorted(t.key for t in plan_trials(spec))  # every trial, each once
    for t in complete:
        trial = Trial(json.loads(t.user_attrs[KEY]))
        assert (tmp_path / "sweep" / "runs" / "sweep" / trial.run_name / "metrics.json").is_file()


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).parents[2] / "configs" / "sweeps").glob("*.yaml")),
    ids=lambda p: p.name,
)
def test_example_sweeps_plan_valid_trials(path: Path) -> None:
    spec = load_sweep(path)
    trials = plan_trials(spec)
    assert trials and len({t.key for t in trials}) == len(trials)
