"""Optimisers and learning-rate schedules built from plain config."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch.optim.lr_scheduler import LambdaLR

from densemtl.registry import Registry, check_kwargs

SCHEDULES = ("poly", "constant")

#: every optimizer, by ``optimizer.name``: a builder ``(param_groups, lr, weight_decay, **options)``
OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry(
    "optimizer", "optimizer", ["densemtl.training"]
)
#: the ``optimizer`` keys that configure the learning-rate schedule, not the optimiser
SCHEDULE_KEYS = ("schedule", "poly_power", "warmup_steps")


@OPTIMIZERS.register("sgd")
def sgd(groups: list[dict], lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
        nesterov: bool = False) -> torch.optim.Optimizer:
    """SGD with (Nesterov) momentum; ``weight_decay`` is each group's default."""
    return torch.optim.SGD(param_groups(groups, lr, weight_decay), lr=lr, momentum=momentum,
                           nesterov=nesterov)


@OPTIMIZERS.register("adam")
def adam(groups: list[dict], lr: float, weight_decay: float = 0.0,
         betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> torch.optim.Optimizer:
    """Adam (L2 weight decay in the gradient)."""
    return torch.optim.Adam(param_groups(groups, lr, weight_decay), lr=lr, betas=tuple(betas),
                            eps=eps)


@OPTIMIZERS.register("adamw")
def adamw(groups: list[dict], lr: float, weight_decay: float = 0.0,
          betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay)."""
    return torch.optim.AdamW(param_groups(groups, lr, weight_decay), lr=lr, betas=tuple(betas),
                             eps=eps)


def param_groups(groups: Sequence[dict], lr: float, weight_decay: float) -> list[dict]:
    """Torch parameter groups: each group's learning rate is ``lr × lr_scale``; ``lr_scale``
    stays in the group so the schedule can keep the ratio (the single-tasking loop divides the
    shared layers' rate by T); a group's own ``weight_decay`` overrides the optimiser's."""
    if not lr > 0:
        raise ValueError(f"optimizer.lr must be positive, got {lr}")
    out = []
    for group in groups:
        params = [p for p in group["params"] if p.requires_grad]
        if not params:
            continue
        scale = float(group.get("lr_scale", 1.0))
        out.append(
            {
                "params": params,
                "lr": lr * scale,
                "lr_scale": scale,
                "weight_decay": float(group.get("weight_decay", weight_decay)),
                "name": group.get("name", "params"),
            }
        )
    return out


def split_optimizer_config(cfg: Mapping[str, Any]) -> tuple[str, dict, dict]:
    """``optimizer`` config → (name, optimiser options, schedule options)."""
    options = dict(cfg)
    if "name" not in options:
        raise KeyError(f"optimizer config needs 'name' (one of {', '.join(OPTIMIZERS.names())})")
    name = options.pop("name")
    schedule = {k: options.pop(k) for k in SCHEDULE_KEYS if k in options}
    return name, options, schedule


def check_optimizer_config(cfg: Mapping[str, Any]) -> None:
    """Validate an ``optimizer`` config (names, keys, types) without building anything."""
    name, options, schedule = split_optimizer_config(cfg)
    OPTIMIZERS.check(name, options, skip=("groups",))
    check_kwargs(lr_schedule, schedule, "optimizer", skip=("optimizer", "total_steps"))
    check_schedule(**schedule)


def build_optimizer(cfg: Mapping[str, Any], groups: Sequence[dict]) -> torch.optim.Optimizer:
    """Optimiser of ``cfg.name`` over parameter ``groups`` (each may carry ``lr_scale``,
    ``weight_decay`` and ``name``)."""
    name, options, _ = split_optimizer_config(cfg)
    return OPTIMIZERS.build(name, list(groups), **options)


class PolyFactor:
    """Learning-rate factor of iteration ``step``: ``(1 − step/total)^power`` (``poly``) or 1,
    times ``(step + 1)/warmup`` over the first ``warmup`` iterations (a linear warm-up; 0: none).

    A class, not a closure, so ``LambdaLR`` saves its attributes in the scheduler's state: a
    resumed run keeps the horizon it started with.
    """

    def __init__(self, kind: str, total: int, power: float, warmup: int = 0) -> None:
        self.kind, self.total, self.power = kind, max(int(total), 1), float(power)
        self.warmup = int(warmup)

    def __call__(self, step: int) -> float:
        ramp = min((step + 1) / self.warmup, 1.0) if self.warmup else 1.0
        if self.kind == "constant":
            return ramp
        return ramp * max(1.0 - step / self.total, 0.0) ** self.power


def lr_schedule(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    schedule: Literal["poly", "constant"] = "poly",
    poly_power: float = 0.9,
    warmup_steps: int = 0,
) -> LambdaLR:
    """Per-iteration schedule: ``poly`` (1 − it/total)^power, or ``constant``; with
    ``warmup_steps`` > 0 the factor rises linearly to it over the first iterations."""
    check_schedule(schedule, poly_power, warmup_steps)
    return LambdaLR(optimizer, PolyFactor(schedule, total_steps, poly_power, warmup_steps))


def check_schedule(schedule: str = "poly", poly_power: float = 0.9, warmup_steps: int = 0) -> None:
    """Refuse a schedule name or warm-up length ``lr_schedule`` cannot use, naming the key."""
    if schedule not in SCHEDULES:
        raise ValueError(f"optimizer.schedule={schedule!r} is not one of {', '.join(SCHEDULES)}")
    if isinstance(warmup_steps, bool) or int(warmup_steps) != warmup_steps or warmup_steps < 0:
        raise ValueError(f"optimizer.warmup_steps must be an integer >= 0, got {warmup_steps!r}")


def build_schedule(
    cfg: Mapping[str, Any], optimizer: torch.optim.Optimizer, total_steps: int
) -> LambdaLR:
    """The schedule of an ``optimizer`` config (its ``schedule`` / ``poly_power`` /
    ``warmup_steps`` keys)."""
    return lr_schedule(optimizer, total_steps, **{k: cfg[k] for k in SCHEDULE_KEYS if k in cfg})
