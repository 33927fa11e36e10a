"""The console summary of one run: metrics per task (primary first, ↑/↓), Δm, cost, files."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from densemtl.runs.records import HISTORY_FILE, METRICS_FILE, RUN_INFO_FILE
from densemtl.tasks import TASK_REGISTRY


def primary_metrics(task: str) -> dict[str, bool]:
    """A task's primary metrics (name → higher is better); empty for a task no one registers."""
    return dict(TASK_REGISTRY[task].primary_metrics) if task in TASK_REGISTRY else {}


def confidence_interval(mean: float, std: float, n: int,
                        level: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of a mean from ``n`` runs with sample std ``std``."""
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return mean - half, mean + half


def fmt(mean: float, std: float = 0.0, n: int = 1, digits: int = 4, ci: bool = True) -> str:
    """``mean ± std [95 % CI]`` with ``digits`` significant digits; the ± part and the interval
    only for more than one run (``ci=False``: no interval)."""
    if n == 0 or math.isnan(mean):
        return "—"
    text = f"{mean:.{digits}g}"
    if n < 2:
        return text
    text += f" ± {std:.2g}"
    if ci:
        lo, hi = confidence_interval(mean, std, n)
        text += f" [{lo:.{digits}g}, {hi:.{digits}g}]"
    return text


def arrow(task: str, metric: str) -> str:
    """↑ / ↓ for a task's primary metrics (higher / lower is better), '' otherwise."""
    return {True: " ↑", False: " ↓"}.get(primary_metrics(task).get(metric), "")


def run_summary(payload: Mapping[str, Any], run_dir: str | Path) -> str:
    """The console summary at the end of a run: metrics per task (primary first, ↑/↓), Δm,
    cost, and where every result file was written."""
    run_dir = Path(run_dir)
    info = payload.get("run") or {}
    head = " · ".join(str(x) for x in (
        payload.get("dataset"), info.get("architecture"),
        info.get("weighting") and f"weighting {info['weighting']}",
        info.get("seed") is not None and f"seed {info['seed']}") if x)
    lines = [f"\nResults ({payload.get('name')}){f' — {head}' if head else ''}"]
    for task, values in payload["tasks"].items():
        primary = primary_metrics(task)
        keys = [k for k in values if k in primary] + [k for k in values if k not in primary]
        cells = "  ".join(f"{k}{arrow(task, k).strip()} {fmt(values[k])}" for k in keys)
        lines.append(f"  {task:<14s}{cells}")
    if payload.get("delta_m"):
        d = payload["delta_m"]
        drop, gain = d["delta_m_drop"], d["delta_m_gain"]
        lines.append(f"  {'Δm':<14s}drop {drop:.2f} %  (gain {gain:+.2f} %)")
    cost = []
    if payload.get("train_seconds") is not None:
        setup = payload.get("setup_seconds")
        cost.append(f"trained {payload['train_seconds']:.1f} s"
                    + (f" (+ {setup:.1f} s set-up)" if setup is not None else ""))
    res = payload.get("resources") or {}
    if res:
        cost.append(f"{res['parameters']['total'] / 1e6:.2f} M parameters")
        cost.append(f"{res['multiply_adds']['all_tasks'] / 1e9:.3f} G multiply-adds "
                    f"({res['image_size']}×{res['image_size']})")
    if cost:
        lines.append(f"  {'cost':<14s}{' · '.join(cost)}")
    files = [METRICS_FILE, HISTORY_FILE, RUN_INFO_FILE, "checkpoints/last.ckpt",
             "qualitative/", "tensorboard/"]
    written = [f for f in files if (run_dir / f.rstrip("/")).exists()]
    lines.append(f"Written to {run_dir}: {'  '.join(written)}")
    for wandb_run in sorted((run_dir / "wandb").glob("offline-run-*")):
        lines.append(f"  wandb offline run; upload with: wandb sync {wandb_run}")
    return "\n".join(lines)
