"""Pictures of runs and results: training curves of run folders, and the results table as a bar chart.

    fig = training_curves(["runs/a", "runs/b"])          # one subplot per quantity, one line per run
    save_figure(fig, "curves.png")
    fig = results_chart(load_results("benchmarks/results"))  # test NDCG@10 and HR@10 per result file

matplotlib is an optional dependency (`pip install seqrec[plot]`). Figures are built with matplotlib's object API
(`matplotlib.figure.Figure`, rendered by Agg), never through pyplot: no window opens and the caller's pyplot
backend (e.g. a notebook's) is left alone. The functions return the Figure so that tests and notebooks can look at
its axes; `save_figure` writes it atomically.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from seqrec.errors import SeqrecError
from seqrec.utils import atomic_replace

CHART_METRICS = ("NDCG@10", "HR@10")
"""Test metrics drawn by `results_chart`, one subplot each."""
CURVE_COLUMNS = 3
"""Subplots per row of `training_curves`."""
HISTORY_PARTS = ("train", "valid", "test")
"""The dicts of a metrics.jsonl record that hold curves: loss terms, validation and tracked test metrics."""


def _figure_class():
    """matplotlib's Figure, or a one-line error saying how to install it."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise SeqrecError("plotting needs matplotlib: pip install 'seqrec[plot]'") from None
    return Figure


# ----------------------------------------------------------------------------------------------------------------
# training curves


def read_history(run_dir: str | Path) -> list[dict]:
    """The per-epoch records of a run folder's metrics.jsonl (written by `seqrec train --out RUN_DIR`).

    Each record has 'epoch', 'train' (mean loss terms of the epoch) and, on epochs that validated, 'valid' (and
    'test' under train.track_test) metric dicts. A missing folder or file, a line that is not a JSON object with
    an 'epoch', and a file without any epoch are SeqrecErrors naming the path (and line)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SeqrecError(f"{run_dir}: not a folder; expected a run folder written by seqrec train --out")
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise SeqrecError(f"{path}: not found; expected a run folder written by seqrec train --out")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise SeqrecError(f"{path}:{number}: invalid JSON ({e.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
            raise SeqrecError(f"{path}:{number}: expected a JSON object with an integer 'epoch'")
        records.append(record)
    if not records:
        raise SeqrecError(f"{path}: no epochs recorded yet")
    return records


def curve_series(history: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """{quantity: (epochs, values)} of a run's history. Quantities are named 'train <term>' (loss terms), then
    'valid <metric>' and 'test <metric>'; a quantity has a point only at the epochs that recorded it."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for part in HISTORY_PARTS:
        for record in history:
            for name, value in (record.get(part) or {}).items():
                epochs, values = series.setdefault(f"{part} {name}", ([], []))
                epochs.append(record["epoch"])
                values.append(float(value))
    return series


def run_labels(run_dirs: list[str | Path]) -> list[str]:
    """Legend labels: each folder's name, or the path as given where two runs share a name."""
    names = [Path(d).name or str(d) for d in run_dirs]
    return [name if names.count(name) == 1 else str(d) for name, d in zip(names, run_dirs)]


def training_curves(run_dirs: list[str | Path]):
    """A Figure of the training curves of one or more runs: one subplot per quantity (loss terms, validation and
    tracked test metrics, in that order; a quantity any run has), one line per run with its folder name in the
    legend, x = epoch. Every run is read (and checked) before anything is drawn."""
    if not run_dirs:
        raise SeqrecError("plot: give at least one run folder")
    Figure = _figure_class()
    from matplotlib.ticker import MaxNLocator
    runs = [curve_series(read_history(d)) for d in run_dirs]
    labels = run_labels(run_dirs)
    quantities = sorted(dict.fromkeys(q for series in runs for q in series),      # stable: first seen per part
                        key=lambda q: HISTORY_PARTS.index(q.split(" ", 1)[0]))
    if not quantities:
        raise SeqrecError(f"plot: no loss term or metric in the metrics.jsonl of {', '.join(map(str, run_dirs))}")
    columns = min(CURVE_COLUMNS, len(quantities))
    rows = math.ceil(len(quantities) / columns)
    fig = Figure(figsize=(4.2 * columns, 3.0 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, quantity in zip(axes, quantities):
        for label, series in zip(labels, runs):
            if quantity in series:
                epochs, values = series[quantity]
                ax.plot(epochs, values, marker="o" if len(epochs) < 30 else None, markersize=3, label=label)
        ax.set_title(quantity)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")      # every run has loss terms: the first subplot has all the lines
    for ax in axes[len(quantities):]:
        fig.delaxes(ax)
    return fig


# ----------------------------------------------------------------------------------------------------------------
# results chart


def results_chart(results: list[tuple[str, dict]], metrics: tuple[str, ...] = CHART_METRICS):
    """A Figure of the accuracy results (name, result dict as in benchmarks/results/*.json; see
    seqrec.results.load_results): one subplot per metric of `metrics`, one horizontal bar per result file with
    test metrics (labelled 'method: file name [exclusion mode]'), grouped and coloured by dataset (one bar series
    per dataset)."""
    Figure = _figure_class()
    rows = [(name, r) for name, r in results if "test" in (r.get("metrics") or {})]
    if not rows:
        raise SeqrecError("results chart: no result file with test metrics")
    rows.sort(key=lambda x: (str(x[1].get("dataset", "?")), str(x[1].get("method", "")), x[0]))
    datasets = list(dict.fromkeys(str(r.get("dataset", "?")) for _, r in rows))
    fig = Figure(figsize=(6.0 * len(metrics), 1.5 + 0.28 * len(rows)), layout="constrained")
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    positions = list(range(len(rows)))[::-1]          # the first row at the top
    for ax, metric in zip(axes, metrics):
        for dataset in datasets:
            mine = [(y, r) for y, (_, r) in zip(positions, rows) if str(r.get("dataset", "?")) == dataset]
            values = [float(r["metrics"]["test"].get(metric, math.nan)) for _, r in mine]
            bars = ax.barh([y for y, _ in mine], values, label=dataset)
            ax.bar_label(bars, fmt="%.4f", fontsize="x-small", padding=2)
        ax.set_title(f"test {metric}")
        ax.grid(axis="x", alpha=0.3)
        ax.margins(x=0.15)
    # the exclusion mode changes the numbers a lot (docs/protocol.md): it is part of every label
    labels = [f"{r.get('method', '?')}: {name} [{(r.get('protocol') or {}).get('exclude', '?')}]" for name, r in rows]
    axes[0].set_yticks(positions, labels, fontsize="small")
    axes[-1].legend(title="dataset", fontsize="small")
    return fig


# ----------------------------------------------------------------------------------------------------------------


def save_figure(fig, out: str | Path) -> None:
    """Write `fig` to `out` atomically, in the format its extension names (.png, .pdf, .svg, ...)."""
    out = Path(out)
    formats = fig.canvas.get_supported_filetypes()
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in formats:
        raise SeqrecError(f"{out}: unknown image format {out.suffix or '(no extension)'!r}; expected one of "
                          f"{', '.join('.' + f for f in sorted(formats))}")
    with atomic_replace(out) as tmp:
        fig.savefig(tmp, format=fmt, dpi=120)
