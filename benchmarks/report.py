"""Write docs/benchmarks.md from the results of one ``make bench`` run (generated; committed).

Reads ``benchmarks/results/{attribution,memory,multitarget,quantus_metrics}.json`` and renders
one Markdown page: the machine, thread count, library versions, the commands, and per method
ours vs every peer that has it (images/s, ratio to the fastest peer and to the floor).
Missing result files are listed as not run, never silently dropped.

Usage: ``python benchmarks/report.py`` (``make bench`` runs it last).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rightfocus._io import atomic_write_text

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOC = HERE.parent / "docs" / "benchmarks.md"
MODEL_TITLES = {  # full runs: LeNet-5 batch 256, ResNet-18 16, ViT 8; --quick: 2 on the large
    "lenet5": "LeNet-5, 1x28x28",
    "resnet18": "ResNet-18 (random weights), 3x224x224",
    "vit": "ViT-Tiny/16 (timm, random weights), 3x224x224",
}


QUICK_TEXT = (
    "Integrated Gradients 10 steps, SmoothGrad / SmoothGrad² / VarGrad 4 samples, Kernel SHAP "
    "and LIME 50 coalitions, RISE 100 masks"
)
HEADER = "| method | batch | ours img/s | peers img/s | vs fastest peer | vs floor | goal | notes |"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _ratio(v: float | None) -> str:
    return f"{v:.2f}x" if isinstance(v, (int, float)) else "-"


def _run_line(run: dict[str, Any]) -> str:
    quick = " (quick settings)" if run.get("quick") else ""
    load = run.get("load_average", "not recorded")
    return (f"- `{run['command'].strip()}`{quick} — {run.get('date', '?')}, "
            f"{run.get('threads', '?')} torch threads, load {load}")  # fmt: skip


def attribution_section(data: dict[str, Any]) -> list[str]:
    meta = data["meta"]
    runs = meta.get("runs") or [meta]
    lines = [
        "## Attribution methods",
        "",
        "Commands (each `--only` group ran alone, one after the other; date and load average "
        "at its start):",
        "",
        *[_run_line(r) for r in runs],
        "",
        ("" if data.get("finished") else "**Stopped early: rows below are what finished.** ")
        + "`--quick` keeps the batches (LeNet-5 256, ResNet-18 16, ViT 8) and uses cheaper "
        f"settings, the same for every library: {QUICK_TEXT}. On ResNet-18 and the ViT the "
        "methods of many passes get one timed round after a warm-up call of every library on "
        "2 images; the others (and all of LeNet-5) get a warm-up call right before each timed "
        "call (`torch.utils.benchmark`) and the median of the rounds. Rows of `--quick` runs "
        "before 18:40 UTC on 2026-12-01 used 2 images of the large models (the batch column).",
        "",
        "Images/s (higher is better), median of interleaved repeats. *vs fastest peer* is ours "
        "divided by the fastest peer that has the method (>= 1.00x: we are at least as fast); "
        "*vs floor* is ours divided by one forward + one gradient to the input. Ratios are "
        "from the same run; absolute numbers move with the load of the shared machine.",
        "",
    ]
    rows = data["rows"]
    for tag, title in MODEL_TITLES.items():
        mine = [r for r in rows if r.get("model") == tag]
        if not mine:
            continue
        lines += [f"### {title}", "", HEADER, "|---|---:|---:|---|---:|---:|---|---|"]
        for r in mine:
            if "error" in r:
                lines.append(f"| {r['method']} | | error | | | | | {r['error'][:100]} |")
                continue
            peers = ", ".join(f"{k} {v:.3g}" for k, v in r.get("peers", {}).items()) or "none"
            goal = ""
            if "goal" in r:
                state = "met" if r.get("met") else "**missed**"
                goal = f">= {r['goal']}x {r.get('goal_vs', '')}: {state}"
            notes = "; ".join(r.get("notes", []))
            lines.append(
                f"| {r['method']} | {r['batch']} | {r['images_per_s']:.3g} | {peers} | "
                f"{_ratio(r.get('vs_fastest_peer'))} | {_ratio(r.get('vs_floor'))} | {goal} | "
                f"{notes} |"
            )
        lines.append("")
    return lines


def memory_section(data: dict[str, Any]) -> list[str]:
    steps = data["steps"]
    command = data.get("command", f"python benchmarks/memory.py --steps {steps}")
    load = data.get("load_average_after")
    lines = [
        "## Memory: Integrated Gradients on ResNet-18, batch 16",
        "",
        f"Command: `{command}`"
        + (f" (load average {load} at its end)" if load else "")
        + ". Each case in a fresh process; peak = peak "
        "resident memory minus the resident memory before the call. Goal: <= 2 GB at no worse "
        "throughput than Captum's best setting.",
        "",
        "| case | steps | img/s | peak GB | note |",
        "|---|---:|---:|---:|---|",
    ]
    for r in data["rows"]:
        if "error" in r:
            lines.append(f"| {r['case']} | | error | | {r['error']} |")
            continue
        note = ""
        if "extrapolated_batch16_gb" in r:
            note = (f"batch {r['batch']}, all path points in one pass; "
                    f"~{r['extrapolated_batch16_gb']:.1f} GB at batch 16 and 50 steps")  # fmt: skip
        note = "; ".join(x for x in (note, r.get("note", "")) if x)
        lines.append(f"| {r['case']} | {r.get('steps', steps)} | {r['images_per_s']:.3g} | "
                     f"{r['peak_gb']:.2f} | {note} |")  # fmt: skip
    return [*lines, ""]


def _ceiling_lines(data: dict[str, Any]) -> list[str]:
    if "ceiling" not in data:
        return []
    return [
        "Methods that need one full backward pass to the input per target (gradient, input x "
        "gradient, guided backpropagation, DeconvNet, DeepLIFT, DeepSHAP, LRP, Guided "
        "Grad-CAM) share only the forward pass ``F`` across targets: one call costs "
        "``F + K Bw`` against ``K (F + Bw)``, so no batching can exceed "
        f"``K (F + Bw) / (F + K Bw)`` = **{data['ceiling']:.2f}x** here (``F`` and ``Bw`` "
        "timed on LeNet-5 in the last run); the 3x goal is out of their reach by definition, "
        "and their rows are compared with that ceiling (a row above it is timing noise of the "
        "10 separate calls). Integrated Gradients and SmoothGrad stop each target's backward "
        "at the first layer's output (its input gradient runs once per target for all steps), "
        "so that ceiling does not bind them.",
        "",
    ]


def multitarget_section(data: dict[str, Any]) -> list[str]:
    lines = [
        f"## Several targets in one call: LeNet-5, batch {data['batch']}, "
        f"{data['targets']} targets",
        "",
        f"Command: `{data.get('command', 'python benchmarks/multitarget.py')}`. One call with a "
        "`(B, 10)` target vs 10 calls; goal >= 3x with identical results.",
        "",
        *_ceiling_lines(data),
        "| method | one call s | 10 calls s | speed-up | max abs diff | goal |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in data["rows"]:
        state = "met" if r["met"] else "**missed**"
        if not r["met"] and r.get("full_backward") and "ceiling" in data:
            state += f" (ceiling {data['ceiling']:.2f}x)"
        lines.append(f"| {r['method']} | {r['multi_s']:.3f} | {r['separate_s']:.3f} | "
                     f"{r['speedup']:.2f}x | {r['max_abs_diff']:.1e} | {state} |")  # fmt: skip
    return [*lines, ""]


def quantus_section(data: dict[str, Any]) -> list[str]:
    load = data.get("load_average")
    lines = [
        "## Evaluation metrics vs Quantus",
        "",
        f"Command: `{data.get('command', 'python benchmarks/quantus_metrics.py')}`"
        + (f" ({data.get('date', '')}, load average {load} at its end)" if load else "")
        + f". Same trained LeNet, {data['rows'][0]['images']} MNIST images, same attributions; "
        "goal >= 10x. *Model floor*: the model work of the definitions (every image at every "
        "deletion step, 256 x 29 forward passes in one batch; the check's five saliency "
        "calls, one per randomised layer: both libraries are given the attributions of the "
        "unmodified model, which Quantus recomputes and ours uses); *bound* = Quantus s / "
        "floor s, the largest speed-up of an implementation that runs all of that work (ours "
        "skips the deletion steps that change no pixel, about a third on these digits, and "
        "batches the rest).",
        "",
        "| metric | Quantus equivalent | ours s | Quantus s | speed-up | model floor s | bound | "
        "agreement |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in data["rows"]:
        if r["metric"] == "deletion":
            agree = f"curves equal to {r['max_curve_difference']:.1e}"
        else:
            ours, theirs = r["ours_correlations"], r["peer_correlations"]
            pairs = ", ".join(
                f"{k} {v:.2f}/{theirs[k]:.2f}" for k, v in ours.items() if k in theirs
            )
            agree = f"Spearman after randomising up to each layer, ours/Quantus: {pairs}"
        floor = f"{r['floor_s']:.3f}" if "floor_s" in r else "-"
        bound = f"{r['max_speedup']:.1f}x" if "max_speedup" in r else "-"
        lines.append(f"| {r['metric']} | {r['peer']} | {r['ours_s']:.3f} | {r['peer_s']:.3f} | "
                     f"{r['speedup']:.1f}x | {floor} | {bound} | {agree} |")  # fmt: skip
    return [*lines, ""]


def _merge_partial_runs() -> dict[str, Any] | None:
    """The rows of every partial run (``attribution.<model>...partial.json``), one table."""
    files = sorted(RESULTS.glob("attribution.*.json"), key=lambda p: p.stat().st_mtime)
    parts = [json.loads(p.read_text()) for p in files]
    if not parts:
        return None
    meta = dict(parts[-1]["meta"])  # the newest run's machine and versions
    meta["command"] = "; ".join(p["meta"]["command"].strip() for p in parts)
    meta["quick"] = any(p["meta"]["quick"] for p in parts)
    latest = {(r["model"], r["method"]): id(p) for p in parts for r in p["rows"]}
    meta["runs"] = [p["meta"] for p in parts if id(p) in latest.values()]  # runs with rows shown
    latest = {(r["model"], r["method"]): r for p in parts for r in p["rows"]}  # newest wins
    rows = sorted(latest.values(), key=lambda r: [r2 for p in parts for r2 in p["rows"]].index(r))
    return {"meta": meta, "rows": rows, "finished": all(p.get("finished") for p in parts)}


def render() -> str:
    attribution = _load("attribution")
    if attribution is None or not attribution.get("finished"):
        attribution = _merge_partial_runs()
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python benchmarks/report.py` from `benchmarks/results/`); "
        "do not edit by hand.",
        "",
    ]
    if attribution:
        meta = attribution["meta"]
        versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v)
        lines += [
            f"- Date: {meta['date']}; machine: {meta['cpu']} ({meta['machine']}), 2 cores, "
            f"Python {meta['python']}, shared with other jobs (torch threads and load average "
            "per run below)",
            f"- Versions: rightfocus {meta['rightfocus']}, {versions}",
            "",
        ]
        lines += attribution_section(attribution)
    else:
        lines += ["Attribution benchmark: not run (`python benchmarks/attribution.py`).", ""]
    for name, section in (("memory", memory_section), ("multitarget", multitarget_section),
                          ("quantus_metrics", quantus_section)):  # fmt: skip
        data = _load(name)
        lines += section(data) if data else [f"`benchmarks/{name}.py`: not run.", ""]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    atomic_write_text(DOC, render())
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
