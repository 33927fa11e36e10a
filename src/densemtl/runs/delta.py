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
                raise KeyError(f"baseline for task {name!r} lacks metric {metric!r}"
                               + convention_hint(task, baselines[name]))
            flat_results[key] = results[name][metric]
            flat_base[key] = baselines[name][metric]
            higher[key] = up
    gain = delta_m(flat_results, flat_base, higher)
    return {"delta_m_gain": gain, "delta_m_drop": -gain}


def check_baselines(baselines: Results, tasks: Mapping[str, Task]) -> None:
    """Fail before any work if Δm cannot be computed: a task without a baseline, or a primary
    metric (in the task's metric convention) the baselines lack."""
    delta_m_of(baselines, baselines, tasks)


def convention_hint(task: Task, have: Mapping[str, float]) -> str:
    """What the baselines hold and, for a task with metric conventions (saliency), the
    convention whose primary metrics they do hold, as the override that selects it."""
    hint = f" (it has: {', '.join(have) or 'nothing'})"
    current = getattr(task, "convention", None)
    fits = [
        c for c in getattr(task, "CONVENTIONS", ())
        if c != current and set(type(task)(convention=c).primary_metrics) <= set(have)
    ]
    if current is not None:
        hint += f"; this run scores {task.name} in convention {current!r}"
    if fits:
        hint += (f"; the baselines are in convention {fits[0]!r}: choose it with "
                 f"++data.task_args.{task.name}.convention={fits[0]}, or give baselines in "
                 f"convention {current!r}")
    return hint

