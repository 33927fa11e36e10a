"""Report figures: task weights and loss scales over training per scheme; Δm vs resources."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from densemtl.report.groups import RunGroup
from densemtl.resources import plot_delta_m_points

#: rows of the training-curves figure: curve kind (``analysis.sweeps.CURVES``) → axis label
CURVE_ROWS = {"weight": "task weight w", "scale": "loss scale w·L"}


def epoch_mean_curve(group: RunGroup, kind: str, task: str) -> tuple[np.ndarray, ...] | None:
    """Epochs, mean and std over the group's runs of one task's curve (epochs all runs logged);
    None if no run logged it."""
    curves = [c[task] for c in (r.curves(kind) for r in group.runs) if task in c]
    if not curves:
        return None
    epochs = sorted(set.intersection(*(set(c.epoch.tolist()) for c in curves)))
    values = np.array([[c.value[c.epoch == e][-1] for e in epochs] for c in curves])
    return np.asarray(epochs), values.mean(axis=0), values.std(axis=0)


def plot_training_curves(groups: Sequence[RunGroup], out: str | Path) -> Path | None:
    """Weights (top row) and loss scales (bottom row) per task over epochs, one line per
    multi-task configuration (mean over seeds, band = ±1 std); None if no run logged them."""
    groups = [g for g in groups if len(g.tasks) > 1]
    tasks = list(dict.fromkeys(t for g in groups for t in g.tasks))
    curves = {
        (kind, task, g.label): c
        for kind in CURVE_ROWS for task in tasks for g in groups
        if (c := epoch_mean_curve(g, kind, task)) is not None
    }
    if not curves:
        return None
    fig = Figure(figsize=(3.2 * len(tasks) + 1.5, 5.0), layout="constrained")
    axes = np.asarray(fig.subplots(len(CURVE_ROWS), len(tasks), squeeze=False))
    for (r, (kind, ylabel)) in enumerate(CURVE_ROWS.items()):
        for c, task in enumerate(tasks):
            ax = axes[r, c]
            for i, g in enumerate(groups):
                if (kind, task, g.label) not in curves:
                    continue
                epochs, mean, std = curves[(kind, task, g.label)]
                ax.plot(epochs, mean, "o-", ms=3, color=f"C{i % 10}", label=g.label)
                ax.fill_between(epochs, mean - std, mean + std, color=f"C{i % 10}", alpha=0.2)
            ax.set_title(task if r == 0 else "", fontsize=9)
            ax.set_xlabel("epoch" if r == len(CURVE_ROWS) - 1 else "")
            ax.set_ylabel(ylabel if c == 0 else "")
            ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=7)
    fig.suptitle("Task weights and loss scales during training (mean ± std over seeds)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def plot_delta_m_resources(groups: Sequence[RunGroup], out: str | Path) -> Path | None:
    """ASTMT Fig. 5 over the report's configurations: Δm drop (mean over seeds) against
    parameters and multiply-adds; None if no configuration has both Δm and resources."""
    points = [
        (g.label, res["parameters"]["total"], res["multiply_adds"]["all_tasks"],
         -float(np.mean(g.delta_m)))
        for g in groups if g.delta_m and (res := g.runs[0].resources)
    ]
    return plot_delta_m_points(points, out) if points else None
