"""Hyperparameter sweeps with Optuna: configurations x folds, selected on validation metrics.

A sweep file names a base experiment config and the fields to vary::

    config: ../decoy_mnist_color_lenet.yaml   # relative to this file
    params:                       # dotted config fields, each a list or a range
      optim.lr: [1e-3, 1e-4]      # grid: a list of values
      guidance.0.lam: {low: 1e-6, high: 1e-3, log: true}   # random / tpe: a range
    folds: 3                      # every configuration runs on folds 0..2 (data.fold)
    sampler: grid                 # grid | random | tpe
    n_trials: 20                  # random / tpe only: how many configurations
    objective: balanced_accuracy  # a metric of the validation split
    direction: maximize

**A trial is a configuration.** Every fold of it runs (one ``rightfocus train`` run folder
per fold), and its objective is the mean over folds of the validation metric of each fold's
selected (best) checkpoint: ``J(θ) = 1/K Σ_k m(val_k; θ)`` (k-fold cross-validation;
Stone 1974, "Cross-validatory choice and assessment of statistical predictions"). The fold is
never a hyperparameter, and the test split is never read to choose: its metrics are read only
for the chosen configuration, after the choice, and written to ``best.json``.

Each fold run trains in a child process (memory is returned; the child dies with its worker),
which then evaluates the selected checkpoint on the fold's validation split
(``metrics_val.json`` next to the test ``metrics.json``).

Trials live in an Optuna study (Akiba et al. 2019, "Optuna: A Next-generation Hyperparameter
Optimization Framework"); the storage is ``sqlite:///<sweep folder>/sweep.db`` unless
``storage`` (or ``--storage``) names a database URL, e.g.
``postgresql://user:password@host:5432/db`` (driven by psycopg 3:
``pip install 'rightfocus[postgres]'``), so that many workers on many machines share one
study: start ``rightfocus sweep FILE --storage URL`` on each. Workers record heartbeats; a
trial whose worker died goes stale after ``grace_period`` seconds and is re-queued with the
same parameters (Optuna's ``RetryHeartbeatStaleTrialCallback``). Run folders are
deterministic, so the retry skips finished folds and resumes the interrupted one from its
last checkpoint. Rerun the same command after a crash: finished trials are not rerun, failed
and interrupted ones are retried.

Everything is validated before anything runs (``--dry-run`` too): the file's keys and types,
every param against the config schema (each grid combination, each range's ends), the
objective against the base config's ``evaluation.metrics`` and the storage URL.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import json
import math
import signal
import statistics
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rightfocus._io import atomic_write_json
from rightfocus.errors import UserError, one_line

__all__ = [
    "BEST_FILE",
    "VAL_METRICS_FILE",
    "Run",
    "SweepError",
    "SweepResult",
    "SweepSpec",
    "Trial",
    "check_sweep",
    "load_sweep",
    "plan_trials",
    "run_sweep",
    "storage_url",
    "train_command",
]

KEY = "trial_key"
VAL_METRICS_FILE = "metrics_val.json"
TEST_METRICS_FILE = "metrics.json"
BEST_FILE = "best.json"
_RUN_FIELDS = ("experiment", "run", "runs_dir")
_FOLD_FIELDS = ("data.fold", "data.folds")


class SweepError(UserError):
    """A sweep file, storage URL or outcome the user must fix; the message says what to do."""


def _one_line(err: BaseException | str) -> str:
    return one_line(str(err))


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
        if self.integer and not (self.low.is_integer() and self.high.is_integer()):
            raise ValueError("an integer range needs whole-number low and high")
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
        empty = [k for k, v in self.params.items() if isinstance(v, list) and not v]
        if empty:
            raise ValueError(f"params {empty} have an empty list of values")
        for name, values in self.params.items():
            if isinstance(values, list):
                keys = [json.dumps(v, sort_keys=True, default=str) for v in values]
                if len(set(keys)) < len(keys):
                    raise ValueError(f"params.{name} lists a value twice: {values}")
        if self.sampler == "grid":
            if ranges:
                raise ValueError(
                    f"grid sweeps need a list of values for every param; {ranges} are ranges "
                    "(use sampler: random or tpe for ranges)"
                )
            if self.n_trials is not None:
                raise ValueError("n_trials is for random / tpe; a grid runs every combination")
        else:
            if self.n_trials is None:
                raise ValueError(f"sampler {self.sampler!r} needs n_trials")
            for name, values in self.params.items():
                if isinstance(values, list) and any(
                    not isinstance(v, (str, int, float, bool)) and v is not None for v in values
                ):
                    raise ValueError(
                        f"params.{name}: {self.sampler} sampling draws single values (numbers, "
                        "strings, booleans); use sampler: grid for lists or mappings"
                    )
        reserved = [k for k in self.params if k in _RUN_FIELDS]
        if reserved:
            raise ValueError(f"params {reserved} name the run folder; the sweep sets them")
        if self.folds is not None and any(k in _FOLD_FIELDS for k in self.params):
            raise ValueError(
                "params must not vary data.fold / data.folds when folds: is set (every "
                "configuration already runs on every fold)"
            )
        if self.heartbeat_interval >= self.grace_period:
            raise ValueError("grace_period must be longer than heartbeat_interval")
        return self


@dataclass(frozen=True)
class Run:
    """One run of a trial: the config overrides of one fold and its run folder name."""

    overrides: dict[str, Any]
    name: str


@dataclass(frozen=True)
class Trial:
    """One configuration: config overrides (never the fold); it runs on every fold."""

    params: dict[str, Any]

    @property
    def key(self) -> str:
        return json.dumps(self.params, sort_keys=True, default=str)

    @property
    def name(self) -> str:
        parts = [f"{k.split('.')[-1]}={v}" for k, v in sorted(self.params.items())]
        digest = hashlib.sha1(self.key.encode()).hexdigest()[:8]
        text = "_".join(parts)[:80].replace("/", "-").replace(" ", "")
        return f"{text}_{digest}" if text else digest

    def runs(self, folds: int | None) -> list[Run]:
        """One run per fold (``data.folds``/``data.fold`` set), or one on the config's fold."""
        if folds is None:
            return [Run(dict(self.params), self.name)]
        return [
            Run({**self.params, "data.folds": folds, "data.fold": f}, f"{self.name}_fold{f}")
            for f in range(folds)
        ]


def _pydantic_line(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if loc.startswith("params.") and loc.endswith((".list[any]", ".RangeParam")):
            continue  # reported once, below, in the sweep's own words
        parts.append(f"{loc}: {e['msg']}" if loc else e["msg"])
    return "; ".join(dict.fromkeys(parts))


def load_sweep(path: str | Path) -> SweepSpec:
    """Read a sweep file (or a shipped one by name, e.g. ``sweeps/decoy_lambda``) with the
    config loader (``1e-3`` is a float) and check its structure.

    ``config`` is resolved relative to the file. :func:`check_sweep` checks the params and
    the objective against the config schema.

    Raises:
        SweepError: a missing or malformed file; the one-line message says what to change.
    """
    from rightfocus import configs
    from rightfocus.engine.config import ConfigError, parse_yaml

    path = configs.resolve(path)
    if not path.is_file():
        shipped = [n for n in configs.names() if n.startswith("sweeps/")]
        raise SweepError(
            f"Sweep file {path} does not exist (shipped sweeps, usable by name: "
            f"{', '.join(shipped) or 'none'})"
        )
    try:
        raw = parse_yaml(path.read_text(), str(path))
    except ConfigError as err:
        raise SweepError(_one_line(err)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise SweepError(f"Cannot read sweep file {path}: {err}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SweepError(
            f"Sweep file {path} must hold a mapping of sweep settings, not {type(raw).__name__}"
        )
    allowed = ", ".join(SweepSpec.model_fields)
    unknown = [str(k) for k in raw if k not in SweepSpec.model_fields]
    if unknown:
        raise SweepError(f"Sweep file {path}: unknown keys {unknown}. Allowed keys: {allowed}")
    if "config" not in raw:
        raise SweepError(f"Sweep file {path} needs config: <base experiment YAML>")
    params = raw.get("params") or {}
    if not isinstance(params, dict):
        raise SweepError(f"Sweep file {path}: params must map dotted config fields to values")
    for name, value in params.items():
        if not isinstance(value, list | dict):
            raise SweepError(
                f"Sweep file {path}: params.{name} is a single value ({value!r}); a sweep param "
                f"needs a list of values ([{value!r}, ...]) or a range ({{low: ..., high: ...}}); "
                "put a fixed value in the base config"
            )
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as err:
        raise SweepError(f"Invalid sweep file {path}: {_pydantic_line(err)}") from None
    if not spec.config.is_absolute():
        spec.config = (path.parent / spec.config).resolve()
    if not spec.config.is_file():
        raise SweepError(f"The base config {spec.config} (config: in {path}) does not exist")
    return spec


# --- validation against the config schema ---------------------------------------------------


def set_args(overrides: dict[str, Any]) -> list[str]:
    """``--set`` values for ``overrides``, exactly as the child process receives them."""
    return [
        f"{key}={value if isinstance(value, str) else json.dumps(value)}"
        for key, value in overrides.items()
    ]


def _candidates(spec: SweepSpec) -> list[dict[str, Any]]:
    """Configurations to validate: every grid combination; for random / TPE each range end
    and each listed value (the other params at their first candidate)."""
    if spec.sampler == "grid":
        return [t.params for t in plan_trials(spec)]
    values: dict[str, list[Any]] = {}
    for name, p in spec.params.items():
        if isinstance(p, RangeParam):
            ends = [int(p.low), int(p.high)] if p.integer else [p.low, p.high]
            values[name] = ends
        else:
            values[name] = list(p)
    first = {k: v[0] for k, v in values.items()}
    out = [first]
    for name, vs in values.items():
        out += [{**first, name: v} for v in vs[1:]]
    return out


def check_sweep(spec: SweepSpec, sweep_dir: str | Path | None = None) -> None:
    """Check every param and the objective against the config schema, and the storage URL.

    Runs each candidate configuration (every grid combination; range ends) through the
    config loader and the pre-training checks (``engine.validate``) with the exact ``--set``
    values a trial gets (run folders under ``sweep_dir`` when given), so a trial cannot fail
    on a config error after others have run. Writes nothing.

    Raises:
        SweepError: naming the param value (or objective, or URL) and what to do.
    """
    from rightfocus.engine.config import ConfigError, load_config

    try:
        base = load_config(spec.config)
    except ConfigError as err:
        raise SweepError(f"The sweep's base config is invalid: {_one_line(err)}") from None
    if spec.folds is None and base.data.folds < 2:
        raise SweepError(
            f"The sweep selects on validation metrics, but the base config {spec.config} has "
            "data.folds: 1 (no validation split); set folds: K (>= 2) in the sweep file"
        )
    metrics = base.evaluation.metrics
    if spec.objective not in metrics:
        raise SweepError(
            f"objective {spec.objective!r} is not one of the base config's evaluation.metrics "
            f"({', '.join(metrics)}); choose one of them or add it there"
        )
    from rightfocus.engine.validate import validate_experiment

    for params in _candidates(spec):
        run = Trial(params).runs(spec.folds)[0]
        overrides = run.overrides if sweep_dir is None else _run_overrides(run, spec, sweep_dir)
        try:
            validate_experiment(load_config(spec.config, set_args(overrides)))
        except ValueError as err:  # ConfigError, UserError
            shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
            raise SweepError(
                f"Sweep param values {{{shown}}} give an invalid config: {_one_line(err)}"
            ) from None
    if spec.storage is not None:
        storage_url(spec.storage)


def storage_url(url: str) -> str:
    """A checked database URL for Optuna's RDB storage.

    ``postgresql://`` (no driver named) is driven by psycopg 3 (``postgresql+psycopg://``).

    Raises:
        SweepError: the URL cannot be parsed, names an unknown database, or its driver is not
            installed.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    example = "e.g. postgresql://user:password@host:5432/db or sqlite:////abs/path/sweep.db"
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise SweepError(f"--storage {url!r} is not a database URL; {example}") from None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    shown = parsed.render_as_string(hide_password=True)
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise SweepError(
            f"--storage {shown!r}: unknown database kind {parsed.drivername!r}; {example}"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as err:
        extra = " (pip install 'rightfocus[postgres]')" if "postgresql" in parsed.drivername else ""
        raise SweepError(
            f"--storage {shown!r}: the database driver is not installed{extra}: {err}"
        ) from None
    return parsed.render_as_string(hide_password=False)


# --- planning ---------------------------------------------------------------------------------


def plan_trials(spec: SweepSpec) -> list[Trial]:
    """The grid's configurations in a fixed order (each runs on every fold)."""
    if spec.sampler != "grid":
        raise ValueError("only grid sweeps have a fixed plan; random/TPE trials are sampled")
    names = list(spec.params)
    values = [spec.params[n] for n in names]
    return [
        Trial(dict(zip(names, combo, strict=True)))
        for combo in itertools.product(*values)  # type: ignore[arg-type]
    ]


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
    return out


def _describe(spec: SweepSpec, log: Callable[[str], None]) -> list[Trial]:
    folds = spec.folds or 1
    fold_text = f"{spec.folds} folds" if spec.folds else "the config's fold"
    goal = f"{spec.direction} the mean validation {spec.objective} over folds"
    if spec.sampler == "grid":
        planned = plan_trials(spec)
        for t in planned:
            log(f"{t.name}: {t.key} x {fold_text}")
        log(
            f"{len(planned)} configurations x {folds} folds = {len(planned) * folds} runs "
            f"(grid); {goal}"
        )
        return planned
    n = spec.n_trials or 0
    log(
        f"{n} configurations sampled ({spec.sampler}) over: {', '.join(spec.params) or '-'}; "
        f"each x {fold_text} = {n * folds} runs; {goal}"
    )
    return []


# --- running ----------------------------------------------------------------------------------


def _storage(spec: SweepSpec, sweep_dir: Path) -> optuna.storages.RDBStorage:
    """Open (and on first use create) the study database.

    Workers starting together on a fresh database race to create Optuna's tables; the
    losers see a unique-key / already-exists error and retry once the winner is done.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    url = storage_url(spec.storage) if spec.storage else None
    url = url or f"sqlite:///{(sweep_dir / 'sweep.db').resolve()}"
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=spec.heartbeat_interval,
                grace_period=spec.grace_period,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=spec.max_retry
                ),
            )
        except (IntegrityError, ProgrammingError) as err:
            if attempt == 4:
                error: Exception = err
                break
            time.sleep(0.5 * (attempt + 1))
        except Exception as err:  # sqlalchemy / driver errors: unreachable host, password, ...
            error = err
            break
    shown = make_url(url).render_as_string(hide_password=True)
    cause = _one_line(str(getattr(error, "orig", None) or error))
    raise SweepError(f"Cannot open the sweep storage {shown}: {cause}") from None


class _TrialSeeded(optuna.samplers.BaseSampler):
    """Random or TPE draws seeded by ``(seed, trial number, param)``.

    One seeded sampler per worker would repeat the same draws in every worker and in every
    rerun of the command; seeding each draw by its trial's number keeps a sweep reproducible
    and makes trials asked at the same time by two workers (different numbers) differ.
    TPE (Bergstra et al. 2011, "Algorithms for Hyper-Parameter Optimization") reads the
    finished trials from the study, so a fresh instance per draw loses nothing.
    """

    def __init__(self, kind: str, seed: int) -> None:
        self._kind, self._seed = kind, seed

    def _inner(self, number: int, name: str) -> optuna.samplers.BaseSampler:
        text = f"{self._seed}/{number}/{name}".encode()
        seed = int(hashlib.sha1(text).hexdigest()[:8], 16)
        if self._kind == "tpe":
            return optuna.samplers.TPESampler(seed=seed)
        return optuna.samplers.RandomSampler(seed=seed)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial
    ) -> dict[str, optuna.distributions.BaseDistribution]:
        return {}

    def sample_relative(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        search_space: dict[str, optuna.distributions.BaseDistribution],
    ) -> dict[str, Any]:
        return {}

    def sample_independent(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        param_name: str,
        param_distribution: optuna.distributions.BaseDistribution,
    ) -> Any:
        inner = self._inner(trial.number, param_name)
        return inner.sample_independent(study, trial, param_name, param_distribution)


def _sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    return _TrialSeeded(spec.sampler, spec.seed)


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
    """The child-process command that trains (or resumes) one run, then evaluates its
    selected checkpoint on the validation split."""
    cmd = [sys.executable, "-m", "rightfocus.engine.sweep", str(config)]
    for arg in set_args(overrides):
        cmd += ["--set", arg]
    return cmd


def _default_runner(config: Path, overrides: dict[str, Any]) -> int:
    proc = subprocess.run(
        train_command(config, overrides),
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        check=False,
    )
    return proc.returncode


Runner = Callable[[Path, dict[str, Any]], int]


def _experiment(spec: SweepSpec, sweep_dir: str | Path) -> str:
    return spec.study_name or Path(sweep_dir).name


def _run_dir(spec: SweepSpec, sweep_dir: Path, run: Run) -> Path:
    return sweep_dir / "runs" / _experiment(spec, sweep_dir) / run.name


def _run_overrides(run: Run, spec: SweepSpec, sweep_dir: str | Path) -> dict[str, Any]:
    return {
        **run.overrides,
        "experiment": _experiment(spec, sweep_dir),
        "run": run.name,
        "runs_dir": str(Path(sweep_dir) / "runs"),
    }


def _read_metric(path: Path, name: str) -> float:
    """One metric of a metrics file; ``null`` (undefined) is NaN."""
    if not path.is_file():
        raise SweepError(f"{path} is missing")
    value = json.loads(path.read_text()).get(name, "missing")
    if value == "missing":
        raise SweepError(f"{path} has no {name!r}")
    return float("nan") if value is None else float(value)


@dataclass
class SweepResult:
    """A sweep's outcome: finished configurations, failed ones, and the chosen one.

    ``best`` holds the chosen configuration's ``params``, its validation ``value`` (mean over
    folds) and ``fold_values``, its ``runs`` and, read only after the choice, its ``test``
    metrics (``{metric: {"mean", "std", "folds"}}``; empty when the runs are on another
    machine).
    """

    trials: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    planned: list[Trial] = field(default_factory=list)


def run_sweep(
    spec: SweepSpec,
    sweep_dir: str | Path,
    runner: Runner | None = None,
    dry_run: bool = False,
    log: Callable[[str], None] = print,
) -> SweepResult:
    """Validate, then run (or resume) the sweep; with ``dry_run`` only list what would run.

    ``runner(config, overrides) -> exit code`` trains one fold's run (default: a child
    process) and leaves ``metrics_val.json`` (validation) and ``metrics.json`` (test) in
    ``<sweep_dir>/runs/<experiment>/<run>/``.

    Raises:
        SweepError: invalid sweep (nothing is written), unreachable storage, or every trial
            failed.
    """
    sweep_dir = Path(sweep_dir)
    check_sweep(spec, sweep_dir)
    if dry_run:
        return SweepResult(planned=_describe(spec, log))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # progress: the log lines below
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            return _sweep(spec, sweep_dir, runner or _default_runner, log)
    finally:
        optuna.logging.set_verbosity(verbosity)


def _sweep(
    spec: SweepSpec, sweep_dir: Path, run: Runner, log: Callable[[str], None]
) -> SweepResult:
    # a database given by URL is opened first: if it cannot be, nothing is written
    storage = _storage(spec, sweep_dir) if spec.storage else None
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SweepError(f"Cannot create the sweep folder {sweep_dir}: {err.strerror}") from None
    storage = storage or _storage(spec, sweep_dir)
    study = optuna.create_study(
        study_name=_experiment(spec, sweep_dir),
        storage=storage,
        load_if_exists=True,
        direction=spec.direction,
        sampler=_sampler(spec),
    )
    study_id = storage.get_study_id_from_name(study.study_name)
    planned = plan_trials(spec) if spec.sampler == "grid" else None
    if planned is not None:
        _enqueue_grid(study, planned)
    waiting = False
    while True:
        optuna.storages.fail_stale_trials(study)
        trial = _next_trial(study, spec)
        if trial is None:
            break
        if trial is _WAIT:  # another worker's trial runs (or went stale and will be re-queued)
            if not waiting:
                log(
                    "waiting for trials running elsewhere (a dead worker's trial is retried "
                    f"{spec.grace_period} s after its last heartbeat)"
                )
            waiting = True
            time.sleep(spec.heartbeat_interval)
            continue
        waiting = False
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            with _Heartbeat(storage, trial_id, spec.heartbeat_interval):
                _run_trial(study, spec, trial, sweep_dir, run, log)
        except BaseException:  # Ctrl-C: requeue the trial now, not after the grace period
            _requeue(study, trial, spec)
            raise
    return _result(study, spec, sweep_dir, planned, log)


def _requeue(study: optuna.Study, trial: optuna.Trial, spec: SweepSpec) -> None:
    """Give an interrupted trial up (FAIL, not counted as failed) and queue its configuration
    again, so the next run of the same command starts with it."""
    states = optuna.trial.TrialState
    try:
        key = trial.user_attrs.get(KEY)
        study.tell(trial, state=states.FAIL)
        if key is not None and spec.sampler != "grid":  # grid: requeued from the plan
            study.enqueue_trial(dict(trial.params), user_attrs={KEY: key})
    except Exception:  # best effort: the heartbeat retry covers it otherwise
        pass


def _enqueue_grid(study: optuna.Study, planned: Sequence[Trial]) -> None:
    """Queue every configuration that is not finished, queued or running (failed ones again)."""
    states = optuna.trial.TrialState
    live = (states.COMPLETE, states.WAITING, states.RUNNING)
    known = {t.user_attrs.get(KEY) for t in study.get_trials(deepcopy=False) if t.state in live}
    for t in planned:
        if t.key not in known:
            study.enqueue_trial({}, user_attrs={KEY: t.key}, skip_if_exists=False)


_WAIT = object()
_ERROR = "error"  # user attr of a trial whose run failed (not of one whose worker died)


def _next_trial(study: optuna.Study, spec: SweepSpec) -> Any:
    """The next trial to run, ``_WAIT`` while only other workers' trials run, or None when done.

    Random / TPE: ``n_trials`` configurations are tried; those whose run failed count (a
    failing configuration is not replaced by new draws forever).
    """
    states = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    waiting = [t for t in trials if t.state == states.WAITING]
    running = [t for t in trials if t.state == states.RUNNING]
    if spec.sampler != "grid":
        tried = [
            t
            for t in trials
            if t.state == states.COMPLETE or (t.state == states.FAIL and _ERROR in t.user_attrs)
        ]
        if waiting or len(tried) + len(running) < (spec.n_trials or 0):
            return study.ask(_distributions(spec))
    elif waiting:
        return study.ask()
    return _WAIT if running else None


def _configuration(study: optuna.Study, trial: optuna.Trial, spec: SweepSpec) -> Trial:
    """The trial's configuration; LookupError when another trial already covers it."""
    if spec.sampler == "grid":
        key = trial.user_attrs.get(KEY)
        if key is None:  # another worker took the last queued trial first
            raise LookupError
        # workers starting together may queue a configuration twice: the lowest number runs
        states = optuna.trial.TrialState
        live = (states.WAITING, states.RUNNING, states.COMPLETE)
        for other in study.get_trials(deepcopy=False, states=live):
            if other.number < trial.number and other.user_attrs.get(KEY) == key:
                raise LookupError
        return Trial(json.loads(key))
    t = Trial(dict(trial.params))
    trial.set_user_attr(KEY, t.key)
    return t


def _run_trial(
    study: optuna.Study,
    spec: SweepSpec,
    trial: optuna.Trial,
    sweep_dir: Path,
    run: Runner,
    log: Callable[[str], None],
) -> None:
    """Run every fold of one configuration; its value is the mean validation objective."""
    states = optuna.trial.TrialState
    try:
        config = _configuration(study, trial, spec)
    except LookupError:
        study.tell(trial, state=states.PRUNED)
        return
    log(f"trial {trial.number}: {config.name}")
    started = time.perf_counter()
    values = []
    for r in config.runs(spec.folds):
        run_dir = _run_dir(spec, sweep_dir, r)
        val_file = run_dir / VAL_METRICS_FILE
        done = val_file.is_file() and (run_dir / TEST_METRICS_FILE).is_file()
        code = 0 if done else run(spec.config, _run_overrides(r, spec, sweep_dir))
        if code != 0 or not val_file.is_file():
            why = f"exit code {code}" if code != 0 else f"no {VAL_METRICS_FILE}"
            _fail(study, trial, f"run {run_dir} failed ({why})", log)
            return
        value = _read_metric(val_file, spec.objective)
        if math.isnan(value):
            _fail(study, trial, f"validation {spec.objective} is undefined in {val_file}", log)
            return
        values.append(value)
    mean = statistics.fmean(values)
    trial.set_user_attr("fold_values", values)
    try:
        study.tell(trial, mean)
    except (ValueError, RuntimeError) as err:  # failed as stale by another worker meanwhile
        log(f"trial {trial.number}: not recorded ({_one_line(err)})")
        return
    seconds = time.perf_counter() - started
    log(f"trial {trial.number}: validation {spec.objective}={mean:.4f} ({seconds:.0f} s)")


def _fail(study: optuna.Study, trial: optuna.Trial, why: str, log: Callable[[str], None]) -> None:
    trial.set_user_attr(_ERROR, why)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    log(f"trial {trial.number} failed: {why}")


def _result(
    study: optuna.Study,
    spec: SweepSpec,
    sweep_dir: Path,
    planned: list[Trial] | None,
    log: Callable[[str], None],
) -> SweepResult:
    states = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    finished: dict[str, dict[str, Any]] = {}
    for t in trials:
        if t.state == states.COMPLETE and t.user_attrs[KEY] not in finished:
            key = t.user_attrs[KEY]
            finished[key] = {
                "params": json.loads(key),
                "value": t.value,
                "fold_values": t.user_attrs.get("fold_values"),
                "number": t.number,
            }
    failed: dict[str, dict[str, Any]] = {}
    for t in trials:
        key = t.user_attrs.get(KEY)
        if t.state == states.FAIL and _ERROR in t.user_attrs and str(key) not in finished:
            failed[str(key)] = {"params": json.loads(str(key)), "error": t.user_attrs[_ERROR]}
    if planned is not None:  # grid configurations lost to repeated worker deaths
        for p in planned:
            if p.key not in finished and p.key not in failed:
                failed[p.key] = {"params": p.params, "error": "not finished (worker died)"}
    result = SweepResult(list(finished.values()), list(failed.values()))
    if not finished:
        first = next(iter(failed.values()), {"error": "no trial ran"})["error"]
        raise SweepError(
            f"Every trial of the sweep failed ({len(failed)}), e.g. {first}; fix the cause "
            "(see the trials' output above) and rerun the same command to retry them"
        )
    sign = 1.0 if spec.direction == "maximize" else -1.0
    chosen = max(result.trials, key=lambda d: (sign * d["value"], -d["number"]))
    result.best = _best(chosen, spec, sweep_dir)
    atomic_write_json(sweep_dir / BEST_FILE, result.best)
    return result


def _best(chosen: dict[str, Any], spec: SweepSpec, sweep_dir: Path) -> dict[str, Any]:
    """The chosen configuration with its test metrics, read here, after the choice (a metric
    undefined on some fold, ``null`` or NaN, has ``null`` mean and std)."""
    runs = [_run_dir(spec, sweep_dir, r) for r in Trial(chosen["params"]).runs(spec.folds)]
    test: dict[str, dict[str, Any]] = {}
    if all((d / TEST_METRICS_FILE).is_file() for d in runs):
        per_run = [json.loads((d / TEST_METRICS_FILE).read_text()) for d in runs]
        for name in per_run[0]:
            vals = [m.get(name) for m in per_run]
            nums = [float("nan") if v is None else float(v) for v in vals]
            defined = all(math.isfinite(x) for x in nums)
            test[name] = {
                "mean": statistics.fmean(nums) if defined else None,
                "std": (statistics.stdev(nums) if len(nums) > 1 else 0.0) if defined else None,
                "folds": vals,
            }
    return {
        "objective": f"validation {spec.objective} (mean over folds, {spec.direction})",
        "params": chosen["params"],
        "value": chosen["value"],
        "fold_values": chosen["fold_values"],
        "runs": [str(d) for d in runs],
        "test": test,
    }


# --- the child process of one run -------------------------------------------------------------


def _child(argv: Sequence[str]) -> int:
    """``python -m rightfocus.engine.sweep CONFIG --set k=v ...``: train (or resume) the run,
    then evaluate its selected checkpoint on the validation split (``metrics_val.json``).
    A user error is one ``error: ...`` line on stderr and exit code 2, as in the CLI."""
    from rightfocus.engine.config import load_config
    from rightfocus.engine.run import evaluate_run, run_experiment
    from rightfocus.errors import user_message

    if not argv or len(argv) % 2 != 1 or any(a != "--set" for a in argv[1::2]):
        usage = "usage: python -m rightfocus.engine.sweep CONFIG [--set key=value]..."
        print(usage, file=sys.stderr)
        return 2
    try:
        config = load_config(argv[0], list(argv[2::2]))
        metrics = run_experiment(config, quiet=True)
        if not metrics:  # a DDP rank other than 0
            return 0
        if not (config.run_dir / VAL_METRICS_FILE).is_file():
            evaluate_run(config.run_dir, split="val")
    except Exception as err:
        message = user_message(err)
        if message is None:  # a bug: keep the traceback
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through the sweep's child processes
    sys.exit(_child(sys.argv[1:]))
