"""Command-line interface: thin, everything resolved through the registries."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

import rightfocus
from rightfocus._registry import DATASETS, GUIDANCE, METHODS, MODELS
from rightfocus.demo import run_demo
from rightfocus.errors import UserError, one_line, user_message

DEBUG_ENV = "RIGHTFOCUS_DEBUG"
_RESUMABLE = ("train", "sweep", "reproduce")
_state = {"debug": False}


def _debug_enabled() -> bool:
    if _state["debug"]:
        return True
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _print_error(message: str, hint: str | None = None) -> None:
    """``error: <message>`` as exactly one line on stderr (no markup: ``[...]`` stays)."""
    line = one_line(message)
    if hint and hint not in line:
        line = f"{line} ({hint})"
    sys.stderr.write(f"error: {line}\n")
    sys.stderr.flush()


class _Group(TyperGroup):
    """The command group with the one top-level error handler of every command.

    A user error (see :func:`rightfocus.errors.user_message`) and a usage error print one
    ``error: ...`` line on stderr and exit with code 2; ``--debug`` (or ``RIGHTFOCUS_DEBUG=1``)
    re-raises it with its traceback. Anything else is a bug and keeps its traceback.
    """

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.TyperException, typer.Abort):
            raise
        except KeyboardInterrupt as err:  # Ctrl-C (the engine's RunInterrupted says more)
            if _debug_enabled():
                raise
            command = ctx.invoked_subcommand or ""
            again = " run the same command again to resume" if command in _RESUMABLE else ""
            _print_error(str(err) or f"interrupted;{again or ' nothing was lost'}")
            raise typer.Exit(130) from None
        except Exception as err:
            message = user_message(err)
            if message is None or _debug_enabled():
                raise
            _print_error(message)
            raise typer.Exit(2) from None

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        _state["debug"] = False  # set again by the --debug option of this invocation
        kw: dict[str, Any] = {"windows_expand_args": windows_expand_args, **extra}
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **kw)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **kw)
        except typer.Abort:
            _print_error("aborted")
            sys.exit(1)
        except typer.TyperException as err:  # usage errors: bad option, missing argument, ...
            if type(err).__name__ == "NoArgsIsHelpError":
                err.show()  # type: ignore[attr-defined]  # prints the help
                sys.exit(2)
            ctx = getattr(err, "ctx", None)
            hint = f"see `{ctx.command_path} --help`" if ctx is not None else None
            _print_error(err.format_message(), hint)
            sys.exit(getattr(err, "exit_code", 2))
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    name="rightfocus",
    help="Explain, measure and correct what image classifiers look at.",
    no_args_is_help=True,
    add_completion=False,
    cls=_Group,
    pretty_exceptions_enable=False,
)
# markup off: user values such as paths or config keys may contain [...]
console = Console(width=None if sys.stdout.isatty() else 140, markup=False, highlight=False)


@app.callback()
def _main_options(
    debug: bool = typer.Option(
        False, "--debug", help=f"Show the full traceback of an error (or set {DEBUG_ENV}=1)."
    ),
) -> None:
    """Explain, measure and correct what image classifiers look at."""
    _state["debug"] = debug


_CAPS = ("differentiable", "needs_layer", "model_agnostic", "stochastic")


@app.command("list")
def list_cmd(
    what: str = typer.Argument(
        "all", help="What to list: methods, models, datasets, guidance or all."
    ),
) -> None:
    """List registered attribution methods (with capabilities), models, datasets and guidance.

    Example: rightfocus list methods
    """
    choices = {"methods", "models", "datasets", "guidance", "all"}
    if what not in choices:
        raise typer.BadParameter(f"choose one of {', '.join(sorted(choices))}")
    if what in ("methods", "all"):
        table = Table(title="Attribution methods")
        table.add_column("method", no_wrap=True)
        table.add_column("output")
        table.add_column("capabilities")
        table.add_column("summary")
        for name in METHODS.names():
            meta = METHODS.metadata(name)
            caps = ", ".join(c.replace("_", " ") for c in _CAPS if meta[c])
            table.add_row(name, meta["output"], caps, meta["summary"])
        console.print(table)
    for label, reg in (("models", MODELS), ("datasets", DATASETS), ("guidance", GUIDANCE)):
        if what in (label, "all"):
            table = Table(title=label.capitalize())
            table.add_column("name")
            table.add_column("details")
            for name in reg.names():
                meta = reg.metadata(name)
                table.add_row(name, ", ".join(f"{k}={v}" for k, v in meta.items()))
            console.print(table)


@app.command("demo")
def demo_cmd(
    out: str = typer.Option("demo_out", help="Folder for the figure."),
    steps: int = typer.Option(400, min=1, help="Training steps (batch 64)."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Train a LeNet on 4,000 real MNIST digits (offline) and save an attribution grid.

    Example: rightfocus demo --out demo_out
    """
    # heavy: the config schema (pydantic, OmegaConf, YAML); other commands need none of it
    from rightfocus.engine.validate import check_writable

    check_writable(out, "--out")
    result = run_demo(out_dir=out, steps=steps, seed=seed)
    console.print(
        f"LeNet trained for {steps} steps in {result.train_seconds:.1f} s; "
        f"test accuracy {result.test_accuracy:.3f} on 1,000 held-out real digits"
    )
    console.print(f"Attribution grid written to {result.figure}")


def _fail(err: Exception) -> typer.Exit:
    """Print a user error as one ``error: ...`` line on stderr; ``raise _fail(err)`` exits 2."""
    _print_error(user_message(err) or str(err))
    return typer.Exit(code=2)


def _check_split(split: str) -> None:
    if split not in ("test", "val"):
        raise UserError(
            f"--split {split!r} is not a split of a run", hint="use --split test or --split val"
        )


def _metrics_table(title: str, metrics: dict[str, float]) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        shown = "undefined" if value is None or value != value else f"{value:.4f}"
        table.add_row(key, shown)
    return table


@app.command("train")
def train_cmd(
    config: str = typer.Argument(..., help="Experiment YAML (see configs/)."),
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Override a config field: section.key=value (YAML value); repeatable."
        ),
    ] = None,
    quiet: bool = typer.Option(
        False, "--quiet", help="No progress bar, model summary or info logs."
    ),
) -> None:
    """Train a run, or resume it from its last checkpoint, then write test metrics.json.

    The run folder is <runs_dir>/<experiment>/<run>/. Rerunning the same command after a crash
    continues where it stopped; a folder made by a different config is refused.

    Example: rightfocus train configs/decoy_mnist_color_lenet.yaml --set optim.lr=1e-3 --set run=lr3
    """
    # heavy: the config schema (pydantic, OmegaConf, YAML); other commands need none of it
    from rightfocus.engine.config import load_config
    from rightfocus.engine.validate import validate_experiment

    cfg = load_config(config, set_ or [])
    validate_experiment(cfg)  # before importing Lightning: user errors come fast

    from rightfocus.engine.run import run_experiment  # heavy: Lightning, after the checks

    metrics = run_experiment(cfg, quiet=quiet)
    if metrics:
        console.print(_metrics_table(f"Test metrics ({cfg.run_dir})", metrics))


@app.command("evaluate")
def evaluate_cmd(
    run: str = typer.Argument(..., help="Run folder (holds config.yaml and checkpoints/)."),
    split: str = typer.Option("test", help="test (writes metrics.json) or val (metrics_val.json)."),
) -> None:
    """Recompute a run's metrics from its best (else last) checkpoint and print them.

    Example: rightfocus evaluate runs/decoy_mnist_color/lenet --split test
    """
    from rightfocus.engine.run import evaluate_run  # heavy: Lightning

    _check_split(split)
    metrics = evaluate_run(run, split=split)
    console.print(_metrics_table(f"{split} metrics ({run})", metrics))


@app.command("explain")
def explain_cmd(
    run: str = typer.Argument(..., help="Run folder."),
    method: Annotated[
        list[str] | None,
        typer.Option(
            "--method", help="Attribution method, default gradcam (repeat for more columns)."
        ),
    ] = None,
    n: int = typer.Option(16, "--n", min=1, help="Number of images (rows)."),
    split: str = typer.Option("test", help="test or val."),
    out: str = typer.Option(None, help="PNG path (default <run>/figures/explain_<methods>.png)."),
) -> None:
    """Write a PNG grid: image with mask outline, then one attribution map per method.

    Example: rightfocus explain runs/decoy_mnist_color/lenet --method gradcam --method saliency
    """
    # heavy: Lightning
    from rightfocus.engine.run import explain_run
    from rightfocus.engine.validate import check_methods, check_writable

    _check_split(split)
    check_methods(method or ["gradcam"], "--method")
    if out:
        check_writable(out, "--out", is_file=True)
    path = explain_run(run, methods=method or ["gradcam"], n=n, split=split, out=out)
    console.print(f"Attribution grid written to {path}")


@app.command("sweep")
def sweep_cmd(
    sweep_file: str = typer.Argument(
        ..., help="Sweep YAML (base config, params, folds, sampler) or a shipped one's name."
    ),
    out: str = typer.Option(None, help="Sweep folder (default: sweeps/<file name>)."),
    storage: str = typer.Option(
        None, help="Optuna storage URL shared by many workers (default: SQLite in the folder)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the trials and exit."),
) -> None:
    """Grid / random / TPE search over configurations, each on every fold; resumes after a crash.

    A configuration's score is its mean validation metric over folds (the test split is never
    used to choose); the test metrics of the chosen configuration are printed and saved in
    <folder>/best.json. Every run trains in its own process. Run the same command again after
    a crash: finished trials are kept, interrupted and failed ones are retried. For many
    workers on many machines, start the command on each with the same --storage database URL.

    Example: rightfocus sweep configs/sweeps/decoy_lambda.yaml --dry-run
    """
    from rightfocus.engine.sweep import load_sweep, run_sweep  # heavy: Optuna, SQLAlchemy

    spec = load_sweep(sweep_file)
    if storage:
        spec.storage = storage
    folder = Path(out) if out else Path("sweeps") / Path(sweep_file).stem

    def say(line: str) -> None:
        console.print(line, markup=False, highlight=False)

    result = run_sweep(spec, folder, dry_run=dry_run, log=say)
    if dry_run or result.best is None:
        return
    best = result.best
    failed = f", {len(result.failed)} failed (rerun to retry)" if result.failed else ""
    say(f"{len(result.trials)} configurations finished{failed} in {folder}")
    say(f"Chosen on {best['objective']}: {best['params']} = {best['value']:.4f}")
    shown = [
        f"{k} {v['mean']:.4f} ± {v['std']:.4f}" if v["mean"] is not None else f"{k} undefined"
        for k, v in best["test"].items()
    ]
    if shown:
        say(f"Test metrics of the chosen configuration (mean ± std over folds): {', '.join(shown)}")
    say(f"Saved in {folder}/best.json; every run: `rightfocus report {folder}/runs`")


@app.command("report")
def report_cmd(
    runs_dir: str = typer.Argument(..., help="Folder of run folders (metrics.json + config.yaml)."),
    out: str = typer.Option(
        None, help="Where to write report.html / report.md (default: RUNS_DIR)."
    ),
    by: str = typer.Option("data.variant", help="Config column that makes a table row."),
    metrics: str = typer.Option(
        "balanced_accuracy,f1,auc,overlap", help="Comma-separated metric columns."
    ),
) -> None:
    """Aggregate every run into one table (mean ± std over folds) and an HTML/Markdown report.

    Example: rightfocus report runs/reproduce-decoy-mnist --by data.variant
    """
    from rightfocus.engine.report import write_report  # heavy: pandas

    try:
        paths = write_report(runs_dir, out, tables={"Results": metrics.split(",")}, row=by)
    except KeyError as err:
        raise UserError(f"unknown column {err}", hint="check --by and --metrics") from err
    console.print(f"Report: {paths['html']} and {paths['markdown']}")


@app.command("reproduce")
def reproduce_cmd(
    experiment: str = typer.Argument(
        ..., help="decoy-mnist or active-feedback (offline), isic, pets, sbd or proxy-attention."
    ),
    quick: bool = typer.Option(
        False,
        "--quick",
        help="Fewer epochs (decoy-mnist: 30 per run, not 200; about 8 minutes on 2 cores).",
    ),
    out: str = typer.Option(None, help="Runs folder (default: runs/reproduce-<experiment>)."),
    root: str = typer.Option(None, help="Dataset folder for isic / pets / sbd."),
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override for every run, e.g. optim.lr=1e-3")
    ] = None,
    variants: str = typer.Option(
        None, help="decoy-mnist: comma-separated, from position,color,ross,cdep."
    ),
    methods: str = typer.Option(
        None,
        help="decoy-mnist: comma-separated, from none,bayes_feedback,counterexamples,rrr "
        "(default) and bayes_feedback_rf (receptive-field mask projection).",
    ),
    folds: str = typer.Option(None, help="decoy-mnist: comma-separated fold indices (0,1,2)."),
    jobs: int = typer.Option(
        0,
        help="decoy-mnist: runs trained at a time in worker processes (0: one per CPU core, "
        "at most 4; 1 when training on a GPU).",
    ),
) -> None:
    """Reproduce a paper experiment: every method x fold, then the paper's tables and a report.

    decoy-mnist trains a Bayesian LeNet without feedback, with Bayesian explanation feedback,
    with counterexample augmentation and with RRR on Decoy MNIST color and position (3-fold
    cross-validation, independent test set) and prints Table 1 (balanced accuracy, F1) and
    Table 2 (AUC, overlap). Interrupted reproductions resume.

    Example: rightfocus reproduce decoy-mnist --quick
    """
    known = ("decoy-mnist", "isic", "pets", "sbd", "proxy-attention", "active-feedback")
    if experiment not in known:
        raise UserError(f"unknown experiment {experiment!r}", hint=f"choose {', '.join(known)}")
    if jobs < 0:
        raise UserError(f"--jobs {jobs}", hint="use 0 (one per CPU core) or a positive count")
    from rightfocus.engine.reproduce import reproduce  # heavy: imports Lightning
    from rightfocus.feedback.active import reproduce_active_feedback  # heavy: imports Lightning

    folder = out or f"runs/reproduce-{experiment}"
    try:
        if experiment == "active-feedback":
            result = reproduce_active_feedback(
                folder, quick=quick, overrides=set_ or [], log=console.print
            )
        else:
            result = reproduce(
                experiment,
                folder,
                quick=quick,
                root=root,
                overrides=set_ or [],
                log=console.print,
                variants=variants.split(",") if variants else None,
                methods=methods.split(",") if methods else None,
                folds=[int(f) for f in folds.split(",")] if folds else None,
                jobs=jobs,
            )
    except RuntimeError as err:  # datasets that must be downloaded say what is missing
        if user_message(err) is not None:
            raise
        raise UserError(str(err)) from err
    for name, table in result.tables.items():
        console.print(_paper_table(name, table))
    console.print(
        f"{len(result.run_seconds)} runs in {result.seconds:.0f} s"
        + (
            f" ({100 * result.overhead_share:.1f} % outside training steps)"
            if result.train_step_seconds > 0
            else ""
        )
        + f"; report: {result.report['html']}"
    )


def _paper_table(title: str, table: Any) -> Table:
    out = Table(title=title)
    out.add_column("row")
    out.add_column("metric")
    for col in table.columns:
        out.add_column(str(col))
    for (row, metric), values in table.iterrows():
        cells = [
            Text(str(v)[2:-2], style="bold") if str(v).startswith("**") else Text(str(v))
            for v in values
        ]
        out.add_row(str(row), str(metric), *cells)
    return out


@app.command("studio")
def studio_cmd(
    run: str = typer.Argument(None, help="A finished run folder (config.yaml + checkpoints/)."),
    config: str = typer.Option(
        None, "--config", help="Config file (instead of RUN, with --checkpoint)."
    ),
    checkpoint: str = typer.Option(None, "--checkpoint", help="Checkpoint file for --config."),
    store: str = typer.Option(None, help="Feedback store folder (default: <run>/feedback)."),
    host: str = typer.Option(
        "127.0.0.1", help="Address to bind; other than loopback needs a token."
    ),
    port: int = typer.Option(8765, help="Port (0: any free port)."),
    who: str = typer.Option("", help="Annotator name recorded with every saved mask."),
) -> None:
    """Start the feedback studio: queue, inspect, paint masks, retrain and compare in a browser.

    Example: rightfocus studio runs/decoy_mnist_position/lenet_bayes_feedback
    """
    from rightfocus.studio import StudioSession, serve  # heavy: FastAPI, Lightning

    if (run is None) == (config is None) or (config is not None and checkpoint is None):
        raise UserError("give a run folder, or --config FILE with --checkpoint FILE")
    session = StudioSession(run, config=config, checkpoint=checkpoint, store=store, who=who)
    serve(session, host=host, port=port, announce=console.print)


@app.command("version")
def version_cmd() -> None:
    """Print the version."""
    console.print(rightfocus.__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
