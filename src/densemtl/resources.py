"""Resource analysis (ASTMT Fig. 5 / 9): parameters and multiply-adds per task (the Δm-vs-cost
plot is the report's: ``densemtl.report.plots.plot_delta_m_resources``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def parameter_counts(net: nn.Module, tasks: Sequence[str]) -> dict[str, Any]:
    """Shared, per-task and total parameter counts (each tensor counted once)."""
    def numel(params) -> int:
        return sum(p.numel() for p in params)

    per_task = {t: numel(net.task_parameters(t)) for t in tasks}
    shared = numel(net.shared_parameters())
    return {"shared": shared, "per_task": per_task, "total": shared + sum(per_task.values())}


@torch.no_grad()
def multiply_adds(net: nn.Module, tasks: Sequence[str], image_size: int | Sequence[int]) -> dict:
    """Multiply-adds of one inference image: each task alone, and all tasks together.

    Counted with ``torch.utils.flop_counter`` (FLOPs / 2 = multiply-adds). "All tasks" runs the
    network's own execution mode, so a shared-encoder net counts its encoder once.
    """
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    was_training = net.training
    net.eval()
    x = torch.zeros(1, 3, h, w)

    def count(run_tasks: Sequence[str]) -> int:
        with FlopCounterMode(display=False) as counter:
            net(x, list(run_tasks))
        return counter.get_total_flops() // 2

    result = {"per_task": {t: count([t]) for t in tasks}, "all_tasks": count(tasks)}
    net.train(was_training)
    return result


def resource_report(net: nn.Module, tasks: Sequence[str], image_size: int) -> dict[str, Any]:
    """Parameters and multiply-adds of ``net`` for ``tasks`` at ``image_size``."""
    return {
        "parameters": parameter_counts(net, tasks),
        "multiply_adds": multiply_adds(net, tasks, image_size),
        "image_size": image_size,
    }


def format_report(report: dict[str, Any]) -> str:
    """Human-readable table of a :func:`resource_report`."""
    p, m = report["parameters"], report["multiply_adds"]
    size = report["image_size"]
    lines = [
        f"parameters: shared {p['shared']:,}  total {p['total']:,}",
        f"multiply-adds at {size}x{size}: all tasks {m['all_tasks'] / 1e9:.3f} G",
        f"  {'task':<12s} {'params':>12s} {'MACs (G)':>10s}",
    ]
    for t, n in p["per_task"].items():
        lines.append(f"  {t:<12s} {n:>12,} {m['per_task'][t] / 1e9:>10.3f}")
    return "\n".join(lines)

