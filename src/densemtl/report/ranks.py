"""The rank table of repeated trials (LSB supplement Table S-3).

Every trial (one run) of every algorithm is ranked per metric against all trials (1 = best; tied
values share the average of their ranks, ``scipy.stats.rankdata(method="average")``). Each trial
gets the min / max / average of its ranks, each algorithm the mean of its trials' average ranks.
A second block ranks the algorithms' mean performances the same way (the table's last rows).

    densemtl-report ranks multirun/lsb_study/<date_time> --out report/lsb_ranks.md
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from densemtl.report.groups import RunGroup, group_runs
from densemtl.runs import load_runs
from densemtl.runs.summary import primary_metrics

__all__ = ["LSB_METRICS", "RankTable", "RankedRow", "higher_is_better", "main", "rank_columns",
           "rank_table"]

#: the LSB study's six metrics (supplement Table S-3): task -> metric -> higher is better
LSB_METRICS: dict[str, dict[str, bool]] = {
    "lsb_depth": {"delta1": True, "rmse": False},
    "lsb_normals": {"pct_30": True, "mean": False},
    "lsb_semseg": {"mIoU": True, "pixel_acc": True},
}
#: direction of metrics that are not a task's primary metric (higher is better)
METRIC_DIRECTIONS: dict[str, bool] = {
    "delta1": True, "rmse": False, "log_rmse": False, "abs_rel": False,
    "mean": False, "median": False, "pct_11.25": True, "pct_22.5": True, "pct_30": True,
    "mIoU": True, "pixel_acc": True, "l1": False, "odsF": True, "oisF": True, "ap": True,
    "maxF": True,
}


def higher_is_better(task: str, metric: str) -> bool:
    """Whether a larger ``metric`` of ``task`` is better (task's primary metrics first)."""
    primary = primary_metrics(task)
    if metric in primary:
        return primary[metric]
    if metric in METRIC_DIRECTIONS:
        return METRIC_DIRECTIONS[metric]
    raise ValueError(f"direction of metric {task}/{metric} is unknown: name it in "
                     f"METRIC_DIRECTIONS or pass metrics with their direction")


def rank_columns(values: np.ndarray, higher: Sequence[bool]) -> np.ndarray:
    """Ranks (1 = best, ties averaged) of each column of ``values`` (rows = trials)."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(higher):
        raise ValueError(f"values must be trials × {len(higher)} metrics, got {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("every trial needs a finite value of every ranked metric")
    signs = np.where(np.asarray(higher), -1.0, 1.0)
    return np.column_stack([rankdata(signs[j] * values[:, j], method="average")
                            for j in range(values.shape[1])])


@dataclass
class RankedRow:
    """One ranked row: a trial (or an algorithm's mean), its values and ranks."""

    algorithm: str
    seed: object
    values: list[float]
    ranks: list[float]

    @property
    def min_rank(self) -> float:
        """Best rank of the row."""
        return min(self.ranks)

    @property
    def max_rank(self) -> float:
        """Worst rank of the row."""
        return max(self.ranks)

    @property
    def average_rank(self) -> float:
        """Mean rank over the metrics."""
        return float(np.mean(self.ranks))


@dataclass
class RankTable:
    """Table S-3: ranked trials, each algorithm's mean of average ranks, ranked mean values."""

    metrics: list[tuple[str, str, bool]]
    trials: list[RankedRow]
    algorithm_mean_rank: dict[str, float]
    averages: list[RankedRow]

    def to_markdown(self, digits: int = 4) -> str:
        """Two Markdown tables (trials; mean performance per algorithm), ranks in parentheses."""
        names = [f"{t} {m} {'↑' if h else '↓'}" for t, m, h in self.metrics]

        def cells(row: RankedRow) -> list[str]:
            return [f"{v:.{digits}g} ({r:g})" for v, r in zip(row.values, row.ranks)] + [
                f"{row.min_rank:g}", f"{row.max_rank:g}", f"{row.average_rank:.2f}"]

        def line(items: Sequence[str]) -> str:
            return "| " + " | ".join(str(c).replace("|", "\\|") for c in items) + " |"

        head = ["algorithm", "seed", *names, "min", "max", "avg", "algorithm mean"]
        out = [line(head), line(["---"] * len(head))]
        for row in self.trials:
            mean = f"{self.algorithm_mean_rank[row.algorithm]:.2f}"
            out.append(line([row.algorithm, str(row.seed), *cells(row), mean]))
        head = ["algorithm (mean of trials)", *names, "min", "max", "avg"]
        out += ["", line(head), line(["---"] * len(head))]
        out += [line([row.algorithm, *cells(row)]) for row in self.averages]
        return "\n".join(out)


def rank_table(
    groups: Sequence[RunGroup], metrics: Mapping[str, Mapping[str, bool]] | None = None
) -> RankTable:
    """Rank every run of the multi-task ``groups`` (an algorithm = a group, seeds pooled).

    ``metrics``: task -> metric -> higher is better; default the LSB study's six metrics when the
    runs have those tasks, else every task's primary metrics.
    """
    groups = [g for g in groups if len(g.tasks) > 1]
    if not groups:
        raise ValueError("no multi-task runs to rank")
    tasks = groups[0].tasks
    if any(g.tasks != tasks for g in groups):
        raise ValueError(f"runs to rank must share one task set; got "
                         f"{sorted({tuple(g.tasks) for g in groups})}")
    if metrics is None:
        metrics = LSB_METRICS if set(tasks) == set(LSB_METRICS) else {
            t: primary_metrics(t) for t in tasks}
    columns = [(t, m, bool(h)) for t, ms in metrics.items() for m, h in ms.items()]
    missing = sorted({f"{t}/{m}" for g in groups for r in g.runs for t, m, _ in columns
                      if m not in r.results.get(t, {})})
    if missing:
        raise KeyError(f"runs lack the ranked metric(s) {missing}")
    higher = [h for _, _, h in columns]
    runs = [(g.label, r) for g in groups for r in g.runs]
    values = np.array([[r.results[t][m] for t, m, _ in columns] for _, r in runs])
    ranks = rank_columns(values, higher)
    trials = [RankedRow(label, r.seed, v.tolist(), k.tolist())
              for (label, r), v, k in zip(runs, values, ranks)]
    mean_rank = {g.label: float(np.mean([t.average_rank for t in trials if t.algorithm == g.label]))
                 for g in groups}
    means = np.array([[np.mean([r.results[t][m] for r in g.runs]) for t, m, _ in columns]
                      for g in groups])
    averages = [RankedRow(g.label, None, v.tolist(), k.tolist())
                for g, v, k in zip(groups, means, rank_columns(means, higher))]
    return RankTable(columns, trials, mean_rank, averages)


def parse_metrics(specs: Sequence[str]) -> dict[str, dict[str, bool]]:
    """``task/metric`` strings -> task -> metric -> direction (known directions only)."""
    out: dict[str, dict[str, bool]] = {}
    for spec in specs:
        task, _, metric = spec.partition("/")
        if not task or not metric:
            raise ValueError(f"--metric {spec!r} must be <task>/<metric>")
        out.setdefault(task, {})[metric] = higher_is_better(task, metric)
    return out


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``densemtl-report ranks``."""
    parser = argparse.ArgumentParser(prog="densemtl-report ranks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="sweep or run directories (metrics.json)")
    parser.add_argument("--out", default=None, help="write the Markdown table to this file")
    parser.add_argument("--metric", action="append", default=[],
                        help="<task>/<metric> to rank (repeat); default: the LSB study's six")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``densemtl-report ranks``: print (and write) the rank table of the runs under paths."""
    args = build_parser().parse_args(argv)
    try:
        metrics = parse_metrics(args.metric) if args.metric else None
        table = rank_table(group_runs(load_runs(args.paths)), metrics)
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"densemtl-report ranks: {err}", file=sys.stderr)
        return 1
    text = table.to_markdown()
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        print(f"\nWritten: {out}")
    return 0
