"""Sweep files: the schema, reading and checking them, and the plan of configurations x folds.

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

It is read with the config loader (``1e-3`` is a float). A :class:`Trial` is a configuration
(config overrides, never the fold); its :class:`Run` s are one per fold. Everything is checked
before anything runs (``--dry-run`` too): the file's keys and types, every param against the
config schema and the pre-training checks (each grid combination, each range's ends), the
objective against the base config's ``evaluation.metrics``, and the storage URL. Running the
sweep is :mod:`rightfocus.engine.sweep`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rightfocus import configs
from rightfocus.engine.config import ConfigError, load_config, parse_yaml
from rightfocus.engine.validate import check_writable, validate_experiment
from rightfocus.errors import UserError, one_line

__all__ = [
    "RangeParam",
    "Run",
    "SweepError",
    "SweepSpec",
    "Trial",
    "check_sweep",
    "experiment_name",
    "load_sweep",
    "plan_trials",
    "run_folder",
    "run_overrides",
    "set_args",
    "storage_url",
]

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
    """pydantic's errors as one line, without its union-member tags in the field names."""
    parts = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        if any(p.startswith("list[") for p in loc):
            continue  # a mapping given for `list | range`: the range's own errors say why
        field = ".".join(p for p in loc if "[" not in p and not p.startswith("function-"))
        msg = str(e["msg"]).removeprefix("Value error, ")
        parts.append(f"{field}: {msg}" if field else msg)
    return "; ".join(dict.fromkeys(parts))


def load_sweep(path: str | Path) -> SweepSpec:
    """Read a sweep file (or a shipped one by name, e.g. ``sweeps/decoy_lambda``) with the
    config loader (``1e-3`` is a float) and check its structure.

    ``config`` is resolved relative to the file. :func:`check_sweep` checks the params and
    the objective against the config schema.

    Raises:
        SweepError: a missing or malformed file; the one-line message says what to change.
    """
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
    if sweep_dir is not None:
        check_writable(sweep_dir, "The sweep folder (--out)")
    for params in _candidates(spec):
        run = Trial(params).runs(spec.folds)[0]
        overrides = run.overrides if sweep_dir is None else run_overrides(run, spec, sweep_dir)
        try:
            validate_experiment(load_config(spec.config, set_args(overrides)))
        except ValueError as err:  # ConfigError, UserError
            shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
            what = f"Sweep param values {{{shown}}} give" if params else "The base config gives"
            raise SweepError(f"{what} an invalid config: {_one_line(err)}") from None
    if spec.storage is not None:
        storage_url(spec.storage)


def storage_url(url: str) -> str:
    """A checked database URL for Optuna's RDB storage.

    ``postgresql://`` (no driver named) is driven by psycopg 3 (``postgresql+psycopg://``).

    Raises:
        SweepError: the URL cannot be parsed, names an unknown database, or its driver is not
            installed.
    """
    # heavy: SQLAlchemy (Optuna's storage layer), needed only for a --storage URL
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


def experiment_name(spec: SweepSpec, sweep_dir: str | Path) -> str:
    """The study's name and its runs' experiment: ``study_name`` or the sweep folder's name."""
    return spec.study_name or Path(sweep_dir).name


def run_folder(spec: SweepSpec, sweep_dir: str | Path, run: Run) -> Path:
    """``<sweep_dir>/runs/<experiment>/<run name>``: deterministic, so a retry resumes it."""
    return Path(sweep_dir) / "runs" / experiment_name(spec, sweep_dir) / run.name


def run_overrides(run: Run, spec: SweepSpec, sweep_dir: str | Path) -> dict[str, Any]:
    """The config overrides of one run, its run folder fields included."""
    return {
        **run.overrides,
        "experiment": experiment_name(spec, sweep_dir),
        "run": run.name,
        "runs_dir": str(Path(sweep_dir) / "runs"),
    }
