"""Report figures: task weights and loss scales over training per configuration, final metrics
per configuration (seeds as points, mean ± std), Δm against parameters and multiply-adds, and
the ATRC search's α entropy / fixed blocks / final α.

Every figure tells configurations apart by colour *and* line style / marker, so curves that
coincide (equal and fixed weighting, say) stay visible, and writes a PNG.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, ScalarFormatter

from densemtl.report.groups import RunGroup, mean_std

#: rows of the training-curves figure: curve kind (``analysis.sweeps.CURVES``) → axis label
CURVE_ROWS = {"weight": "task weight w", "scale": "loss scale w·L"}
LINE_STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
#: Δm conventions: gain (ATRC, higher is better) and drop (ASTMT, = −gain, lower is better)
DELTA_M_LABELS = {"gain": "Δm gain (%) ↑", "drop": "Δm drop (%) ↓"}


def style(i: int) -> dict:
    """Colour, line style and marker of the ``i``-th configuration (distinct for 32 of them)."""
    return {"color": f"C{i % 10}", "linestyle": LINE_STYLES[i % len(LINE_STYLES)],
            "marker": MARKERS[i % len(MARKERS)]}


def save(fig: Figure, out: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG (parent directories created)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out


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
    fig = Figure(figsize=(3.2 * len(tasks) + 2.5, 5.0), layout="constrained")
    axes = np.asarray(fig.subplots(len(CURVE_ROWS), len(tasks), squeeze=False))
    for (r, (kind, ylabel)) in enumerate(CURVE_ROWS.items()):
        for c, task in enumerate(tasks):
            ax = axes[r, c]
            for i, g in enumerate(groups):
                if (kind, task, g.label) not in curves:
                    continue
                epochs, mean, std = curves[(kind, task, g.label)]
                ax.plot(epochs, mean, ms=4, mfc="none", label=g.label, **style(i))
                ax.fill_between(epochs, mean - std, mean + std, color=style(i)["color"],
                                alpha=0.15)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(task if r == 0 else "", fontsize=9)
            ax.set_xlabel("epoch" if r == len(CURVE_ROWS) - 1 else "")
            ax.set_ylabel(ylabel if c == 0 else "")
            ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=7)
    fig.suptitle("Task weights and loss scales during training (mean ± std over seeds)")
    return save(fig, out)


def primary_metrics(groups: Sequence[RunGroup]) -> list[tuple[str, str, bool]]:
    """``(task, metric, higher_is_better)`` of every task's primary metrics, in group order."""
    columns: dict[tuple[str, str], bool] = {}
    for g in groups:
        tasks = g.runs[0].tasks()
        for t in g.tasks:
            primary = tasks[t].primary_metrics if t in tasks else {}
            for m, up in primary.items():
                columns.setdefault((t, m), up)
    return [(t, m, up) for (t, m), up in columns.items()]


def _bars(ax: Axes, groups: Sequence[RunGroup], task: str, metric: str) -> None:
    """One bar per configuration that has the metric (colour: its index among all), at its
    mean, with a ±1 std whisker and each seed's value as a point."""
    having = [(i, g) for i, g in enumerate(groups) if metric in g.runs[0].results.get(task, {})]
    for x, (i, g) in enumerate(having):
        values = [r.results[task][metric] for r in g.runs if metric in r.results.get(task, {})]
        mean, std, _ = mean_std(values)
        ax.bar(x, mean, color=style(i)["color"], alpha=0.45, width=0.7)
        ax.errorbar(x, mean, yerr=std, color="black", capsize=4, lw=1)
        jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else [0.0]
        ax.scatter(x + np.asarray(jitter), values, s=14, color="black", zorder=3)
    ax.set_xticks(range(len(having)), [g.label for _, g in having], fontsize=7, rotation=30,
                  ha="right")


def plot_metric_bars(groups: Sequence[RunGroup], out: str | Path) -> Path | None:
    """Final primary metrics, one panel per (task, metric), one bar per configuration (mean
    over seeds, whisker ±1 std, each seed a point); None without metrics."""
    columns = primary_metrics(groups)
    if not columns:
        return None
    n = len(columns)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig = Figure(figsize=(0.5 * len(groups) * cols + 2.0 * cols + 1, 3.6 * rows),
                 layout="constrained")
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, (task, metric, up) in zip(axes, columns):
        _bars(ax, groups, task, metric)
        ax.set_title(f"{task} {metric} {'↑' if up else '↓'}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle("Final validation metrics (bar: mean over seeds, whisker: ±1 std, points: seeds)")
    return save(fig, out)


def delta_m_points(
    groups: Sequence[RunGroup], convention: str = "drop"
) -> list[tuple[str, float, float, float, float]]:
    """``(label, parameters in M, multiply-adds in G, Δm mean, Δm std)`` per configuration with
    both Δm and resources, Δm over its seeds in ``convention`` (gain or drop, %)."""
    if convention not in DELTA_M_LABELS:
        raise ValueError(f"Δm convention {convention!r} is not one of {', '.join(DELTA_M_LABELS)}")
    sign = 1.0 if convention == "gain" else -1.0
    return [
        (g.label, res["parameters"]["total"] / 1e6, res["multiply_adds"]["all_tasks"] / 1e9,
         *mean_std([sign * d for d in g.delta_m])[:2])
        for g in groups if g.delta_m and (res := g.runs[0].resources)
    ]


def plot_delta_m_resources(
    groups: Sequence[RunGroup], out: str | Path, convention: str = "drop"
) -> Path | None:
    """ASTMT Fig. 5 over the configurations: :func:`delta_m_points` against parameters and
    multiply-adds; None if no configuration has both Δm and resources.

    Points carry a marker per configuration and one legend instead of text beside each point,
    which stays readable when configurations share a cost (same network, other weighting)."""
    points = delta_m_points(groups, convention)
    if not points:
        return None
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, idx, xlabel in ((axes[0], 1, "parameters (M)"), (axes[1], 2, "multiply-adds (G)")):
        for i, point in enumerate(points):
            s = style(i)
            ax.errorbar(point[idx], point[3], yerr=point[4], color=s["color"], marker=s["marker"],
                        ms=7, capsize=3, linestyle="none", label=point[0])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(DELTA_M_LABELS[convention])
        for axis in (ax.xaxis, ax.yaxis):
            formatter = ScalarFormatter(useOffset=False)
            formatter.set_scientific(False)
            axis.set_major_formatter(formatter)
            axis.set_major_locator(MaxNLocator(nbins=6))
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=7)
    fig.suptitle("Performance vs. resources (Δm mean ± std over seeds)")
    return save(fig, out)


def search_curves(runs: Sequence[str | Path]) -> dict[str, Any] | None:
    """ATRC search runs' ``search.json`` pooled over seeds: per step the mean (over runs) of the
    blocks' mean α entropy and of the number of fixed blocks (steps all runs logged), and per
    block the mean final softmax(α) with its candidates; None if no run has a search.json."""
    files = [Path(r) / "search.json" for r in runs if (Path(r) / "search.json").is_file()]
    if not files:
        return None
    data = [json.loads(f.read_text()) for f in files]
    histories = [{h["step"]: h for h in d["history"]} for d in data]
    steps = sorted(set.intersection(*(set(h) for h in histories)))
    blocks = {
        name: (b["candidates"], np.mean([d["blocks"][name]["softmax_alpha"] for d in data], axis=0))
        for name, b in data[0]["blocks"].items()
    }
    return {
        "runs": len(files),
        "steps": np.asarray(steps),
        "entropy": np.array([np.mean([h[s]["entropy"] for h in histories]) for s in steps]),
        "fixed": np.array([np.mean([h[s]["fixed"] for h in histories]) for s in steps]),
        "blocks": blocks,
    }


def plot_search_curves(groups: Sequence[RunGroup], out: str | Path) -> Path | None:
    """ATRC search (one line per search configuration, mean over seeds): mean α entropy and
    fixed blocks over steps, and a heat map of the first configuration's final softmax(α) minus
    uniform per block (self blocks have 4 candidates, cross blocks 5); None if no run wrote a
    search.json. The history keeps no per-step α, hence the end state."""
    curves = [(g.label, c) for g in groups if (c := search_curves([r.path for r in g.runs]))]
    if not curves:
        return None
    fig = Figure(figsize=(13.0, 4.2), layout="constrained")
    ax_h, ax_f, ax_a = fig.subplots(1, 3, width_ratios=[1, 1, 1.3])
    for i, (label, c) in enumerate(curves):
        s = {k: v for k, v in style(i).items() if k != "marker"}
        ax_h.plot(c["steps"], c["entropy"], **s, label=f"{label} ({c['runs']} runs)")
        ax_f.plot(c["steps"], c["fixed"], **s)
    ax_h.set(xlabel="step", ylabel="mean entropy of softmax(α)", title="α entropy")
    ax_f.set(xlabel="step", ylabel="fixed blocks (mean over seeds)", title="fixed blocks",
             ylim=(-0.5, len(curves[0][1]["blocks"]) + 0.5))
    for ax in (ax_h, ax_f):
        ax.grid(alpha=0.3)
    ax_h.legend(fontsize=7)
    blocks = curves[0][1]["blocks"]
    names = list(dict.fromkeys(n for cands, _ in blocks.values() for n in cands))
    grid = np.full((len(blocks), len(names)), np.nan)
    for row, (cands, alpha) in enumerate(blocks.values()):
        grid[row, [names.index(n) for n in cands]] = alpha - 1.0 / len(cands)
    bound = float(np.nanmax(np.abs(grid))) or 1.0
    image = ax_a.imshow(grid, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound)
    ax_a.set_xticks(range(len(names)), names, fontsize=7)
    ax_a.set_yticks(range(len(blocks)), list(blocks), fontsize=6)
    ax_a.set_title("final softmax(α) − 1/candidates, target<-source", fontsize=9)
    fig.colorbar(image, ax=ax_a)
    fig.suptitle("ATRC context-type search (search.json)")
    return save(fig, out, dpi=90)
