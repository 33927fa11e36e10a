"""A loss-weighting sweep's runs: final metrics, and weights / loss scales / losses over training.

The report (``densemtl.report``) groups these runs over seeds for its tables and plots; this module
is the loading underneath and the per-run views the weighting dashboard adds.

A sweep directory holds one directory per run (any depth below it) with the files a run writes:
``metrics.json`` (final validation metrics, the configuration, Δm when baselines were given) and,
with the CSV logger, ``metrics.csv`` (per-epoch ``train/weight/<task>``, ``train/scale/<task>``,
``train/loss/<task>_epoch`` and ``val/<task>/<metric>``).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from matplotlib.figure import Figure

from densemtl.tasks import TASK_REGISTRY

__all__ = [
    "CURVES",
    "Curve",
    "SweepRun",
    "format_last_values",
    "load_sweep",
    "plot_final_metrics",
    "primary_columns",
    "read_csv_history",
]

#: curve kind -> CSV column of a task (epoch means logged by every weighting strategy)
CURVES = {
    "weight": "train/weight/{task}",
    "scale": "train/scale/{task}",
    "loss": "train/loss/{task}_epoch",
}


class Curve(NamedTuple):
    """One logged column: the rows where it has a value."""

    step: np.ndarray
    epoch: np.ndarray
    value: np.ndarray


@dataclass
class SweepRun:
    """One finished run of a sweep."""

    path: Path
    name: str
    scheme: str
    seed: int | None
    results: dict[str, dict[str, float]]
    config: dict[str, Any]
    delta_m: dict[str, float] | None = None
    history: dict[str, Curve] = field(default_factory=dict)

    def tasks(self) -> dict[str, Any]:
        """The run's task objects, built from its own config (dataset task arguments included,
        so e.g. the saliency convention decides which metric enters Δm); default task objects
        for a record without a task config."""
        from densemtl.experiment import build_tasks
        from densemtl.tasks import build_task

        if not self.config.get("tasks"):
            return {t: build_task(t) for t in self.results}
        return {t: task for t, task in build_tasks(self.config).items() if t in self.results}

    def curves(self, kind: str) -> dict[str, Curve]:
        """Per-task curves of ``kind`` (a key of :data:`CURVES`) present in the run's CSV."""
        if kind not in CURVES:
            raise KeyError(f"unknown curve kind {kind!r}; choose one of {', '.join(CURVES)}")
        columns = {t: CURVES[kind].format(task=t) for t in self.results}
        return {t: self.history[c] for t, c in columns.items() if c in self.history}


def read_csv_history(path: str | Path) -> dict[str, Curve]:
    """Every column of a Lightning ``metrics.csv`` as the (step, epoch, value) rows it filled."""
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"epoch", "step"} <= set(reader.fieldnames):
            raise ValueError(
                f"{path} is not a Lightning CSV log: need 'epoch' and 'step' columns, got "
                f"{reader.fieldnames}"
            )
        rows: dict[str, list[tuple[int, int, float]]] = {}
        for row in reader:
            step, epoch = int(row["step"]), int(row["epoch"])
            for key, text in row.items():
                if key not in ("epoch", "step") and text not in ("", None):
                    rows.setdefault(key, []).append((step, epoch, float(text)))
    return {key: Curve(*(np.asarray(col) for col in zip(*values))) for key, values in rows.items()}


def _load_run(path: Path, name: str) -> SweepRun:
    payload = json.loads((path / "metrics.json").read_text())
    if "tasks" not in payload:
        raise ValueError(f"{path / 'metrics.json'} has no 'tasks' entry (not a densemtl result)")
    config = payload.get("config") or {}
    weighting = config.get("weighting") or {}
    csv_path = path / "metrics.csv"
    return SweepRun(
        path=path,
        name=name,
        scheme=str(weighting.get("name", "fixed")),
        seed=config.get("seed"),
        results=payload["tasks"],
        config=config,
        delta_m=payload.get("delta_m"),
        history=read_csv_history(csv_path) if csv_path.is_file() else {},
    )


def load_sweep(dirs: str | Path | Sequence[str | Path]) -> list[SweepRun]:
    """Every run (a directory with ``metrics.json``) under the given sweep directories.

    Run names are paths relative to their sweep directory (the directory's own name when it is
    a run itself); runs are sorted by scheme, then name.
    """
    dirs = [dirs] if isinstance(dirs, (str, Path)) else list(dirs)
    runs = []
    for root in map(Path, dirs):
        if not root.is_dir():
            raise FileNotFoundError(f"sweep directory {root} does not exist")
        found = sorted(p.parent for p in root.rglob("metrics.json"))
        if not found:
            raise FileNotFoundError(
                f"no run under {root}: a sweep directory holds run directories with a "
                "metrics.json each (written when a run finishes with evaluate=true)"
            )
        for run_dir in found:
            name = run_dir.name if run_dir == root else str(run_dir.relative_to(root))
            runs.append(_load_run(run_dir, name))
    return sorted(runs, key=lambda r: (r.scheme, r.name))


def primary_columns(runs: Sequence[SweepRun]) -> list[tuple[str, str, bool | None]]:
    """``(task, metric, higher_is_better)`` columns: each task's primary metrics, in run order.

    A task the registry does not know contributes all its metrics (direction unknown: None).
    """
    columns: dict[tuple[str, str], bool | None] = {}
    for run in runs:
        for task, metrics in run.results.items():
            cls = TASK_REGISTRY.get(task)
            primary = cls.primary_metrics if cls is not None else {}
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


def format_last_values(runs: Sequence[SweepRun], kind: str = "weight") -> str:
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


def plot_final_metrics(runs: Sequence[SweepRun]) -> Figure:
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
