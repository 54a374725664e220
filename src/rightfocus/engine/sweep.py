"""Sweeps over config fields x folds with Optuna, resumable after a crash, one process per trial.

A sweep file names a base experiment config and the fields to vary::

    config: ../configs/decoy_mnist_color_lenet.yaml   # relative to this file
    params:                       # dotted config fields
      optim.lr: [1.0e-3, 1.0e-4]  # grid: a list of values
      guidance.0.lam: {low: 1.0e-6, high: 1.0e-3, log: true}   # random / tpe: a range
    folds: 3                      # also run every fold (data.fold = 0..folds-1)
    sampler: grid                 # grid | random | tpe
    n_trials: 20                  # random / tpe only
    objective: balanced_accuracy  # a key of metrics.json
    direction: maximize

Trials live in an Optuna study; the storage is ``sqlite:///<sweep folder>/sweep.db`` unless
``storage`` (or ``--storage``) names any database URL, e.g. PostgreSQL, so that many workers
on many machines share one study: start ``rightfocus sweep FILE --storage URL`` on each. Every
trial runs ``rightfocus train`` in its own child process (memory is returned; the child dies
with its worker). Workers record heartbeats; a trial whose worker was killed goes stale and is
re-queued with the same parameters (Optuna's RetryHeartbeatStaleTrialCallback). Because the
trial's run folder is deterministic, the retry resumes from the run's last checkpoint. Rerun
the same command after a crash: finished trials are not rerun, interrupted ones are retried.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import json
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = ["SweepSpec", "Trial", "load_sweep", "plan_trials", "run_sweep"]

KEY = "trial_key"


class RangeParam(BaseModel):
    """A numeric range for random / TPE sampling."""

    model_config = ConfigDict(extra="forbid")
    low: float
    high: float
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _check(self) -> RangeParam:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class SweepSpec(BaseModel):
    """A validated sweep file (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")
    config: Path
    params: dict[str, list[Any] | RangeParam] = Field(default_factory=dict)
    folds: int | None = Field(default=None, ge=2)
    sampler: Literal["grid", "random", "tpe"] = "grid"
    n_trials: int | None = Field(default=None, ge=1)
    objective: str = "balanced_accuracy"
    direction: Literal["maximize", "minimize"] = "maximize"
    storage: str | None = None
    study_name: str | None = None
    seed: int = 0
    heartbeat_interval: int = Field(default=10, ge=1)
    grace_period: int = Field(default=30, ge=2)
    max_retry: int = Field(default=3, ge=0)

    @model_validator(mode="after")
    def _check(self) -> SweepSpec:
        ranges = [k for k, v in self.params.items() if isinstance(v, RangeParam)]
        if self.sampler == "grid":
            if ranges:
                raise ValueError(
                    f"grid sweeps need a list of values for every param; {ranges} are ranges "
                    "(use sampler: random or tpe for ranges)"
                )
            empty = [k for k, v in self.params.items() if isinstance(v, list) and not v]
            if empty:
                raise ValueError(f"params {empty} have an empty list of values")
        elif self.n_trials is None:
            raise ValueError(f"sampler {self.sampler!r} needs n_trials")
        if self.heartbeat_interval >= self.grace_period:
            raise ValueError("grace_period must be longer than heartbeat_interval")
        return self


@dataclass(frozen=True)
class Trial:
    """One planned trial: config overrides and the run name they map to."""

    overrides: dict[str, Any]

    @property
    def key(self) -> str:
        return json.dumps(self.overrides, sort_keys=True, default=str)

    @property
    def run_name(self) -> str:
        parts = [f"{k.split('.')[-1]}={v}" for k, v in sorted(self.overrides.items())]
        digest = hashlib.sha1(self.key.encode()).hexdigest()[:8]
        text = "_".join(parts)[:80].replace("/", "-").replace(" ", "")
        return f"{text}_{digest}" if text else digest


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file; ``config`` is resolved relative to the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Sweep file {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a mapping of sweep settings")
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as err:
        allowed = ", ".join(SweepSpec.model_fields)
        raise ValueError(f"Invalid sweep file {path}:\n{err}\nAllowed keys: {allowed}") from None
    if not spec.config.is_absolute():
        spec.config = (path.parent / spec.config).resolve()
    if not spec.config.is_file():
        raise FileNotFoundError(f"The sweep's base config {spec.config} does not exist")
    return spec


def _with_folds(spec: SweepSpec, overrides: dict[str, Any]) -> list[dict[str, Any]]:
    if spec.folds is None:
        return [overrides]
    return [{**overrides, "data.folds": spec.folds, "data.fold": f} for f in range(spec.folds)]


def plan_trials(spec: SweepSpec) -> list[Trial]:
    """The grid's trials in a fixed order (for random/TPE: the fold copies of one draw)."""
    if spec.sampler != "grid":
        raise ValueError("only grid sweeps have a fixed plan; random/TPE trials are sampled")
    names = list(spec.params)
    values = [spec.params[n] for n in names]
    trials = []
    for combo in itertools.product(*values):  # type: ignore[arg-type]
        for overrides in _with_folds(spec, dict(zip(names, combo, strict=True))):
            trials.append(Trial(overrides))
    return trials


def _storage(spec: SweepSpec, sweep_dir: Path) -> optuna.storages.RDBStorage:
    url = spec.storage or f"sqlite:///{(sweep_dir / 'sweep.db').resolve()}"
    return optuna.storages.RDBStorage(
        url,
        heartbeat_interval=spec.heartbeat_interval,
        grace_period=spec.grace_period,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
            max_retry=spec.max_retry
        ),
    )


def _sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=spec.seed)
    return optuna.samplers.RandomSampler(seed=spec.seed)


def _distributions(spec: SweepSpec) -> dict[str, optuna.distributions.BaseDistribution]:
    out: dict[str, optuna.distributions.BaseDistribution] = {}
    for name, p in spec.params.items():
        if isinstance(p, RangeParam):
            if p.integer:
                out[name] = optuna.distributions.IntDistribution(int(p.low), int(p.high), log=p.log)
            else:
                out[name] = optuna.distributions.FloatDistribution(p.low, p.high, log=p.log)
        else:
            out[name] = optuna.distributions.CategoricalDistribution(p)
    if spec.folds is not None:
        out["data.fold"] = optuna.distributions.IntDistribution(0, spec.folds - 1)
    return out


class _Heartbeat:
    """Record a trial's heartbeat in the storage from a thread while the trial runs."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_id: int, interval: int) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, args=(storage, trial_id, interval), daemon=True
        )

    def _beat(self, storage: optuna.storages.RDBStorage, trial_id: int, interval: int) -> None:
        while True:
            storage.record_heartbeat(trial_id)
            if self._stop.wait(interval):
                return

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def train_command(config: Path, overrides: dict[str, Any]) -> list[str]:
    """The child-process command that trains (or resumes) one trial's run."""
    cmd = [sys.executable, "-m", "rightfocus.cli", "train", str(config)]
    for key, value in overrides.items():
        cmd += ["--set", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    return cmd


def _default_runner(config: Path, overrides: dict[str, Any]) -> int:
    proc = subprocess.run(
        train_command(config, overrides),
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        check=False,
    )
    return proc.returncode


Runner = Callable[[Path, dict[str, Any]], int]


def _trial_overrides(trial: Trial, spec: SweepSpec, sweep_dir: Path) -> dict[str, Any]:
    return {
        **trial.overrides,
        "experiment": spec_experiment_name(spec, sweep_dir),
        "run": trial.run_name,
        "runs_dir": str(sweep_dir / "runs"),
    }


def spec_experiment_name(spec: SweepSpec, sweep_dir: Path) -> str:
    return spec.study_name or sweep_dir.name


def _read_objective(run_dir: Path, objective: str) -> float:
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():
        raise RuntimeError(f"The trial's run {run_dir} finished without metrics.json")
    metrics = json.loads(metrics_file.read_text())
    if objective not in metrics:
        raise KeyError(
            f"objective {objective!r} is not in {metrics_file}; it has {', '.join(metrics)}"
        )
    return float(metrics[objective])


def run_sweep(
    spec: SweepSpec,
    sweep_dir: str | Path,
    runner: Runner | None = None,
    dry_run: bool = False,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run (or resume) the sweep; returns one dict per finished trial (overrides + value).

    ``runner(config, overrides) -> exit code`` runs one trial (default: a ``rightfocus train``
    child process); the trial's results are read from
    ``<sweep_dir>/runs/<experiment>/<run>/metrics.json``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        return _sweep(spec, Path(sweep_dir), runner, dry_run, log)


def _sweep(
    spec: SweepSpec,
    sweep_dir: Path,
    runner: Runner | None,
    dry_run: bool,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    planned = plan_trials(spec) if spec.sampler == "grid" else None
    if dry_run:
        if planned is None:
            dist = _distributions(spec)
            log(f"{spec.n_trials} trials sampled ({spec.sampler}) over: {', '.join(dist)}")
            return []
        for t in planned:
            log(f"{t.run_name}: {t.key}")
        return [dict(t.overrides) for t in planned]
    sweep_dir.mkdir(parents=True, exist_ok=True)
    storage = _storage(spec, sweep_dir)
    name = spec_experiment_name(spec, sweep_dir)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        load_if_exists=True,
        direction=spec.direction,
        sampler=_sampler(spec),
    )
    run = runner or _default_runner
    if planned is not None:
        _enqueue_grid(study, planned)
    while True:
        optuna.storages.fail_stale_trials(study)
        trial = _next_trial(study, spec)
        if trial is None:
            break
        if trial is _WAIT:  # another worker's trial runs (or went stale and will be re-queued)
            time.sleep(spec.heartbeat_interval)
            continue
        _run_one(study, storage, spec, trial, sweep_dir, run, log)
    return _finished(study)


def _enqueue_grid(study: optuna.Study, planned: Sequence[Trial]) -> None:
    """Queue every planned trial that is not finished, queued or running (failed ones again)."""
    states = optuna.trial.TrialState
    live = (states.COMPLETE, states.WAITING, states.RUNNING)
    known = {t.user_attrs.get(KEY) for t in study.get_trials(deepcopy=False) if t.state in live}
    for t in planned:
        if t.key not in known:
            study.enqueue_trial({}, user_attrs={KEY: t.key}, skip_if_exists=False)


_WAIT = object()


def _next_trial(study: optuna.Study, spec: SweepSpec) -> Any:
    """The next trial to run, ``_WAIT`` while only other workers' trials run, or None when done."""
    states = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    waiting = [t for t in trials if t.state == states.WAITING]
    running = [t for t in trials if t.state == states.RUNNING]
    if spec.sampler != "grid":
        complete = [t for t in trials if t.state == states.COMPLETE]
        if waiting or len(complete) + len(running) < (spec.n_trials or 0):
            return study.ask(_distributions(spec))
    elif waiting:
        return study.ask()
    return _WAIT if running else None


def _overrides_of(trial: optuna.Trial, spec: SweepSpec) -> Trial:
    if spec.sampler == "grid":
        key = trial.user_attrs.get(KEY)
        if key is None:  # another worker took the last queued trial first
            raise LookupError
        return Trial(json.loads(key))
    params = dict(trial.params)
    if spec.folds is not None:
        params["data.folds"] = spec.folds
    t = Trial(params)
    trial.set_user_attr(KEY, t.key)
    return t


def _run_one(
    study: optuna.Study,
    storage: optuna.storages.RDBStorage,
    spec: SweepSpec,
    trial: optuna.Trial,
    sweep_dir: Path,
    run: Runner,
    log: Callable[[str], None],
) -> None:
    try:
        planned = _overrides_of(trial, spec)
    except LookupError:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return
    overrides = _trial_overrides(planned, spec, sweep_dir)
    log(f"trial {trial.number}: {planned.run_name}")
    started = time.perf_counter()
    with _Heartbeat(storage, trial._trial_id, spec.heartbeat_interval):
        code = run(spec.config, overrides)
    run_dir = sweep_dir / "runs" / overrides["experiment"] / planned.run_name
    if code != 0:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        log(f"trial {trial.number} failed (exit code {code}); see {run_dir}")
        return
    value = _read_objective(run_dir, spec.objective)
    study.tell(trial, value)
    seconds = time.perf_counter() - started
    log(f"trial {trial.number}: {spec.objective}={value:.4f} ({seconds:.0f} s)")


def _finished(study: optuna.Study) -> list[dict[str, Any]]:
    out = []
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        out.append({**json.loads(t.user_attrs[KEY]), "value": t.value, "number": t.number})
    return out
