"""Command-line interface: thin, everything resolved through the registries."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.table import Table

import rightfocus
from rightfocus._registry import DATASETS, GUIDANCE, METHODS, MODELS

app = typer.Typer(
    name="rightfocus",
    help="Explain, measure and correct what image classifiers look at.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(width=None if sys.stdout.isatty() else 140)

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
    steps: int = typer.Option(400, help="Training steps (batch 64)."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Train a LeNet on 4,000 real MNIST digits (offline) and save an attribution grid.

    Example: rightfocus demo --out demo_out
    """
    from rightfocus.demo import run_demo

    result = run_demo(out_dir=out, steps=steps, seed=seed)
    console.print(
        f"LeNet trained for {steps} steps in {result.train_seconds:.1f} s; "
        f"test accuracy {result.test_accuracy:.3f} on 1,000 held-out real digits"
    )
    console.print(f"Attribution grid written to {result.figure}")


@app.command("version")
def version_cmd() -> None:
    """Print the version."""
    console.print(rightfocus.__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
