"""Report tables (one structure, rendered to Markdown and HTML)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from densemtl.report.groups import RunGroup, mean_std
from densemtl.runs.summary import arrow, confidence_interval, fmt, primary_metrics

#: Δm conventions: ATRC quotes a gain (higher is better), ASTMT a drop (= −gain, lower is better)
DELTA_M_HEADERS = {"gain": "Δm gain (%) ↑", "drop": "Δm drop (%) ↓"}


@dataclass
class Table:
    """A titled table of text cells; ``note`` is a sentence printed under it; ``best`` holds the
    (row, column) cells of each column's best value (bold in Markdown, marked in HTML)."""

    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""
    best: set[tuple[int, int]] = field(default_factory=set)

    def cell(self, row: int, col: int) -> str:
        """The cell's text, bold (Markdown) if it is its column's best."""
        text = str(self.rows[row][col])
        return f"**{text}**" if (row, col) in self.best else text

    def to_markdown(self) -> str:
        """GitHub-flavoured Markdown (pipes in cells escaped)."""
        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

        out = [f"### {self.title}", "", line(self.header), line(["---"] * len(self.header))]
        out += [line([self.cell(i, j) for j in range(len(r))]) for i, r in enumerate(self.rows)]
        return "\n".join(out + ([f"\n{self.note}"] if self.note else []))


@dataclass
class Section:
    """A heading with tables, images (PNG paths) and paragraphs, in that order."""

    heading: str
    tables: list[Table] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def to_markdown(self, relative_to: Path) -> str:
        """Markdown with images linked relative to the report directory."""
        parts = [f"## {self.heading}"] + [t.to_markdown() for t in self.tables]
        parts += [f"![{p.stem}]({p.relative_to(relative_to)})" for p in self.images]
        return "\n\n".join(parts + self.text)


def best_cells(values: Sequence[Sequence[float]], higher: Sequence[bool | None]) -> set:
    """(row, column) of each column's best finite value (all ties), for columns whose direction
    is known; ``values[row][col]``, columns numbered as given."""
    best = set()
    for col, up in enumerate(higher):
        column = [(r, v[col]) for r, v in enumerate(values) if math.isfinite(v[col])]
        if up is None or len(column) < 2:
            continue
        target = (max if up else min)(v for _, v in column)
        best |= {(r, col) for r, v in column if v == target}
    return best


def delta_m_cell(group: RunGroup, convention: str) -> str:
    """The group's Δm in the chosen convention, mean ± std [95 % CI] over its runs."""
    if not group.delta_m:
        return "—"
    sign = 1.0 if convention == "gain" else -1.0
    mean, std, n = mean_std([sign * g for g in group.delta_m])
    if n < 2:
        return f"{mean:+.2f}"
    lo, hi = confidence_interval(mean, std, n)
    return f"{mean:+.2f} ± {std:.2f} [{lo:+.2f}, {hi:+.2f}]"


def overview_table(groups: Sequence[RunGroup], convention: str = "gain") -> Table:
    """One row per configuration: runs, tasks, Δm, parameters, multiply-adds, training time."""
    if convention not in DELTA_M_HEADERS:
        raise ValueError(f"Δm convention {convention!r} is not one of {', '.join(DELTA_M_HEADERS)}")
    header = ["configuration", "runs (seeds)", "tasks", DELTA_M_HEADERS[convention],
              "parameters (M)", "multiply-adds (G)", "train (s)"]
    rows, gains = [], []
    for g in groups:
        gains.append([mean_std(g.delta_m)[0] if g.delta_m else math.nan])
        res = g.runs[0].resources or {}
        params = (res.get("parameters") or {}).get("total")
        macs = (res.get("multiply_adds") or {}).get("all_tasks")
        secs = [r.train_seconds for r in g.runs if r.train_seconds is not None]
        rows.append([
            g.label,
            f"{len(g.runs)} ({', '.join(str(s) for s in g.seeds)})",
            ", ".join(g.tasks),
            delta_m_cell(g, convention),
            "—" if params is None else f"{params / 1e6:.3f}",
            "—" if macs is None else f"{macs / 1e9:.3f}",
            fmt(*mean_std(secs), digits=3, ci=False),
        ])
    sources = sorted({g.delta_m_source for g in groups if g.delta_m_source})
    note = "Mean ± sample standard deviation [95 % Student-t confidence interval] over seeds. "
    note += (f"Δm baselines: {'; '.join(sources)}." if sources else
             "No Δm: no single-task runs in the sweep and no --baselines file.")
    best = {(r, 3) for r, _ in best_cells(gains, [True])}  # the highest gain = the lowest drop
    return Table("Configurations (runs pooled over seeds)", header, rows, note, best)


def task_tables(groups: Sequence[RunGroup]) -> list[Table]:
    """Per task, one row per configuration that has it: every metric, mean ± std over seeds
    (primary metrics first, with ↑ / ↓)."""
    tasks = list(dict.fromkeys(t for g in groups for t in g.tasks))
    tables = []
    for task in tasks:
        having = [g for g in groups if task in g.tasks]
        metrics = list(dict.fromkeys(m for g in having for r in g.runs for m in r.results[task]))
        primary = primary_metrics(task)
        metrics = [m for m in metrics if m in primary] + [m for m in metrics if m not in primary]
        header = ["configuration", *[f"{m}{arrow(task, m)}" for m in metrics]]
        rows = [[g.label, *[fmt(*g.stats(task, m)) for m in metrics]] for g in having]
        means = [[g.stats(task, m)[0] for m in metrics] for g in having]
        best = best_cells(means, [primary.get(m) for m in metrics])
        tables.append(Table(f"Task: {task}", header, rows,
                            best={(r, c + 1) for r, c in best}))
    return tables


def baselines_table(groups: Sequence[RunGroup]) -> Table | None:
    """The single-task configurations found (the Δm reference), or None if there are none."""
    single = [g for g in groups if len(g.tasks) == 1]
    if not single:
        return None
    rows = []
    for g in single:
        task = g.tasks[0]
        cells = [f"{m}{arrow(task, m)} = {fmt(*g.stats(task, m))}" for m in g.runs[0].results[task]]
        rows.append([task, g.label, str(len(g.runs)), "; ".join(cells)])
    return Table("Single-task baselines", ["task", "configuration", "runs", "metrics"], rows)
