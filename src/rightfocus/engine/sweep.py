"""Running hyperparameter sweeps with Optuna: configurations x folds, chosen on validation.

The sweep file, its checks and the plan are :mod:`rightfocus.engine.sweep_spec`.

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
and interrupted ones are retried. Random / TPE draws are seeded per trial number: a sweep is
reproducible, workers asking together draw different configurations, and a draw beyond
``n_trials`` made by racing workers is dropped.
"""

from __future__ import annotations

import ctypes
import hashlib
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
from typing import Any

import optuna
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, ProgrammingError

from rightfocus._io import atomic_write_json
from rightfocus.engine.config import load_config
from rightfocus.engine.sweep_spec import (
    RangeParam,
    Run,
    SweepError,
    SweepSpec,
    Trial,
    check_sweep,
    experiment_name,
    load_sweep,
    plan_trials,
    run_folder,
    run_overrides,
    set_args,
    storage_url,
)
from rightfocus.errors import one_line, user_message

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
    cause = one_line(str(getattr(error, "orig", None) or error))
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


def _read_metric(path: Path, name: str) -> float:
    """One metric of a metrics file; ``null`` (undefined) is NaN."""
    if not path.is_file():
        raise SweepError(f"{path} is missing")
    try:
        metrics = json.loads(path.read_text())
    except ValueError as err:
        raise SweepError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(metrics, dict) or name not in metrics:
        raise SweepError(f"{path} has no {name!r}")
    value = metrics[name]
    return float("nan") if value is None else float(value)


@dataclass
class SweepResult:
    """A sweep's outcome: finished configurations, failed ones, and the chosen one.

    ``best`` holds the chosen configuration's ``params``, its validation ``value`` (mean over
    folds) and ``fold_values``, its ``runs`` (folders within the sweep folder) and, read only
    after the choice, its ``test`` metrics (``{metric: {"mean", "std", "folds"}}``; empty
    when the runs are on another machine).
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
        study_name=experiment_name(spec, sweep_dir),
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


def _over_budget(study: optuna.Study, number: int, spec: SweepSpec) -> bool:
    """Random / TPE: a fresh draw beyond ``n_trials`` (two workers asked at the same time).

    Trials with lower numbers that finished, failed on their own, run or wait count; a
    re-queued trial (a retry or a Ctrl-C requeue) replaces one that does not count.
    """
    if spec.sampler == "grid":
        return False
    states = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    mine = next(t for t in trials if t.number == number)
    if "fixed_params" in mine.system_attrs or "failed_trial" in mine.system_attrs:
        return False
    live = (states.COMPLETE, states.RUNNING, states.WAITING)
    before = [
        t
        for t in trials
        if t.number < number
        and (t.state in live or (t.state == states.FAIL and _ERROR in t.user_attrs))
    ]
    return len(before) >= (spec.n_trials or 0)


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
    if _over_budget(study, trial.number, spec):
        study.tell(trial, state=states.PRUNED)
        return
    log(f"trial {trial.number}: {config.name}")
    started = time.perf_counter()
    values = []
    for r in config.runs(spec.folds):
        run_dir = run_folder(spec, sweep_dir, r)
        val_file = run_dir / VAL_METRICS_FILE
        done = val_file.is_file() and (run_dir / TEST_METRICS_FILE).is_file()
        code = 0 if done else run(spec.config, run_overrides(r, spec, sweep_dir))
        if code != 0 or not val_file.is_file():
            why = f"exit code {code}" if code != 0 else f"no {VAL_METRICS_FILE}"
            _fail(study, trial, f"run {run_dir} failed ({why})", log)
            return
        try:
            value = _read_metric(val_file, spec.objective)
        except ValueError as err:  # SweepError, a non-number
            _fail(study, trial, one_line(str(err)), log)
            return
        if math.isnan(value):
            _fail(study, trial, f"validation {spec.objective} is undefined in {val_file}", log)
            return
        values.append(value)
    mean = statistics.fmean(values)
    trial.set_user_attr("fold_values", values)
    try:
        study.tell(trial, mean)
    except (ValueError, RuntimeError) as err:  # failed as stale by another worker meanwhile
        log(f"trial {trial.number}: not recorded ({one_line(str(err))})")
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
    runs = [run_folder(spec, sweep_dir, r) for r in Trial(chosen["params"]).runs(spec.folds)]
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
        "runs": [d.relative_to(sweep_dir).as_posix() for d in runs],  # within the sweep folder
        "test": test,
    }


# --- the child process of one run -------------------------------------------------------------


def _child(argv: Sequence[str]) -> int:
    """``python -m rightfocus.engine.sweep CONFIG --set k=v ...``: train (or resume) the run,
    then evaluate its selected checkpoint on the validation split (``metrics_val.json``).
    A user error is one ``error: ...`` line on stderr and exit code 2, as in the CLI."""
    # heavy: Lightning; only the child process trains, the coordinating process never does
    from rightfocus.engine.run import evaluate_run, run_experiment

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
