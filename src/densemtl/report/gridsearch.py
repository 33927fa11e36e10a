"""Pick fixed loss weights from a grid-search sweep and write them as a ``weighting`` config.

The sweeps ``conf/sweep/loss_weight_grid.yaml`` (multi-task nets, log-spaced weight per task) and
``conf/sweep/loss_weight_grid_single_task.yaml`` (single-task nets) train ``weighting=fixed``
runs. From the multi-task runs the best weight vector is the one with the best Δm gain (against
the single-task runs found under the given paths, or ``--baselines``) or the best value of a
named metric, seeds pooled; from the single-task runs (``--from single-task``, how SPEC §3 says
the papers chose them) each task's weight is the one whose single-task net scores best on the
task's primary metric.

    densemtl-report gridsearch multirun/loss_weight_grid --out conf/weighting/grid_best.yaml
    densemtl-train experiment=lsb/nyuv2_mnet_multi_decoder weighting=grid_best
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from densemtl.report.groups import RunGroup, attach_delta_m, group_runs
from densemtl.report.ranks import higher_is_better
from densemtl.runs import RunRecord, load_runs
from densemtl.runs.summary import primary_metrics

__all__ = ["GridChoice", "best_weights", "main", "run_weights", "write_weighting_config"]

SOURCES = ("multi-task", "single-task")


@dataclass
class GridChoice:
    """The chosen weights, the criterion and its value, and the runs it came from."""

    weights: dict[str, float]
    criterion: str
    score: float
    runs: list[Path]


def run_weights(run: RunRecord) -> dict[str, float]:
    """Task -> loss weight of a ``weighting=fixed`` run with explicit ``weighting.weights``."""
    weighting = run.config.get("weighting") or {}
    weights = weighting.get("weights")
    if weighting.get("name") != "fixed" or weights is None:
        raise ValueError(f"run {run.path} is not a grid-search run: it needs weighting.name=fixed "
                         f"and explicit weighting.weights, got {weighting}")
    tasks = list(run.results)
    if isinstance(weights, Mapping):
        return {t: float(weights[t]) for t in tasks}
    if len(weights) != len(tasks):
        raise ValueError(f"run {run.path}: {len(weights)} weights for tasks {tasks}")
    return {t: float(w) for t, w in zip(tasks, weights)}


def _is_grid_group(group: RunGroup) -> bool:
    weighting = group.runs[0].config.get("weighting") or {}
    return weighting.get("name") == "fixed" and weighting.get("weights") is not None


def _metric_score(group: RunGroup, task: str, metric: str) -> float:
    values = [r.results[task][metric] for r in group.runs if metric in r.results.get(task, {})]
    if len(values) != len(group.runs):
        raise KeyError(f"runs of {group.label!r} lack {task}/{metric}")
    return float(np.mean(values))


def _pick(scored: Sequence[tuple[float, RunGroup]], higher: bool) -> tuple[float, RunGroup]:
    """Best (score, group); ties go to the first in sweep order."""
    return max(scored, key=lambda s: s[0]) if higher else min(scored, key=lambda s: s[0])


def best_weights(
    paths: Sequence[str | Path],
    by: str = "delta_m",
    source: str = "multi-task",
    baselines: str | Path | Mapping | None = None,
) -> GridChoice:
    """The best fixed weights among the grid-search runs under ``paths``.

    ``source="multi-task"``: ``by`` is ``delta_m`` (Δm gain, mean over seeds) or
    ``<task>/<metric>``. ``source="single-task"``: per task the weight of its best single-task
    configuration on the task's first primary metric (``by`` is not used).
    """
    if source not in SOURCES:
        raise ValueError(f"source={source!r} is not one of {', '.join(SOURCES)}")
    groups = group_runs(load_runs(paths))
    grid = [g for g in groups if _is_grid_group(g)]
    if source == "single-task":
        return _best_single_task(grid)
    multi = [g for g in grid if len(g.tasks) > 1]
    if not multi:
        raise ValueError(f"no multi-task weighting=fixed runs with explicit weights under "
                         f"{[str(p) for p in paths]}")
    if by == "delta_m":
        attach_delta_m(groups, baselines)
        lacking = [g.label for g in multi if not g.delta_m]
        if lacking:
            raise ValueError(f"no Δm for {lacking}: put the single-task runs under the given "
                             f"paths or pass --baselines, or choose --by <task>/<metric>")
        scored = [(float(np.mean(g.delta_m)), g) for g in multi]
        score, group = _pick(scored, higher=True)
        criterion = f"Δm gain (%), mean over {len(group.runs)} run(s)"
    else:
        task, _, metric = by.partition("/")
        if task not in multi[0].tasks or not metric:
            raise ValueError(f"--by {by!r} must be delta_m or <task>/<metric> with a task of "
                             f"{multi[0].tasks}")
        higher = higher_is_better(task, metric)
        score, group = _pick([(_metric_score(g, task, metric), g) for g in multi], higher)
        best = "max" if higher else "min"
        criterion = f"{task}/{metric} ({best}), mean over {len(group.runs)} run(s)"
    return GridChoice(run_weights(group.runs[0]), criterion, score, [r.path for r in group.runs])


def _best_single_task(grid: Sequence[RunGroup]) -> GridChoice:
    """Per task, the weight of the best single-task grid configuration."""
    by_task: dict[str, list[RunGroup]] = {}
    for g in grid:
        if len(g.tasks) == 1:
            by_task.setdefault(g.tasks[0], []).append(g)
    if not by_task:
        raise ValueError("no single-task weighting=fixed runs with explicit weights found")
    weights, runs, notes = {}, [], []
    for task, groups in by_task.items():
        primary = primary_metrics(task)
        if not primary:
            raise ValueError(f"task {task!r} has no primary metric to choose its weight by")
        metric, higher = next(iter(primary.items()))
        score, group = _pick([(_metric_score(g, task, metric), g) for g in groups], higher)
        weights[task] = run_weights(group.runs[0])[task]
        runs += [r.path for r in group.runs]
        notes.append(f"{task}/{metric}={score:.4g}")
    criterion = f"single-task nets by primary metric: {', '.join(notes)}"
    return GridChoice(weights, criterion, float("nan"), runs)


def write_weighting_config(choice: GridChoice, out: str | Path, command: str = "") -> Path:
    """A ``weighting=fixed`` YAML with the chosen weights, its provenance in comments."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    score = "" if np.isnan(choice.score) else f" = {choice.score:.6g}"
    lines = [
        "# Fixed loss weights chosen by grid search" + (f": {command}" if command else ""),
        f"# Criterion: {choice.criterion}{score}",
        *[f"#   from {p}" for p in choice.runs],
        f"# Use: densemtl-train weighting={out.stem}",
        "name: fixed",
        "weights:",
        *[f"  {t}: {w!r}" for t, w in choice.weights.items()],
    ]
    out.write_text("\n".join(lines) + "\n")
    return out


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``densemtl-report gridsearch``."""
    parser = argparse.ArgumentParser(prog="densemtl-report gridsearch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="grid-search sweep (and single-task) directories")
    parser.add_argument("--out", required=True, help="weighting config to write, e.g. "
                        "conf/weighting/grid_best.yaml")
    parser.add_argument("--by", default="delta_m",
                        help="delta_m (default) or <task>/<metric> (multi-task source)")
    parser.add_argument("--from", dest="source", choices=SOURCES, default="multi-task",
                        help="choose among multi-task runs, or per task among single-task runs")
    parser.add_argument("--baselines", default=None,
                        help="single-task results for Δm (default: single-task runs found)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``densemtl-report gridsearch``: write the best weights as a weighting config."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        choice = best_weights(args.paths, args.by, args.source, args.baselines)
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"densemtl-report gridsearch: {err}", file=sys.stderr)
        return 1
    path = write_weighting_config(choice, args.out, "densemtl-report gridsearch " + " ".join(argv))
    print(f"{choice.criterion}: weights {choice.weights}\nWritten: {path}")
    return 0
