"""A loss-weighting sweep's runs, per run: final metrics, and weights / loss scales / losses
over training — the views the weighting dashboard adds to the report. The runs themselves are
read with :func:`densemtl.runs.load_runs`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from densemtl.runs import RunRecord

__all__ = ["format_last_values", "latest_run"]

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



#: where Hydra writes runs (``outputs/<date>/<time>``) and sweeps (``multirun/...``) by default,
#: relative to the directory a run was launched from: the repository or, for a notebook, its
#: parent
RUN_ROOTS = ("outputs", "multirun", "../outputs", "../multirun")


def latest_run(marker: str = "metrics.json", roots: Sequence[str | Path] = RUN_ROOTS) -> Path:
    """The most recently written run directory holding ``marker`` (a path inside the run, e.g.
    ``checkpoints/last.ckpt``) under ``roots``: the notebooks' default input."""
    found = [p for root in map(Path, roots) if root.is_dir() for p in root.rglob(marker)]
    if not found:
        raise FileNotFoundError(
            f"no run directory with {marker} under {', '.join(map(str, roots))} (looked from "
            f"{Path.cwd()}): train one (densemtl-train) or set the notebook's run directory"
        )
    newest = max(found, key=lambda p: p.stat().st_mtime)
    return newest.parents[len(Path(marker).parts) - 1].resolve()
