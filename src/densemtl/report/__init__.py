"""Sweep reports: ``densemtl-report`` aggregates finished runs into Markdown tables, PNG plots and
one self-contained HTML page.

    write_report(["multirun/weighting_x_seeds/..."], "report/")

Runs are pooled over seeds (same configuration but the seed), Δm is taken against the single-task
runs found among them or a baselines file; see :mod:`densemtl.report.groups`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from densemtl.report.groups import RunGroup, attach_delta_m, group_runs, mean_std
from densemtl.report.html import render_html
from densemtl.report.plots import (
    plot_delta_m_resources,
    plot_metric_bars,
    plot_search_curves,
    plot_training_curves,
)
from densemtl.report.tables import Section, Table, baselines_table, overview_table, task_tables
from densemtl.runs import incomplete_runs, load_runs, write_json_atomic

__all__ = ["ReportFiles", "SweepSummary", "build_sections", "load_groups", "summarize",
           "write_report"]


@dataclass
class ReportFiles:
    """What :func:`write_report` wrote."""

    markdown: Path
    html: Path
    summary: Path
    plots: list[Path]
    overview: str
    #: runs left out because their results are unreadable ("<file>: <problem>")
    skipped: list[str]


def load_groups(
    paths: Sequence[str | Path], baselines: str | Path | Mapping | None = None,
    skipped: list[str] | None = None, pair_seeds: bool = False,
) -> list[RunGroup]:
    """The finished runs under ``paths`` (sweep, run or wandb run directories) pooled over seeds,
    with Δm against ``baselines`` or else the single-task runs among them: what the report and
    ``densemtl-resources --plot`` both show (``pair_seeds``: see :func:`attach_delta_m`).
    Unreadable runs: see :func:`load_runs`."""
    groups = group_runs(load_runs(paths, skipped))
    attach_delta_m(groups, baselines, pair_seeds)
    return groups


def summarize(groups: Sequence[RunGroup]) -> list[dict[str, Any]]:
    """The report's numbers as plain data (``summary.json``): per configuration its runs, Δm
    gains and per-task metric mean / std / count over seeds."""
    out = []
    for g in groups:
        metrics = {
            t: {m: dict(zip(("mean", "std", "n"), g.stats(t, m))) for m in g.runs[0].results[t]}
            for t in g.tasks
        }
        gain = dict(zip(("mean", "std", "n"), mean_std(g.delta_m))) if g.delta_m else None
        out.append({
            "label": g.label,
            "runs": [str(r.path) for r in g.runs],
            "seeds": g.seeds,
            "tasks": metrics,
            "delta_m_gain": gain,
            "delta_m_source": g.delta_m_source,
        })
    return out


def build_sections(
    groups: Sequence[RunGroup], out: Path, convention: str, incomplete: Sequence[Path],
    skipped: Sequence[str] = (),
) -> list[Section]:
    """Overview, per-task metrics, baselines, plots and the run list, in reading order."""
    sections = [Section("Overview", [overview_table(groups, convention)])]
    bars = plot_metric_bars(groups, out / "final_metrics.png")
    sections.append(Section("Metrics per task", task_tables(groups), images=[bars] if bars else []))
    base = baselines_table(groups)
    if base is not None:
        sections.append(Section("Baselines", [base]))
    curves = plot_training_curves(groups, out / "training_curves.png")
    sections.append(Section(
        "Task weights and loss scales during training",
        images=[curves] if curves else [],
        text=[] if curves else ["No run logged train/weight/* in a metrics.csv."],
    ))
    search = plot_search_curves(groups, out / "atrc_search.png")
    if search:
        sections.append(Section("ATRC search: α entropy and fixed blocks", images=[search]))
    cost = plot_delta_m_resources(groups, out / "delta_m_vs_resources.png", convention)
    if cost:
        sections.append(Section("Δm against parameters and multiply-adds", images=[cost]))
    runs = Table("Run directories", ["configuration", "seed", "directory"],
                 [[g.label, str(r.seed), str(r.path)] for g in groups for r in g.runs])
    missing = [f"Without results (crashed or running): {p}" for p in incomplete]
    missing += [f"Left out, unreadable results: {problem}" for problem in skipped]
    sections.append(Section("Runs", [runs], text=missing))
    return sections


def write_report(
    paths: Sequence[str | Path],
    out: str | Path,
    baselines: str | Path | Mapping | None = None,
    convention: str = "gain",
    title: str = "densemtl report",
    pair_seeds: bool = False,
) -> ReportFiles:
    """Aggregate the runs under ``paths`` into ``out``: ``report.md``, ``report.html`` (images
    embedded), ``summary.json`` and the PNG plots."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    skipped: list[str] = []
    groups = load_groups(paths, baselines, skipped, pair_seeds)
    sections = build_sections(groups, out, convention, incomplete_runs(paths), skipped)
    markdown = out / "report.md"
    markdown.write_text(f"# {title}\n\n" + "\n\n".join(s.to_markdown(out) for s in sections)
                        + "\n")
    page = out / "report.html"
    page.write_text(render_html(title, sections))
    summary = write_json_atomic(out / "summary.json", summarize(groups))
    plots = [p for s in sections for p in s.images]
    return ReportFiles(markdown, page, summary, plots, sections[0].tables[0].to_markdown(),
                       skipped)


class SweepSummary(Callback):
    """Hydra callback: after a multirun, how many jobs wrote results, which did not, and the
    command that aggregates the sweep (configured in ``conf/train.yaml`` under
    ``hydra.callbacks``)."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep = Path(str(config.hydra.sweep.dir))
        done = sorted(p.parent for p in sweep.rglob("metrics.json"))
        failed = incomplete_runs([sweep])
        print(f"\nSweep {sweep}: {len(done)} runs with results, {len(failed)} without")
        for path in failed:
            print(f"  no metrics.json: {path}")
        if done:
            print(f"Aggregate it: densemtl-report {sweep} --out {sweep / 'report'}")

