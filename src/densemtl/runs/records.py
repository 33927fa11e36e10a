"""A run directory's files, written and read in one place.

A run writes ``run_info.json`` at start (how it is grouped: dataset, architecture, weighting,
seed, Hydra overrides), ``metrics.csv`` while training (the CSV logger: per-epoch
``train/weight/<task>``, ``train/scale/<task>``, ``train/loss/<task>`` (the README's key scheme),
``val/<task>/<metric>``) and ``metrics.json`` when it finishes (final validation metrics, the
configuration, Δm when baselines were given, resources, training time). A directory holding a
``metrics.json`` is a finished run; :func:`load_runs` finds them under sweep directories, run
directories or wandb offline run directories.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

METRICS_FILE = "metrics.json"
RUN_INFO_FILE = "run_info.json"
HISTORY_FILE = "metrics.csv"

#: curve kind -> CSV column of a task (epoch means logged by every weighting strategy)
CURVES = {
    "weight": "train/weight/{task}",
    "scale": "train/scale/{task}",
    "loss": "train/loss/{task}",
}


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    """Write JSON through a temporary file + rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, allow_nan=True) + "\n")
    os.replace(tmp, path)
    return path


def write_metrics(run_dir: str | Path, payload: Mapping[str, Any]) -> Path:
    """Write a finished run's ``metrics.json``."""
    return write_json_atomic(Path(run_dir) / METRICS_FILE, dict(payload))


def write_run_info(run_dir: str | Path, info: Mapping[str, Any]) -> Path:
    """Write ``run_info.json`` (at start, so crashed runs have it too)."""
    return write_json_atomic(Path(run_dir) / RUN_INFO_FILE, dict(info))


class Curve(NamedTuple):
    """One logged column: the rows where it has a value."""

    step: np.ndarray
    epoch: np.ndarray
    value: np.ndarray


def read_csv_history(path: str | Path) -> dict[str, Curve]:
    """Every column of a Lightning ``metrics.csv`` as the (step, epoch, value) rows it filled."""
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"epoch", "step"} <= set(reader.fieldnames):
            raise ValueError(
                f"{path} is not a Lightning CSV log: need 'epoch' and 'step' columns, got "
                f"{reader.fieldnames}"
            )
        rows: dict[str, list[tuple[int, int, float]]] = {}
        for row in reader:
            step, epoch = int(row["step"]), int(row["epoch"])
            for key, text in row.items():
                if key not in ("epoch", "step") and text not in ("", None):
                    rows.setdefault(key, []).append((step, epoch, float(text)))
    return {key: Curve(*(np.asarray(col) for col in zip(*values))) for key, values in rows.items()}


@dataclass
class RunRecord:
    """One finished run as its files hold it."""

    path: Path
    name: str
    scheme: str
    seed: int | None
    results: dict[str, dict[str, float]]
    config: dict[str, Any]
    delta_m: dict[str, float] | None = None
    history: dict[str, Curve] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] | None = None
    train_seconds: float | None = None

    @property
    def dataset(self) -> str | None:
        """Dataset name of the run's data config."""
        return (self.config.get("data") or {}).get("name")

    @property
    def single_task(self) -> str | None:
        """The task of a single-task run (one task in its results), else None."""
        return next(iter(self.results)) if len(self.results) == 1 else None

    def tasks(self) -> dict[str, Any]:
        """The run's task objects, built from its own config (dataset task arguments included,
        so e.g. the saliency convention decides which metric enters Δm); default task objects
        for a record without a task config."""
        from densemtl.tasks import build_task, build_tasks

        if not self.config.get("tasks"):
            return {t: build_task(t) for t in self.results}
        return {t: task for t, task in build_tasks(self.config).items() if t in self.results}

    def curves(self, kind: str) -> dict[str, Curve]:
        """Per-task curves of ``kind`` (a key of :data:`CURVES`) present in the run's CSV."""
        if kind not in CURVES:
            raise KeyError(f"unknown curve kind {kind!r}; choose one of {', '.join(CURVES)}")
        columns = {t: CURVES[kind].format(task=t) for t in self.results}
        return {t: self.history[c] for t, c in columns.items() if c in self.history}


class UnreadableRun(ValueError):
    """A run directory whose ``metrics.json`` (or ``run_info.json``) cannot be read as a densemtl
    result: the message names the file and what is wrong."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UnreadableRun(f"{path}: unreadable JSON ({err})") from None


def _check_results(path: Path, payload: Any) -> None:
    """Raise unless ``payload`` is a result: ``tasks`` maps each task to ``{metric: number}``."""
    tasks = payload.get("tasks") if isinstance(payload, dict) else None
    if not isinstance(tasks, dict) or not tasks:
        raise UnreadableRun(f"{path}: no 'tasks' mapping (not a densemtl result; expected "
                            "{\"tasks\": {task: {metric: number}}, ...})")
    for task, metrics in tasks.items():
        bad = ([f"{task}.{m}={v!r}" for m, v in metrics.items()
                if isinstance(v, bool) or not isinstance(v, int | float | None)]
               if isinstance(metrics, dict) else [f"{task}={metrics!r}"])
        if bad:
            raise UnreadableRun(f"{path}: tasks.{bad[0]} is not a number (expected "
                                "{metric: number} per task)")


def read_run(path: str | Path, name: str | None = None) -> RunRecord:
    """The record of the finished run in directory ``path``; :class:`UnreadableRun` when its
    ``metrics.json`` or ``run_info.json`` is corrupt or not a densemtl result."""
    path = Path(path)
    payload = _read_json(path / METRICS_FILE)
    _check_results(path / METRICS_FILE, payload)
    config = payload.get("config") or {}
    weighting = config.get("weighting") or {}
    csv_path, info_path = path / HISTORY_FILE, path / RUN_INFO_FILE
    info = _read_json(info_path) if info_path.is_file() else payload.get("run")
    return RunRecord(
        path=path,
        name=path.name if name is None else name,
        scheme=str(weighting.get("name", "fixed")),
        seed=config.get("seed"),
        results=payload["tasks"],
        config=config,
        delta_m=payload.get("delta_m"),
        history=read_csv_history(csv_path) if csv_path.is_file() else {},
        info=info or {},
        resources=payload.get("resources"),
        train_seconds=payload.get("train_seconds"),
    )


def resolve_run_dirs(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """Input paths as directories to search: a wandb offline run directory
    (``<run>/wandb/offline-run-*``) becomes the run directory that holds it."""
    paths = [paths] if isinstance(paths, str | Path) else list(paths)
    dirs = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist (expected a sweep, run or wandb run dir)")
        if p.is_file():
            raise ValueError(f"{p} is a file: pass the directory holding {METRICS_FILE}")
        if p.name.startswith(("offline-run-", "run-")) and p.parent.name == "wandb":
            run_dir = p.parent.parent
            if not (run_dir / METRICS_FILE).is_file():
                raise FileNotFoundError(
                    f"wandb run {p} belongs to {run_dir}, which has no {METRICS_FILE} (the run "
                    "did not finish, or its directory was not copied with the wandb folder)"
                )
            p = run_dir
        dirs.append(p)
    return dirs


def load_runs(paths: str | Path | Sequence[str | Path],
              skipped: list[str] | None = None) -> list[RunRecord]:
    """Every finished run under ``paths`` (sweep, run or wandb offline run directories), each
    once, sorted by weighting scheme, then name.

    Run names are paths relative to their sweep directory (the directory's own name when it is
    a run itself). A run whose results are unreadable (a truncated or foreign ``metrics.json``)
    is left out: its description ("<file>: <problem>") is appended to ``skipped`` when given,
    else warned about, so one bad file does not hide a sweep. :class:`UnreadableRun` when no
    run under ``paths`` is readable.
    """
    runs, bad = [], []
    for root in resolve_run_dirs(paths):
        found = sorted(p.parent for p in root.rglob(METRICS_FILE))
        if not found:
            raise FileNotFoundError(
                f"no run under {root}: a sweep directory holds run directories with a "
                f"{METRICS_FILE} each (written when a run finishes with evaluate=true)"
            )
        for run_dir in found:
            name = run_dir.name if run_dir == root else str(run_dir.relative_to(root))
            try:
                runs.append(read_run(run_dir, name))
            except UnreadableRun as err:
                bad.append(str(err))
    if not runs:
        raise UnreadableRun("no readable run: " + "; ".join(bad))
    for problem in bad:
        if skipped is None:
            warnings.warn(f"skipping a run: {problem}", stacklevel=2)
        else:
            skipped.append(problem)
    seen: set[Path] = set()
    unique = []
    for run in sorted(runs, key=lambda r: (r.scheme, r.name)):
        if run.path.resolve() not in seen:
            seen.add(run.path.resolve())
            unique.append(run)
    return unique


def incomplete_runs(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """Hydra job directories (with ``.hydra/``) under ``paths`` that wrote no ``metrics.json``:
    runs that crashed or are still going."""
    found = []
    for root in resolve_run_dirs(paths):
        found += [d.parent for d in root.rglob(".hydra")
                  if not (d.parent / METRICS_FILE).exists()]
    return sorted(set(found))
