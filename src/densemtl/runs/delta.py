"""Δm of a run against single-task baselines, and loading those baselines."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from densemtl.metrics.delta_m import delta_m
from densemtl.tasks import Task

Results = Mapping[str, Mapping[str, float]]


def load_baselines(spec: str | Path | Mapping | None) -> dict[str, dict[str, float]] | None:
    """Single-task baseline numbers: a mapping task → {metric: value}, ``reference:<row>`` (a
    paper's numbers shipped in ``densemtl.reference``), or a JSON file of either that mapping or
    a run's ``metrics.json`` (whose ``"tasks"`` entry is used)."""
    if spec is None:
        return None
    if isinstance(spec, str) and spec.startswith("reference:"):
        from densemtl import reference

        return reference.baselines(spec.split(":", 1)[1])
    if isinstance(spec, Mapping):
        return {t: {k: float(v) for k, v in m.items()} for t, m in spec.items()}
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(
            f"baselines file {path} does not exist; pass a metrics.json of single-task runs or a "
            "JSON mapping task -> {metric: value}"
        )
    data = json.loads(path.read_text())
    return load_baselines(data.get("tasks", data))


def delta_m_of(
    results: Results, baselines: Results, tasks: Mapping[str, Task]
) -> dict[str, float]:
    """Δm over every task's primary metrics (SPEC §6), reported both as gain and as drop."""
    flat_results, flat_base, higher = {}, {}, {}
    for name, task in tasks.items():
        if name not in baselines:
            raise KeyError(
                f"baselines have no entry for task {name!r} (they have: {', '.join(baselines)})"
            )
        for metric, up in task.primary_metrics.items():
            key = f"{name}/{metric}"
            if metric not in baselines[name]:
                raise KeyError(f"baseline for task {name!r} lacks metric {metric!r}")
            flat_results[key] = results[name][metric]
            flat_base[key] = baselines[name][metric]
            higher[key] = up
    gain = delta_m(flat_results, flat_base, higher)
    return {"delta_m_gain": gain, "delta_m_drop": -gain}
