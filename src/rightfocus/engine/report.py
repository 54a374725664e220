"""Aggregate runs on disk into one queryable table and a self-contained HTML/Markdown report.

A run folder ``runs/<experiment>/<run>/`` holds ``config.yaml`` (the resolved config) and
``metrics.json`` (final test metrics), TensorBoard events and figures (``*.png``).
:func:`load_runs` turns a tree of them into a pandas DataFrame with one row per run: the
config flattened to dotted columns by ``pandas.json_normalize`` (``data.variant``,
``optim.lr``, ``guidance.0.name``, ...), a ``method`` column naming the guidance ("none" when
empty), and one column per metric. The tables are written by pandas too (``to_html``,
``to_markdown``).

Example (the question "best accuracy of Proxy Attention with Grad-CAM++ and threshold 0.5"):
    >>> runs = load_runs("runs")  # doctest: +SKIP
    >>> best_run(runs, "accuracy", **{  # doctest: +SKIP
    ...     "guidance.0.name": "proxy_attention", "guidance.0.method": "gradcam_plus_plus",
    ...     "guidance.0.threshold": 0.5})
"""

from __future__ import annotations

import base64
import html
import json
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from rightfocus._events import training_curves
from rightfocus._io import atomic_path, atomic_write_text
from rightfocus.viz._save import pyplot, save_figure

__all__ = [
    "best_run",
    "load_runs",
    "paper_table",
    "select",
    "summarize",
    "training_curves",
    "write_report",
]

LOWER_IS_BETTER = ("overlap", "ece", "mce", "nll", "brier", "loss", "follows_decoy")


def _nested(obj: Any) -> Any:
    """``obj`` ready for ``pd.json_normalize``, which flattens mappings only: a list of mappings
    becomes a mapping keyed by position (``guidance.0.name``), any other list its JSON text."""
    if isinstance(obj, Mapping):
        return {str(key): _nested(value) for key, value in obj.items()}
    if isinstance(obj, list):
        if obj and all(isinstance(v, Mapping) for v in obj):
            return {str(i): _nested(v) for i, v in enumerate(obj)}
        return json.dumps(obj)
    return obj


def _flat_table(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Nested records -> one row each, nested keys joined with dots."""
    return pd.json_normalize([_nested(r) for r in records], sep=".")


def _method_name(config: Mapping[str, Any]) -> str:
    guidance = config.get("guidance") or []
    names = [g.get("name", "?") for g in guidance if isinstance(g, Mapping)]
    return "+".join(names) if names else "none"


def _read_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(config, metrics)`` of a finished run folder, None when either file is missing."""
    metrics_file, config_file = run_dir / "metrics.json", run_dir / "config.yaml"
    if not metrics_file.is_file() or not config_file.is_file():
        return None
    try:
        metrics = json.loads(metrics_file.read_text())
        config = yaml.safe_load(config_file.read_text()) or {}
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ValueError(
            f"{run_dir} has an unreadable metrics.json or config.yaml ({err}); "
            "re-run `rightfocus evaluate` on it or delete the folder"
        ) from err
    return config, metrics


def load_runs(runs_dir: str | Path) -> pd.DataFrame:
    """One row per finished run (a folder with ``metrics.json`` and ``config.yaml``): columns
    ``run_dir``, ``method``, the flattened config, then the flattened metrics (a metric wins
    over a config entry of the same name)."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"Runs folder {root} does not exist")
    found = [
        (metrics_file.parent, read)
        for metrics_file in sorted(root.rglob("metrics.json"))
        if (read := _read_run(metrics_file.parent)) is not None
    ]
    if not found:
        raise ValueError(
            f"No finished runs under {root}: a run folder needs metrics.json and config.yaml "
            "(train with `rightfocus train CONFIG` first)"
        )
    runs = pd.DataFrame(
        {
            "run_dir": [str(run_dir) for run_dir, _ in found],
            "method": [_method_name(config) for _, (config, _) in found],
        }
    )
    configs = _flat_table([config for _, (config, _) in found])
    metrics = _flat_table([metrics for _, (_, metrics) in found])
    configs = configs.drop(columns=[c for c in configs if c in metrics or c in runs])
    return pd.concat([runs, configs, metrics.drop(columns=[c for c in metrics if c in runs])],
                     axis=1)  # fmt: skip


def select(runs: pd.DataFrame, **where: Any) -> pd.DataFrame:
    """Rows whose columns equal the given values (dotted names: ``**{"data.variant": "color"}``)."""
    keep = pd.Series(True, index=runs.index)
    for column, value in where.items():
        if column not in runs.columns:
            raise KeyError(f"No column {column!r}; columns are: {', '.join(runs.columns)}")
        keep &= runs[column] == value
    return runs[keep]


def best_run(runs: pd.DataFrame, metric: str, **where: Any) -> pd.Series:
    """The row with the best ``metric`` among ``select(runs, **where)`` (lower-is-better aware)."""
    rows = select(runs, **where)
    if metric not in rows.columns:
        raise KeyError(f"No metric {metric!r}; columns are: {', '.join(runs.columns)}")
    rows = rows.dropna(subset=[metric])
    if rows.empty:
        raise ValueError(f"No run matches {where} with a value for {metric!r}")
    lower = any(tag in metric.lower() for tag in LOWER_IS_BETTER)
    return rows.loc[rows[metric].idxmin() if lower else rows[metric].idxmax()]


def summarize(runs: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Mean, sample std and count of each metric over the runs (e.g. folds) in each group."""
    missing = [c for c in [*by, *metrics] if c not in runs.columns]
    if missing:
        raise KeyError(f"Unknown columns {missing}; columns are: {', '.join(runs.columns)}")
    grouped = runs.groupby(list(by), dropna=False)[list(metrics)]
    table = grouped.agg(["mean", "std", "count"])
    return table


def _fmt(mean: float, std: float, bold: bool) -> str:
    if math.isnan(mean):
        return "n/a"
    text = f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"
    return f"**{text}**" if bold else text


def paper_table(
    runs: pd.DataFrame,
    metrics: Sequence[str],
    row: str = "data.variant",
    column: str = "method",
    column_order: Sequence[str] | None = None,
    row_order: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The papers' table layout: rows = ``row`` x metric, columns = methods, "mean ± std".

    The best value in each row is wrapped in ``**bold**`` (lower is better for overlap, ECE,
    NLL, ...); a cell over a single run shows its value alone. Missing cells stay empty
    strings so a reader sees what did not run.
    """
    summary = summarize(runs, [row, column], metrics)
    columns = list(column_order) if column_order else sorted(runs[column].dropna().unique())
    keys = sorted(runs[row].dropna().unique(), key=str)
    if row_order:
        keys = [k for k in row_order if k in keys] + [k for k in keys if k not in row_order]
    out: dict[tuple[str, str], dict[str, str]] = {}
    for key in keys:
        for metric in metrics:
            cells: dict[str, tuple[float, float]] = {}
            for col in columns:
                if (key, col) in summary.index:
                    stats = summary.loc[(key, col), metric]
                    cells[col] = (float(stats["mean"]), float(stats["std"]))
            lower = any(tag in metric.lower() for tag in LOWER_IS_BETTER)
            valid = {c: v for c, v in cells.items() if not math.isnan(v[0])}
            best = (min if lower else max)(valid, key=lambda c: valid[c][0]) if valid else None
            out[(str(key), metric)] = {
                col: _fmt(*cells[col], bold=col == best) if col in cells else "" for col in columns
            }
    table = pd.DataFrame.from_dict(out, orient="index")
    table.index = pd.MultiIndex.from_tuples(table.index, names=[row, "metric"])
    return table


def _curves_figure(runs: pd.DataFrame, out: Path) -> Path | None:
    plt = pyplot()
    tags = ("train/loss", "val/acc", "val/balanced_accuracy")
    series = []
    for _, run in runs.iterrows():
        curves = training_curves(run["run_dir"], tags)
        if not curves.empty:
            series.append((f"{run['method']} {Path(run['run_dir']).name}", curves))
    if not series:
        return None
    present = [t for t in tags if any((c["tag"] == t).any() for _, c in series)]
    fig, axes = plt.subplots(1, len(present), figsize=(5 * len(present), 3.2), squeeze=False)
    for ax, tag in zip(axes[0], present):
        for label, curves in series:
            part = curves[curves["tag"] == tag]
            if not part.empty:
                ax.plot(part["step"], part["value"], label=label, linewidth=1)
        ax.set_title(tag)
        ax.set_xlabel("step")
    if len(series) <= 12:
        axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    return save_figure(fig, out, dpi=90, fmt="png")


def _img_tag(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def _md_to_html_cell(text: str) -> str:
    if text.startswith("**") and text.endswith("**"):
        return f"<b>{html.escape(text[2:-2])}</b>"
    return html.escape(text)


def _as_text(table: pd.DataFrame) -> pd.DataFrame:
    """The index levels as leading columns (a key on every row) and every cell as text."""
    flat = table.reset_index() if any(n is not None for n in table.index.names) else table
    return flat.astype(str)


def _table_html(table: pd.DataFrame) -> str:
    """``DataFrame.to_html``; cells and names escaped, ``**bold**`` cells as ``<b>``."""
    cells = _as_text(table)
    cells = cells.map(_md_to_html_cell).rename(columns=lambda c: html.escape(str(c)))
    return cells.to_html(index=False, escape=False, border=0)


def _table_md(table: pd.DataFrame) -> str:
    """``DataFrame.to_markdown`` (a pipe table); cells are kept as written (no number
    reformatting), so ``mean ± std`` and ``**bold**`` stay as they are."""
    return _as_text(table).to_markdown(index=False, disable_numparse=True)


_CSS = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px;"
    "font-size:13px;text-align:right}th{background:#eee}img{max-width:100%;margin:.5em 0}"
    "figure{margin:1em 0}figcaption{font-size:12px;color:#555}"
)


_CONFIG_PREFIXES = ("data.", "model.", "optim.", "trainer.", "evaluation.")


def _metric_columns(runs: pd.DataFrame) -> list[str]:
    return [
        c
        for c in runs.columns
        if pd.api.types.is_numeric_dtype(runs[c]) and not c.startswith(_CONFIG_PREFIXES)
    ]


def _check_columns(
    runs: pd.DataFrame, row: str, tables: Mapping[str, Sequence[str]], explicit: bool
) -> None:
    """A misspelled row column or metric is an error listing the valid choices."""
    if row not in runs.columns:
        choices = sorted(c for c in runs.columns if c not in _metric_columns(runs))
        raise ValueError(f"Unknown row column {row!r} (--by); choose one of: {', '.join(choices)}")
    if not explicit:
        return
    valid = _metric_columns(runs)
    missing = sorted({m for ms in tables.values() for m in ms if m not in runs.columns})
    if missing:
        raise ValueError(
            f"Unknown metric(s) {', '.join(map(repr, missing))} (--metrics); the runs have: "
            f"{', '.join(valid)}"
        )


def _place_figure(fig: Path, out: Path) -> Path:
    """The figure inside ``out`` (copied into ``out/figures`` when it lives elsewhere), so
    that report.md's relative links resolve wherever the report is written."""
    if out in fig.parents:
        return fig
    target = out / "figures" / "_".join(fig.parts[-3:])  # run/figures/x.png: unique names
    if target.resolve() != fig.resolve():
        with atomic_path(target) as tmp:
            shutil.copyfile(fig, tmp)
    return target


def write_report(
    runs_dir: str | Path,
    out_dir: str | Path | None = None,
    tables: Mapping[str, Sequence[str]] | None = None,
    row: str = "data.variant",
    column_order: Sequence[str] | None = None,
    notes: Sequence[str] = (),
    title: str = "rightfocus report",
    *,
    column: str = "method",
    row_order: Sequence[str] | None = None,
    runs: pd.DataFrame | None = None,
    figures: Sequence[tuple[Path, str]] = (),
    extra_tables: Mapping[str, pd.DataFrame] | None = None,
    include_run_figures: bool = True,
) -> dict[str, Any]:
    """Write ``report.html`` (self-contained, figures embedded) and ``report.md``.

    Args:
        runs_dir: folder of run folders. out_dir: where to write (default ``runs_dir``).
        tables: title -> metric columns, e.g. ``{"Table 1": ["balanced_accuracy", "f1"]}``;
            default: every numeric metric that all runs share, in one table.
        row: the column that makes a table row (with the metric); column: the table columns.
        column_order / row_order: order of the methods / rows.
        notes: paragraphs shown under the title (e.g. differences from the paper's protocol).
        runs: the rows to tabulate (default ``load_runs(runs_dir)``).
        figures: ``(png, caption)`` pairs shown first; extra_tables: title -> DataFrame shown
            as is; include_run_figures: also show the training curves and every run's PNGs.

    Raises:
        ValueError: unknown ``row`` or metric (the message lists the valid ones).

    Returns:
        ``{"html": path, "markdown": path, "figures": [...]}``; figures outside ``out_dir`` are
        copied into ``out_dir/figures`` so the Markdown file's links resolve.
    """
    explicit = tables is not None
    runs = load_runs(runs_dir) if runs is None else runs
    out = Path(out_dir) if out_dir is not None else Path(runs_dir)
    if tables is None:
        tables = {"Results": _metric_columns(runs)}
    _check_columns(runs, row, tables, explicit)
    runs = runs.copy()
    if runs[row].isna().all():  # e.g. data.variant of non-Decoy datasets: one row
        runs[row] = "all"
    html_parts = [f"<h1>{html.escape(title)}</h1>"]
    md_parts = [f"# {title}"]
    if notes:
        html_parts.append("<h2>Protocol notes</h2><ul>")
        html_parts += [f"<li>{html.escape(note)}</li>" for note in notes]
        html_parts.append("</ul>")
        md_parts += ["## Protocol notes", "\n".join(f"- {note}" for note in notes)]
    n_runs = runs["run_dir"].nunique() if "run_dir" in runs.columns else len(runs)
    html_parts.append(f"<p>{n_runs} runs from {html.escape(str(runs_dir))}.</p>")
    md_parts.append(f"{n_runs} runs from `{runs_dir}`.")
    for name, metrics in tables.items():
        present = [m for m in metrics if m in runs.columns]
        if not present:
            continue
        table = paper_table(runs, present, row, column, column_order, row_order)
        html_parts += [f"<h2>{html.escape(name)}</h2>", _table_html(table)]
        md_parts += [f"## {name}", _table_md(table)]
    for name, table in (extra_tables or {}).items():
        html_parts += [f"<h2>{html.escape(name)}</h2>", _table_html(table)]
        md_parts += [f"## {name}", _table_md(table)]
    fig_dir = out / "figures"
    shown: list[tuple[Path, str]] = list(figures)
    if include_run_figures:
        curves = _curves_figure(runs, fig_dir / "training_curves.png")
        if curves is not None:
            shown.append((curves, "training curves"))
        for run_dir in runs["run_dir"].unique():
            for png in sorted(Path(run_dir).rglob("*.png")):
                if fig_dir not in png.parents:
                    shown.append((png, str(png.relative_to(Path(runs_dir)))))
    if shown:
        html_parts.append("<h2>Figures</h2>")
        md_parts.append("## Figures")
    placed = []
    for fig, caption in shown:
        local = _place_figure(Path(fig), out)
        placed.append(local)
        html_parts.append(
            f"<figure>{_img_tag(local)}<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
        md_parts.append(f"![{caption}]({local.relative_to(out).as_posix()})")
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>{''.join(html_parts)}</body></html>"
    )
    html_path = atomic_write_text(out / "report.html", page)
    md_path = atomic_write_text(out / "report.md", "\n\n".join(md_parts) + "\n")
    return {"html": html_path, "markdown": md_path, "figures": placed}


BROWSER_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def check_in_browser(
    html_path: str | Path, screenshot: str | Path | None = None, width: int = 1200
) -> dict[str, Any]:
    """Open a report in the OS's headless Chromium (Playwright) and check every image loaded.

    Returns ``{"images": n, "broken": [alt, ...], "screenshot": path | None}``; writes a
    full-page PNG screenshot when ``screenshot`` is given.

    Raises:
        FileNotFoundError: no ``chromium`` on PATH (``scripts/system-deps.sh`` installs it).
    """
    # optional: Playwright (dev extra) and a browser are needed only for this check
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise FileNotFoundError("No chromium on PATH: install it (scripts/system-deps.sh)")
    url = Path(html_path).resolve().as_uri()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=list(BROWSER_ARGS))
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(url, wait_until="load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.alt, e.complete && e.naturalWidth > 0])"
            )
            shot = None
            if screenshot is not None:
                with atomic_path(Path(screenshot)) as tmp:
                    page.screenshot(path=str(tmp), full_page=True, type="png")
                shot = Path(screenshot)
        finally:
            browser.close()
    return {"images": len(images), "broken": [a for a, ok in images if not ok], "screenshot": shot}
