"""Optimiser groups and the poly schedule, against hand-computed learning rates."""

import pytest
import torch

from densemtl.training.optim import build_optimizer, build_schedule, check_optimizer_config


def _groups():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    return [{"name": "shared", "params": [a], "lr_scale": 0.2}, {"name": "task", "params": [b]}]


def test_poly_schedule_and_group_scale():
    cfg = {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4, "poly_power": 0.9}
    opt = build_optimizer(cfg, _groups())
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.002, 0.01])
    sched = build_schedule(cfg, opt, total_steps=10)
    for _ in range(4):
        opt.step()
        sched.step()
    factor = (1 - 4 / 10) ** 0.9  # 0.6^0.9 = 0.631446...
    assert factor == pytest.approx(0.631446, rel=1e-5)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.002 * factor, 0.01 * factor])
    assert opt.param_groups[0]["weight_decay"] == 1e-4


def test_schedule_ends_at_zero_and_constant_stays():
    cfg = {"name": "adamw", "lr": 1e-3, "schedule": "poly"}
    opt = build_optimizer(cfg, _groups())
    sched = build_schedule(cfg, opt, total_steps=3)
    for _ in range(5):
        opt.step()
        sched.step()
    assert opt.param_groups[1]["lr"] == 0.0
    opt = build_optimizer({**cfg, "schedule": "constant"}, _groups())
    sched = build_schedule({**cfg, "schedule": "constant"}, opt, total_steps=3)
    for _ in range(5):
        opt.step()
        sched.step()
    assert opt.param_groups[1]["lr"] == pytest.approx(1e-3)


@pytest.mark.parametrize(
    "cfg, match",
    [({"name": "rmsprop", "lr": 0.1}, "adam, adamw, sgd"), ({"name": "sgd", "lr": -1}, "positive")],
)
def test_bad_optimizer_config(cfg, match):
    with pytest.raises(ValueError, match=match):
        build_optimizer(cfg, _groups())


def test_bad_schedule_name():
    opt = build_optimizer({"name": "sgd", "lr": 0.1}, _groups())
    with pytest.raises(ValueError, match="poly, constant"):
        build_schedule({"schedule": "cosine"}, opt, 10)


def test_linear_warmup_then_poly():
    cfg = {"name": "sgd", "lr": 0.1, "poly_power": 1.0, "warmup_steps": 4}
    opt = build_optimizer(cfg, _groups())
    sched = build_schedule(cfg, opt, total_steps=10)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[1]["lr"])
        opt.step()
        sched.step()
    # step s: min((s + 1)/4, 1) · (1 − s/10): 0.25·1, 0.5·0.9, 0.75·0.8, 1·0.7, 0.6, 0.5
    assert lrs == pytest.approx([0.025, 0.045, 0.06, 0.07, 0.06, 0.05])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2 * 0.04)  # the group's lr_scale kept


@pytest.mark.parametrize("warmup", [-1, 2.5, True])
def test_bad_warmup_is_refused(warmup):
    opt = build_optimizer({"name": "sgd", "lr": 0.1}, _groups())
    with pytest.raises(ValueError, match="optimizer.warmup_steps must be an integer >= 0"):
        build_schedule({"warmup_steps": warmup}, opt, 10)
    with pytest.raises(ValueError, match="optimizer.warmup_steps"):  # at start-up, too
        check_optimizer_config({"name": "sgd", "lr": 0.1, "warmup_steps": warmup})
