"""The report aggregates fixture runs into the paper's tables, a DataFrame and HTML/Markdown."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from rightfocus.engine.report import best_run, load_runs, paper_table, select, write_report

METHODS = {"none": [], "bayes_feedback": [{"name": "bayes_feedback", "lam": 5e-5}]}


def _write_run(root: Path, variant: str, method: str, fold: int, acc: float, overlap: float):
    run = root / f"decoy_{variant}" / f"{method}_fold{fold}"
    run.mkdir(parents=True)
    cfg = {
        "data": {"dataset": "decoy_mnist", "variant": variant, "fold": fold},
        "guidance": METHODS[method],
        "optim": {"lr": 1e-3},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / "metrics.json").write_text(json.dumps({"balanced_accuracy": acc, "overlap": overlap}))
    return run


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for variant, shift in (("color", 0.0), ("position", 0.1)):
        for fold in range(3):
            _write_run(root, variant, "none", fold, 0.5 + shift + 0.01 * fold, 0.6)
            _write_run(root, variant, "bayes_feedback", fold, 0.9 + 0.01 * fold, 0.2 + shift)
    # A figure in one run must be embedded / linked.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    fig.savefig(root / "decoy_color" / "none_fold0" / "saliency.png")
    plt.close(fig)
    return root


def test_load_runs_flattens_config_and_metrics(runs_dir: Path) -> None:
    runs = load_runs(runs_dir)
    assert len(runs) == 12
    assert {"data.variant", "optim.lr", "method", "balanced_accuracy", "overlap"} <= set(runs)
    assert set(runs["method"]) == {"none", "bayes_feedback"}
    assert len(select(runs, **{"data.variant": "color", "method": "none"})) == 3


def test_best_run_query(runs_dir: Path) -> None:
    runs = load_runs(runs_dir)
    best = best_run(runs, "balanced_accuracy", **{"data.variant": "position"})
    assert best["method"] == "bayes_feedback" and best["data.fold"] == 2
    assert best["balanced_accuracy"] == pytest.approx(0.92)
    # overlap: lower is better.
    assert best_run(runs, "overlap")["data.variant"] == "color"
    with pytest.raises(KeyError, match="No column"):
        select(runs, **{"data.nope": 1})


def test_paper_table_mean_std_and_bold(runs_dir: Path) -> None:
    runs = load_runs(runs_dir)
    table = paper_table(
        runs, ["balanced_accuracy", "overlap"], column_order=["none", "bayes_feedback"]
    )
    cell = table.loc[("color", "balanced_accuracy"), "bayes_feedback"]
    assert cell == "**0.9100 ± 0.0100**"
    assert table.loc[("color", "balanced_accuracy"), "none"] == "0.5100 ± 0.0100"
    assert table.loc[("color", "overlap"), "bayes_feedback"].startswith("**0.2000")
    assert table.loc[("position", "overlap"), "bayes_feedback"].startswith("**0.3000")


def test_write_report_has_every_row_and_figure(runs_dir: Path, tmp_path: Path) -> None:
    out = write_report(
        runs_dir,
        tmp_path / "report",
        tables={"Table 1": ["balanced_accuracy"], "Table 2": ["overlap"]},
        column_order=["none", "bayes_feedback"],
    )
    page = out["html"].read_text()
    md = out["markdown"].read_text()
    for variant in ("color", "position"):
        assert page.count(f"<td>{variant}</td>") == 2
        assert re.search(rf"^\| {variant} +\| balanced_accuracy +\|", md, re.M)
    assert "<b>0.9100 ± 0.0100</b>" in page
    assert page.count("data:image/png;base64,") == len(out["figures"]) >= 1
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        path = Path(link)
        assert (path if path.is_absolute() else out["markdown"].parent / path).is_file()


def test_empty_runs_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="No finished runs"):
        load_runs(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_runs(tmp_path / "missing")


def test_markdown_links_resolve_with_and_without_out(runs_dir: Path, tmp_path: Path) -> None:
    for out_dir in (None, tmp_path / "elsewhere"):
        out = write_report(runs_dir, out_dir, tables={"T": ["balanced_accuracy"]})
        md = out["markdown"]
        links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md.read_text())
        assert links and all(not Path(link).is_absolute() for link in links)
        assert all((md.parent / link).is_file() for link in links)


def test_single_run_cells_show_the_value_not_nan(runs_dir: Path) -> None:
    runs = load_runs(runs_dir)
    one = runs[runs["data.fold"] == 0]
    table = paper_table(one, ["balanced_accuracy"], column_order=["none", "bayes_feedback"])
    assert table.loc[("color", "balanced_accuracy"), "none"] == "0.5000"
    assert "nan" not in table.to_string()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"row": "data.varient"}, r"Unknown row column 'data.varient'.*data\.variant"),
        ({"tables": {"R": ["acuracy"]}}, r"Unknown metric\(s\) 'acuracy'.*balanced_accuracy"),
    ],
)
def test_misspelled_row_or_metric_lists_the_choices(runs_dir: Path, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        write_report(runs_dir, **kwargs)
    assert not (runs_dir / "report.html").exists()


def test_cli_report_misspellings_exit_2(runs_dir: Path) -> None:
    from typer.testing import CliRunner

    from rightfocus.cli import app

    runner = CliRunner()
    for args in (["--by", "data.varient"], ["--metrics", "acuracy"]):
        result = runner.invoke(app, ["report", str(runs_dir), *args])
        assert result.exit_code == 2, result.output
        assert "choose one of" in result.output or "the runs have" in result.output


def test_flattening_matches_the_dotted_names(tmp_path: Path) -> None:
    """Nested config and metrics become dotted columns: lists of mappings by position, other
    lists as JSON text, empty sections vanish, and a metric wins over a config entry."""
    run = tmp_path / "runs" / "exp" / "a"
    run.mkdir(parents=True)
    cfg = {
        "data": {"dataset": "d", "options": {}},
        "guidance": [{"name": "rrr", "lam": 10.0}, {"name": "bayes_feedback"}],
        "optim": {"betas": [0.9, 0.99]},
        "ece": "a config entry",
    }
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    metrics = {"ece": 0.05, "calibration": {"bins": {"count": [1, 2]}}, "auc": None}
    (run / "metrics.json").write_text(json.dumps(metrics))
    runs = load_runs(tmp_path / "runs")
    row = runs.iloc[0]
    assert row["method"] == "rrr+bayes_feedback"
    assert row["guidance.0.name"] == "rrr" and row["guidance.0.lam"] == 10.0
    assert row["guidance.1.name"] == "bayes_feedback"
    assert row["optim.betas"] == "[0.9, 0.99]"
    assert row["calibration.bins.count"] == "[1, 2]"
    assert row["ece"] == 0.05 and list(runs.columns).count("ece") == 1
    assert not any(c.startswith("data.options") for c in runs.columns)
    assert list(runs.columns[:2]) == ["run_dir", "method"]


def test_tables_keep_every_cell_as_written(runs_dir: Path, tmp_path: Path) -> None:
    """Markdown and HTML show each cell exactly as the table holds it (no number reformatting),
    with the row keys on every row, bold as <b> in HTML, and names escaped."""
    from rightfocus.engine.report import _table_html, _table_md

    table = paper_table(
        load_runs(runs_dir), ["balanced_accuracy", "overlap"],
        column_order=["none", "bayes_feedback"],
    )  # fmt: skip
    lines = _table_md(table).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["data.variant", "metric", "none", "bayes_feedback"]
    assert set(lines[1]) <= set("|:-")
    body = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    expected = [[*key, *row] for key, row in zip(table.index, table.to_numpy().tolist())]
    assert body == expected
    assert body[0] == ["color", "balanced_accuracy", "0.5100 ± 0.0100", "**0.9100 ± 0.0100**"]
    runs = load_runs(runs_dir)
    single = paper_table(runs[runs["data.fold"] == 0], ["overlap"], column_order=list(METHODS))
    assert "| 0.6000 " in _table_md(single)  # a number-like cell keeps its four decimals
    page = _table_html(table.rename(columns={"none": "<none>"}))
    assert "<th>&lt;none&gt;</th>" in page
    assert "<td><b>0.9100 ± 0.0100</b></td>" in page and "**" not in page
    assert page.count("<tr") == 1 + len(table)
