"""Finished runs (read through :mod:`densemtl.runs`) grouped by configuration, seeds pooled,
and the Δm baselines found among them."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from densemtl.runs import RunRecord, delta_m_of, load_baselines

#: configuration keys (dotted prefixes) that do not define an experiment: a group pools runs
#: that differ only in these (above all the seed)
NON_EXPERIMENT_KEYS = (
    "seed", "paths", "tracking", "logger", "evaluate", "ckpt_path", "baselines", "data.root",
    "trainer.enable_progress_bar",
)


@dataclass
class RunGroup:
    """Runs with the same configuration except the seed (and paths, logging)."""

    label: str
    runs: list[RunRecord]
    delta_m: list[float] = field(default_factory=list)
    delta_m_source: str | None = None

    @property
    def tasks(self) -> list[str]:
        """Tasks of the group's runs, in order."""
        return list(self.runs[0].results)

    @property
    def seeds(self) -> list[Any]:
        """Seeds of the runs."""
        return [r.seed for r in self.runs]

    def stats(self, task: str, metric: str) -> tuple[float, float, int]:
        """Mean, sample standard deviation (0 for one run) and count of a metric over seeds."""
        values = [r.results[task][metric] for r in self.runs if metric in r.results.get(task, {})]
        return mean_std(values)


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof 1; 0 for a single value) and count; NaN if empty."""
    if not values:
        return math.nan, math.nan, 0
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0, int(arr.size)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping → ``{"a.b.c": value}`` (lists and empty mappings kept as values)."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def experiment_key(config: Mapping[str, Any]) -> str:
    """Canonical text of a configuration without :data:`NON_EXPERIMENT_KEYS`."""
    flat = {
        k: v for k, v in flatten(config).items()
        if not any(k == p or k.startswith(f"{p}.") for p in NON_EXPERIMENT_KEYS)
    }
    return json.dumps(flat, sort_keys=True, default=str)


def _overrides(run: RunRecord) -> list[str]:
    """The run's Hydra overrides minus the seed (from ``run_info.json``)."""
    return [o for o in run.info.get("overrides", []) if o.lstrip("+~").split("=")[0] != "seed"]


def _labels(groups: Sequence[list[RunRecord]]) -> list[str]:
    """Distinct, short labels: the overrides that differ between groups when every run was
    launched by Hydra, else the configuration keys that differ (``x.name`` standing for ``x``)."""
    overrides = [_overrides(g[0]) for g in groups]
    # a lone configuration keeps all its overrides (nothing to tell it apart from)
    common = set.intersection(*(set(o) for o in overrides)) if len(overrides) > 1 else set()
    labels = [", ".join(o for o in ov if o not in common) for ov in overrides]
    if all(labels) and len(set(labels)) == len(labels):
        return labels
    flats = [json.loads(experiment_key(g[0].config)) for g in groups]
    keys = sorted({k for f in flats for k in f if len({json.dumps(x.get(k)) for x in flats}) > 1})
    named = {k.rsplit(".", 1)[0] for k in keys if k.endswith(".name")}
    shown = [k for k in keys if k.endswith(".name") or k.split(".", 1)[0] not in named]
    labels = [
        ", ".join(f"{k.removesuffix('.name')}={f.get(k)}" for k in shown) or str(g[0].name)
        for f, g in zip(flats, groups)
    ]
    counts = {lab: labels.count(lab) for lab in labels}
    return [f"{lab} #{i}" if counts[lab] > 1 else lab for i, lab in enumerate(labels)]


def group_runs(runs: Sequence[RunRecord]) -> list[RunGroup]:
    """Runs pooled over seeds: one group per configuration, in order of first appearance."""
    by_key: dict[str, list[RunRecord]] = {}
    for run in runs:
        by_key.setdefault(experiment_key(run.config), []).append(run)
    groups = list(by_key.values())
    return [RunGroup(label, g) for label, g in zip(_labels(groups), groups)]


def sweep_baselines(
    runs: Sequence[RunRecord], pair_seeds: bool = False
) -> dict[tuple[str | None, str, int | None], dict[str, float]]:
    """Single-task baselines found among the runs: ``(dataset, task, seed)`` → metric means over
    every single-task run of that task on that dataset, seeds pooled (the key's seed None), or,
    with ``pair_seeds``, over the runs of each seed."""
    pooled: dict[tuple[str | None, str, int | None], dict[str, list[float]]] = {}
    for run in runs:
        if run.single_task:
            key = (run.dataset, run.single_task, run.seed if pair_seeds else None)
            for metric, value in run.results[run.single_task].items():
                pooled.setdefault(key, {}).setdefault(metric, []).append(value)
    return {key: {m: float(np.mean(v)) for m, v in ms.items()} for key, ms in pooled.items()}


def attach_delta_m(
    groups: Sequence[RunGroup], baselines: str | Path | Mapping | None = None,
    pair_seeds: bool = False,
) -> None:
    """Fill each multi-task group's per-run Δm (gain, %) and say where the baselines came from.

    Baselines: the ``baselines`` file/mapping if given, else the single-task runs of the same
    dataset among the groups — seeds pooled, or with ``pair_seeds`` those of the run's own seed
    (a seed drives the data order and augmentation, which the two runs then share: noise they
    have in common cancels in Δm); a run whose tasks lack a baseline keeps the Δm stored in its
    ``metrics.json`` (trained with ``baselines=``), if any.
    """
    if pair_seeds and baselines is not None:
        raise ValueError("pair_seeds takes the baselines from the single-task runs of each seed; "
                         "it cannot be combined with a baselines file")
    given = load_baselines(baselines)
    found = sweep_baselines([r for g in groups for r in g.runs], pair_seeds)
    tasks_found = {(dataset, task) for dataset, task, _ in found}
    source = "single-task runs of the same seed" if pair_seeds else "single-task runs"
    for group in groups:
        if len(group.tasks) < 2:
            continue
        gains, sources = [], set()
        for run in group.runs:
            seed = run.seed if pair_seeds else None
            missing = pair_seeds and [t for t in run.results if (run.dataset, t) in tasks_found
                                      and (run.dataset, t, seed) not in found]
            if missing:
                raise ValueError(f"pairing seeds: {run.path} has seed {seed}, and there is no "
                                 f"single-task run of {', '.join(missing)} with that seed")
            base = given or {
                t: found[(run.dataset, t, seed)] for t in run.results
                if (run.dataset, t, seed) in found
            }
            if set(run.results) <= set(base):
                tasks = run.tasks()
                gains.append(delta_m_of(run.results, base, tasks)["delta_m_gain"])
                sources.add("--baselines" if given else source)
            elif run.delta_m:
                gains.append(run.delta_m["delta_m_gain"])
                sources.add("metrics.json")
        if len(gains) == len(group.runs):
            group.delta_m, group.delta_m_source = gains, ", ".join(sorted(sources))
