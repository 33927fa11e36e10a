"""Optimisers and learning-rate schedules built from plain config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("poly", "constant")


def build_optimizer(cfg: Mapping[str, Any], groups: Sequence[dict]) -> torch.optim.Optimizer:
    """Optimiser over parameter ``groups`` (each may carry ``lr_scale`` and ``weight_decay``).

    A group's learning rate is ``cfg.lr × lr_scale``; ``lr_scale`` stays in the group so the
    schedule can keep the ratio (the single-tasking loop divides the shared layers' rate by T).
    """
    name = cfg.get("name", "sgd")
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name={name!r} is not one of {', '.join(OPTIMIZERS)}")
    lr = float(cfg["lr"])
    if not lr > 0:
        raise ValueError(f"optimizer.lr must be positive, got {lr}")
    wd = float(cfg.get("weight_decay", 0.0))
    param_groups = []
    for group in groups:
        params = [p for p in group["params"] if p.requires_grad]
        if not params:
            continue
        scale = float(group.get("lr_scale", 1.0))
        param_groups.append(
            {
                "params": params,
                "lr": lr * scale,
                "lr_scale": scale,
                "weight_decay": float(group.get("weight_decay", wd)),
                "name": group.get("name", "params"),
            }
        )
    if name == "sgd":
        return torch.optim.SGD(
            param_groups,
            lr=lr,
            momentum=float(cfg.get("momentum", 0.9)),
            nesterov=bool(cfg.get("nesterov", False)),
        )
    betas = tuple(cfg.get("betas", (0.9, 0.999)))
    eps = float(cfg.get("eps", 1e-8))
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return cls(param_groups, lr=lr, betas=betas, eps=eps)


def build_schedule(
    cfg: Mapping[str, Any], optimizer: torch.optim.Optimizer, total_steps: int
) -> LambdaLR:
    """Per-iteration schedule: ``poly`` (1 − it/total)^power, or ``constant``."""
    kind = cfg.get("schedule", "poly")
    if kind not in SCHEDULES:
        raise ValueError(f"optimizer.schedule={kind!r} is not one of {', '.join(SCHEDULES)}")
    power = float(cfg.get("poly_power", 0.9))
    total = max(int(total_steps), 1)

    def factor(step: int) -> float:
        if kind == "constant":
            return 1.0
        return max(1.0 - step / total, 0.0) ** power

    return LambdaLR(optimizer, factor)
