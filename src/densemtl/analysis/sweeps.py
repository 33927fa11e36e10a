"""A loss-weighting sweep's runs, per run: final metrics, and weights / loss scales / losses
over training — the views the weighting dashboard adds to the report. The runs themselves are
read with :func:`densemtl.runs.load_runs`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from densemtl.runs import RunRecord
from densemtl.runs.summary import primary_metrics

__all__ = ["format_last_values", "plot_final_metrics", "primary_columns"]

def primary_columns(runs: Sequence[RunRecord]) -> list[tuple[str, str, bool | None]]:
    """``(task, metric, higher_is_better)`` columns: each task's primary metrics, in run order.

    A task the registry does not know contributes all its metrics (direction unknown: None).
    """
    columns: dict[tuple[str, str], bool | None] = {}
    for run in runs:
        for task, metrics in run.results.items():
            primary = primary_metrics(task)
            for metric in metrics:
                if not primary or metric in primary:
                    columns.setdefault((task, metric), primary.get(metric))
    return [(t, m, up) for (t, m), up in columns.items()]


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in [header, *rows]
    ]
    return "\n".join(lines)


def _cell(value: float) -> str:
    return str(value) if math.isnan(value) or math.isinf(value) else f"{value:.4f}"


def format_last_values(runs: Sequence[RunRecord], kind: str = "weight") -> str:
    """Table of each run's last-epoch value of a curve kind (weights by default) per task."""
    tasks = list(dict.fromkeys(t for r in runs for t in r.results))
    rows = []
    for run in runs:
        curves = run.curves(kind)
        rows.append(
            [run.name, run.scheme]
            + [_cell(float(curves[t].value[-1])) if t in curves else "-" for t in tasks]
        )
    return _table(["run", "scheme", *tasks], rows)


def plot_final_metrics(runs: Sequence[RunRecord]) -> Figure:
    """Bar chart per primary metric: one bar per run, labelled by scheme."""
    columns = primary_columns(runs)
    if not columns:
        raise ValueError("the runs report no metrics")
    fig = Figure(figsize=(2.6 * len(columns), 2.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(columns)))
    labels = [r.name if r.name == r.scheme else f"{r.scheme}\n{r.name}" for r in runs]
    for ax, (task, metric, up) in zip(axes, columns):
        values = [r.results.get(task, {}).get(metric, np.nan) for r in runs]
        ax.bar(range(len(runs)), values, color=[f"C{i % 10}" for i in range(len(runs))])
        ax.set_xticks(range(len(runs)), labels, fontsize=6, rotation=45, ha="right")
        better = {True: " (higher better)", False: " (lower better)", None: ""}[up]
        ax.set_title(f"{task}/{metric}{better}", fontsize=8)
    return fig
